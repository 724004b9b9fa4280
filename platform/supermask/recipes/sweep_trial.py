"""The Ray-free part of a sweep trial of stacked searches: its tasks as stacks, one epoch at a time, scored on validation.

The runtime (runtime/tune_trial.py) wraps a `StackedTrial` with Ray Tune's reports and checkpoints.
"""

from __future__ import annotations

import math

import numpy as np

from supermask.config.sweep import Sweep
from supermask.core.probes.search_probe import SearchProbe, summary
from supermask.core.search.stacked_search import StackedSearch
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


def trial_probes(bench: Workbench, stacks: list[tuple[list[int], StackedSearch]]) -> list[SearchProbe]:
    """One probe per stack (none when the recipe's probes are off); each probes its stack's state now."""
    if not bench.recipe.probes.enabled:
        return []
    probes = [SearchProbe(search, bench.recipe.probes) for _, search in stacks]
    for probe in probes:
        probe.start()
    return probes


def advance_one_epoch(
    stacks: list[tuple[list[int], StackedSearch]], epoch: int, probes: list[SearchProbe] = ()
) -> None:
    """Step every stack to the end of epoch `epoch` (1-based) or of its budget, whichever is first."""
    for i, (_, search) in enumerate(stacks):
        hooks = [probes[i]] if probes else []
        while search.step < min(search.steps, epoch * search.steps_per_epoch):
            search.run_step(hooks)


def epoch_metrics(
    sweep: Sweep,
    bench: Workbench,
    stacks: list[tuple[list[int], StackedSearch]],
    epoch: int,
    planned: int,
    probes: list[SearchProbe] = (),
) -> dict:
    """What a trial reports after an epoch: validation accuracy, density (global and per layer), objective,
    and the mean over its tasks of their latest probes (`probe_norm`, `probe_saturation_cosine`, ...)."""
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
        **{f"probe_{k}": v for k, v in summary([r for p in probes for r in p.last]).items()},
    }


class StackedTrial:
    """A sweep trial of stacked searches (TrialWork): one reported epoch advances every stack one epoch of steps."""

    headline = ("val_accuracy", "density")

    def __init__(self, bench: Workbench, sweep: Sweep) -> None:
        self.bench, self.sweep = bench, sweep
        self.stacks = trial_stacks(bench)
        self.planned = planned_epochs(self.stacks)
        self._probes: list[SearchProbe] | None = None

    def _started_probes(self) -> list[SearchProbe]:
        if self._probes is None:  # started at the first epoch, after a restore: they probe the restored state
            self._probes = trial_probes(self.bench, self.stacks)
        return self._probes

    def advance(self, epoch: int) -> None:
        advance_one_epoch(self.stacks, epoch, self._started_probes())

    def metrics(self, epoch: int) -> dict:
        return epoch_metrics(self.sweep, self.bench, self.stacks, epoch, self.planned, self._started_probes())

    def state_dict(self) -> dict:
        return {"searches": [s.state_dict() for _, s in self.stacks]}

    def load_state_dict(self, state: dict) -> None:
        for (_, search), saved in zip(self.stacks, state["searches"], strict=True):
            search.load_state_dict(saved)
