"""One sweep trial on Ray Tune: its K tasks searched in lockstep, one report and checkpoint per epoch.

Each reported epoch advances every task's `MaskSearch` by one epoch of steps, evaluates the masks as
they stand on the validation split, and reports `val_accuracy`, `density`, the per-layer density and
the sweep's `objective` with a checkpoint of all K searches, so ASHA can stop a trial between epochs
and a restored trial continues where its checkpoint left off. A trial that finished is recorded in
OUT/trials/<trial id>.json before its last report: should Tune start it again after a driver crash,
it reports that record and learns nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray.tune

from supermask.config.sweep import Sweep, plain
from supermask.core.files import atomic_write
from supermask.recipes.checkpoints import load_checkpoint, save_checkpoint
from supermask.recipes.recipe import Recipe, Workbench
from supermask.recipes.sweep_trial import (
    advance_one_epoch,
    epoch_metrics,
    planned_epochs,
    trial_probes,
    trial_stacks,
)
from supermask.runtime.events import log_event
from supermask.runtime.placement import process_device

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "searches.pt"


@dataclass
class TrialContext:
    """What every trial of a sweep shares (passed with `tune.with_parameters`)."""

    sweep: Sweep
    out_dir: str  # absolute; events.jsonl and trials/ live here (shared storage on a cluster)

    @property
    def events_path(self) -> Path:
        return Path(self.out_dir) / "events.jsonl"

    def record_path(self, trial_id: str) -> Path:
        return Path(self.out_dir) / "trials" / f"{trial_id}.json"


def _restore(stacks: list) -> int:
    """Load the trial's last Tune checkpoint into `searches`; returns the epoch it was taken at (0: none)."""
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        return 0
    try:
        with checkpoint.as_directory() as folder:
            saved = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    except FileNotFoundError:
        saved = None
    if saved is None:
        # Tune's state (repaired after a crash) can name a checkpoint that a later one replaced.
        log.warning("checkpoint %s is gone; this trial starts again from epoch 0", checkpoint.path)
        return 0
    for (_, search), state in zip(stacks, saved["searches"], strict=True):
        search.load_state_dict(state)
    return int(saved["epoch"])


def sweep_trial(config: dict, context: TrialContext) -> None:
    """The Tune function trainable: learn the trial's tasks in lockstep, reporting every epoch."""
    sweep = context.sweep
    trial_id = ray.tune.get_context().get_trial_id()
    config = {k: plain(v) for k, v in config.items()}
    record_path = context.record_path(trial_id)
    if record_path.exists():  # finished before a driver crash: report the result again, learn nothing
        record = json.loads(record_path.read_text())
        log_event(
            context.events_path,
            "trial_started",
            trial=trial_id,
            from_epoch=record["metrics"]["epoch"],
            replayed=True,
        )
        ray.tune.report(record["metrics"])
        return
    recipe = Recipe.from_spec(sweep.trial_spec(config))
    bench = Workbench(recipe, process_device(recipe.run))
    stacks = trial_stacks(bench)
    epoch = _restore(stacks)
    probes = trial_probes(bench, stacks)
    planned = planned_epochs(stacks)
    log_event(
        context.events_path,
        "trial_started",
        trial=trial_id,
        from_epoch=epoch,
        planned_epochs=planned,
        config=config,
    )
    while epoch < planned:
        epoch += 1
        advance_one_epoch(stacks, epoch, probes)
        metrics = epoch_metrics(sweep, bench, stacks, epoch, planned, probes)
        log_event(
            context.events_path,
            "epoch_done",
            trial=trial_id,
            epoch=epoch,
            val_accuracy=metrics["val_accuracy"],
            density=metrics["density"],
        )
        if epoch == planned:
            record = {"trial": trial_id, "config": config, "metrics": metrics}
            atomic_write(record_path, json.dumps(record).encode())
        with tempfile.TemporaryDirectory() as folder:
            state = {"epoch": epoch, "searches": [s.state_dict() for _, s in stacks]}
            save_checkpoint(state, Path(folder) / CHECKPOINT_FILE)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder))
    log_event(context.events_path, "trial_finished", trial=trial_id, epochs=epoch)
