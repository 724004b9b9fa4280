"""The Ray-free part of a sweep trial: its tasks searched in lockstep, one epoch at a time, scored on validation.

The runtime (runtime/tune_trial.py) wraps this with Ray Tune's reports and checkpoints.
"""

from __future__ import annotations

import math

import numpy as np

from supermask.config.sweep import Sweep
from supermask.core.search import MaskSearch
from supermask.recipes.recipe import Workbench


def planned_epochs(searches: list[MaskSearch]) -> int:
    """Reported epochs a trial makes: enough for its longest search."""
    return max(math.ceil(s.steps / s.steps_per_epoch) for s in searches)


def advance_one_epoch(searches: list[MaskSearch], epoch: int) -> None:
    """Step every search to the end of epoch `epoch` (1-based) or of its budget, whichever is first."""
    for search in searches:
        while search.step < min(search.steps, epoch * search.steps_per_epoch):
            search.run_step()


def epoch_metrics(
    sweep: Sweep, bench: Workbench, searches: list[MaskSearch], epoch: int, planned: int
) -> dict:
    """What a trial reports after an epoch: validation accuracy, density (global and per layer), objective."""
    masks = [s.current_mask() for s in searches]
    accs = [bench.evaluate(t, m, split="val").real_classes for t, m in enumerate(masks)]
    density = float(np.mean([m.density for m in masks]))
    layers = {
        name: float(np.mean([m.layer_density[i] for m in masks]))
        for i, name in enumerate(masks[0].layer_names)
    }
    val_accuracy = float(np.mean(accs))
    train = [s.curve["accuracy"][-1] for s in searches if s.curve["accuracy"]]
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
        "search_seconds": float(sum(s.seconds for s in searches)),
    }
