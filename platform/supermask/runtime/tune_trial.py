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


def restored_state() -> dict | None:
    """What the trial's last Tune checkpoint holds (None: no checkpoint, or one a later one replaced)."""
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        return None
    try:
        with checkpoint.as_directory() as folder:
            saved = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    except FileNotFoundError:
        saved = None
    if saved is None:
        # Tune's state (repaired after a crash) can name a checkpoint that a later one replaced.
        log.warning("checkpoint %s is gone; this trial starts again from epoch 0", checkpoint.path)
    return saved


def replay_finished(context: TrialContext, trial_id: str) -> bool:
    """Report a trial's recorded result again if it finished before a driver crash (then learn nothing)."""
    record_path = context.record_path(trial_id)
    if not record_path.exists():
        return False
    record = json.loads(record_path.read_text())
    log_event(
        context.events_path,
        "trial_started",
        trial=trial_id,
        from_epoch=record["metrics"]["epoch"],
        replayed=True,
    )
    ray.tune.report(record["metrics"])
    return True


def report_epoch(
    context: TrialContext, trial_id: str, config: dict, metrics: dict, state: dict, last: bool
) -> None:
    """Report an epoch's metrics with a checkpoint of `state`; the last one is recorded first."""
    if last:
        record = {"trial": trial_id, "config": config, "metrics": metrics}
        atomic_write(context.record_path(trial_id), json.dumps(record).encode())
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(state, Path(folder) / CHECKPOINT_FILE)
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder))


def _restore(stacks: list) -> int:
    """Load the trial's last Tune checkpoint into `searches`; returns the epoch it was taken at (0: none)."""
    saved = restored_state()
    if saved is None:
        return 0
    for (_, search), state in zip(stacks, saved["searches"], strict=True):
        search.load_state_dict(state)
    return int(saved["epoch"])


def sweep_trial(config: dict, context: TrialContext) -> None:
    """The Tune function trainable: learn the trial's tasks in lockstep, reporting every epoch."""
    sweep = context.sweep
    trial_id = ray.tune.get_context().get_trial_id()
    config = {k: plain(v) for k, v in config.items()}
    if replay_finished(context, trial_id):
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
        state = {"epoch": epoch, "searches": [s.state_dict() for _, s in stacks]}
        report_epoch(context, trial_id, config, metrics, state, last=epoch == planned)
    log_event(context.events_path, "trial_finished", trial=trial_id, epochs=epoch)
