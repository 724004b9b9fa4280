"""The Ray-free part of a sweep trial: its tasks searched as stacks, one epoch at a time, scored on validation.

The runtime (runtime/tune_trial.py) wraps this with Ray Tune's reports and checkpoints.
"""

from __future__ import annotations

import math

import numpy as np

from supermask.config.sweep import Sweep
from supermask.core.search import StackedSearch
from supermask.recipes.learn import plan_blocks
from supermask.recipes.recipe import Workbench


def trial_stacks(bench: Workbench) -> list[tuple[list[int], StackedSearch]]:
    """The trial's tasks as stacks of equal training size: (task indices, search) pairs."""
    n = bench.recipe.stream.num_tasks
    blocks = plan_blocks([bench.stream.train_examples(t) for t in range(n)], workers=1, most=n)
    return [(ts, bench.new_search(ts)) for ts in blocks]


def planned_epochs(stacks: list[tuple[list[int], StackedSearch]]) -> int:
    """Reported epochs a trial makes: enough for its longest search."""
    return max(math.ceil(s.steps / s.steps_per_epoch) for _, s in stacks)


def advance_one_epoch(stacks: list[tuple[list[int], StackedSearch]], epoch: int) -> None:
    """Step every stack to the end of epoch `epoch` (1-based) or of its budget, whichever is first."""
    for _, search in stacks:
        while search.step < min(search.steps, epoch * search.steps_per_epoch):
            search.run_step()


def epoch_metrics(
    sweep: Sweep, bench: Workbench, stacks: list[tuple[list[int], StackedSearch]], epoch: int, planned: int
) -> dict:
    """What a trial reports after an epoch: validation accuracy, density (global and per layer), objective."""
    indexed = sorted(
        (t, mask) for ts, search in stacks for t, mask in zip(ts, search.current_masks(), strict=True)
    )
    masks = [mask for _, mask in indexed]
    accs = [bench.evaluate(t, mask, split="val").real_classes for t, mask in indexed]
    density = float(np.mean([m.density for m in masks]))
    layers = {
        name: float(np.mean([m.layer_density[i] for m in masks]))
        for i, name in enumerate(masks[0].layer_names)
    }
    val_accuracy = float(np.mean(accs))
    train = [acc for _, s in stacks if s.curve["accuracy"] for acc in s.curve["accuracy"][-1]]
    return {
        "epoch": epoch,
        "planned_epochs": planned,
        "val_accuracy": val_accuracy,
        "val_accuracy_min": float(min(accs)),
        "task_val_accuracy": [float(a) for a in accs],
        "density": density,
        "layer_density": layers,
        "objective": sweep.objective(val_accuracy, density),
        "feasible": sweep.feasible(density),
        "train_accuracy": float(np.mean(train)) if train else None,
        "search_seconds": float(sum(s.seconds for _, s in stacks)),
    }
