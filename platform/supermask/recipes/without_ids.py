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

from supermask.core.inference.mask_bank import PackedMasks
from supermask.core.inference.nns import NNsResult, learn_without_ids
from supermask.core.inference.one_shot import mean_masks
from supermask.core.records.packing import TaskMask
from supermask.recipes.recipe import Workbench
from supermask.recipes.results import InferenceOutcome
from supermask.recipes.task_inference import evaluate_inference


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


def unlabeled_batches(
    bench: Workbench, batch_tasks: list[int]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The stream's training data as (x, y) batches, task after task, appending each batch's true task to `batch_tasks`."""
    search = bench.recipe.search
    size = search.batch_size
    for t in range(bench.recipe.stream.num_tasks):
        task = bench.task(t)
        n = len(task.train_x)
        per_epoch = math.ceil(n / size)
        steps = search.iterations or (search.epochs or 1) * per_epoch
        for step in range(steps):
            epoch, position = divmod(step, per_epoch)
            generator = torch.Generator().manual_seed(search.seed * 1_000_003 + t * 1_009 + epoch)
            order = torch.randperm(n, generator=generator)
            idx = order[position * size : (position + 1) * size]
            batch_tasks.append(t)
            yield task.train_x[idx], task.train_y[idx]


def learn_and_evaluate_nns(bench: Workbench, on_task: Callable[[int], None] | None = None) -> NNsRun:
    """Learn the recipe's stream without task ids, then evaluate every task with inferred masks."""
    started = time.perf_counter()
    recipe, base, device = bench.recipe, bench.base, bench.device
    batch_tasks: list[int] = []
    learned = learn_without_ids(
        base,
        unlabeled_batches(bench, batch_tasks),
        recipe.mask,
        recipe.search,
        recipe.nns,
        recipe.num_classes,
        inference=recipe.inference,
        id_prefix=f"{recipe.stream.name}-nns",
        device=device,
    )
    for mask in learned.masks:
        mask.provenance = dict(recipe.provenance)
    run = NNsRun(learned.masks, learned, batch_tasks)
    bank = PackedMasks(learned.masks)
    mean, _ = mean_masks(bank, base.fingerprint, device=device)
    for t in range(recipe.stream.num_tasks):
        task = bench.task(t)
        run.outcomes.append(
            evaluate_inference(
                base,
                bank,
                task.test_x.to(device),
                task.test_y.to(device),
                task.task_id,
                recipe.inference,
                num_classes=recipe.num_classes,
                batch_size=recipe.inference.batch_size,
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
