"""The functions Ray Train runs on its workers, in a module that imports nothing heavy.

Ray Train's controller process unpickles the training function and its config; were they the
worker module itself and a learner, the controller would import torch and the whole package first
(seconds of start-up on a small machine). So the functions here import the worker loop only when a
worker runs them, and the learner travels as an object reference.
"""

from __future__ import annotations


def task_parallel(config: dict) -> None:
    """A task-parallel worker: see supermask.runtime.train_workers."""
    from supermask.runtime.train_workers import task_parallel_worker

    task_parallel_worker(config)


def data_parallel(config: dict) -> None:
    """A data-parallel worker: see supermask.runtime.train_workers."""
    from supermask.runtime.train_workers import data_parallel_worker

    data_parallel_worker(config)
