"""Scenario NNs for a spec (no Ray here): the stream without task ids, learned and then evaluated.

The learner sees the stream's tasks one after another as plain (x, y) batches: `search.epochs` (or
`search.iterations` batches) of each task, shuffled within the task, with no marker where one task
ends. The true task of every batch is kept aside, only to report how the allocations line up.
Evaluation: each task's test batches infer their mask among the allocated ones (the spec's
`inference` settings) and are classified with it; labels are shared, so a sample is right when its
class is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from supermask.core.inference import mean_masks
from supermask.core.mask_bank import PackedMasks
from supermask.core.nns import NNsConfig, NNsResult, learn_without_ids
from supermask.core.packing import TaskMask
from supermask.data import Stream
from supermask.learn import make_base, make_search_config, make_stream
from supermask.spec import Spec
from supermask.task_inference import InferenceOutcome, evaluate_inference, make_inference_config


@dataclass
class NNsRun:
    """What an NNs run learned and how it scored."""

    masks: list[TaskMask]
    learned: NNsResult
    batch_tasks: list[int]  # the true task of every training batch (never shown to the learner)
    outcomes: list[InferenceOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        samples = sum(o.samples for o in self.outcomes)
        return sum(o.correct for o in self.outcomes) / samples if samples else None

    def summary(self) -> dict:
        """Allocated masks against true tasks, and every check with the task that was really there."""
        return {
            "num_masks": len(self.masks),
            "num_tasks": len(set(self.batch_tasks)),
            "batches": self.learned.batches,
            "learn_seconds": self.learned.seconds,
            "checks": [
                {
                    "batch": c.batch,
                    "true_task": self.batch_tasks[c.batch],
                    "candidates": c.candidates,
                    "confidence": c.confidence,
                    "mask": c.chosen,
                    "allocated": c.allocated,
                }
                for c in self.learned.checks
            ],
        }


def make_nns_config(spec: Spec) -> NNsConfig:
    """The NNs settings of a spec."""
    n = spec.nns
    return NNsConfig(
        check_every=n.check_every,
        epsilon=n.epsilon,
        min_candidates=n.min_candidates,
        max_masks=n.max_masks,
        objective=spec.inference.objective,
        chunk=spec.inference.chunk,
    )


def unlabeled_batches(
    spec: Spec, stream: Stream, batch_tasks: list[int]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The stream's training data as (x, y) batches, task after task, appending each batch's true task to `batch_tasks`."""
    size = spec.search.batch_size
    for t in range(stream.num_tasks):
        task = stream.task(t)
        n = len(task.train_x)
        per_epoch = math.ceil(n / size)
        steps = spec.search.iterations or (spec.search.epochs or 1) * per_epoch
        for step in range(steps):
            epoch, position = divmod(step, per_epoch)
            generator = torch.Generator().manual_seed(spec.search.seed * 1_000_003 + t * 1_009 + epoch)
            order = torch.randperm(n, generator=generator)
            idx = order[position * size : (position + 1) * size]
            batch_tasks.append(t)
            yield task.train_x[idx], task.train_y[idx]


def learn_and_evaluate_nns(
    spec: Spec, device: str = "cpu", on_task: Callable[[int], None] | None = None
) -> NNsRun:
    """Learn the spec's stream without task ids, then evaluate every task with inferred masks."""
    started = time.perf_counter()
    stream = make_stream(spec)
    base = make_base(spec, stream, device)
    batch_tasks: list[int] = []
    learned = learn_without_ids(
        base,
        unlabeled_batches(spec, stream, batch_tasks),
        make_search_config(spec),
        make_nns_config(spec),
        stream.num_classes,
        id_prefix=f"{stream.name}-nns",
        device=device,
    )
    run = NNsRun(learned.masks, learned, batch_tasks)
    bank = PackedMasks(learned.masks)
    mean, _ = mean_masks(bank, base.fingerprint, device=device)
    config = make_inference_config(spec)
    for t in range(stream.num_tasks):
        task = stream.task(t)
        run.outcomes.append(
            evaluate_inference(
                base,
                bank,
                task.test_x.to(device),
                task.test_y.to(device),
                task.task_id,
                config,
                num_classes=stream.num_classes,
                batch_size=spec.inference.batch_size,
                unshared=False,
                index=t,
                mean=mean,
                mask_id=None,
            )
        )
        if on_task is not None:
            on_task(t)
    run.seconds = time.perf_counter() - started
    return run
