"""One sweep trial on Ray Tune, for every learner: its K tasks advanced in lockstep, one report and
checkpoint per epoch.

The learner's trial (`Learner.trial`) says what an epoch is (an epoch of steps of every stacked
search; for translation, training to the next measurement) and what it reports (validation accuracy,
density and the sweep's objective; the validation Hausdorff score); each report carries a checkpoint
of the trial, so ASHA can stop a trial between epochs and a restored trial continues where its
checkpoint left off. A trial that finished is recorded in
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
from supermask.recipes.learners import learner_for
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


def sweep_trial(config: dict, context: TrialContext) -> None:
    """The Tune function trainable of every sweep: the learner's trial, one report and checkpoint per epoch."""
    sweep = context.sweep
    trial_id = ray.tune.get_context().get_trial_id()
    config = {k: plain(v) for k, v in config.items()}
    if replay_finished(context, trial_id):  # finished before a driver crash: learn nothing
        return
    learner = learner_for(sweep.trial_spec(config))
    trial = learner.trial(learner.bench(process_device(learner.run)), sweep)
    epoch = 0
    saved = restored_state()
    if saved is not None:
        trial.load_state_dict(saved)
        epoch = int(saved["epoch"])
    log_event(
        context.events_path,
        "trial_started",
        trial=trial_id,
        from_epoch=epoch,
        planned_epochs=trial.planned,
        config=config,
    )
    while epoch < trial.planned:
        epoch += 1
        trial.advance(epoch)
        metrics = trial.metrics(epoch)
        headline = {k: metrics[k] for k in trial.headline}
        log_event(context.events_path, "epoch_done", trial=trial_id, epoch=epoch, **headline)
        state = {"epoch": epoch, **trial.state_dict()}
        report_epoch(context, trial_id, config, metrics, state, last=epoch == trial.planned)
    log_event(context.events_path, "trial_finished", trial=trial_id, epochs=epoch)
