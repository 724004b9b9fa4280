"""One sweep trial on Ray Tune: its K tasks searched in lockstep, one report and checkpoint per epoch.

Each reported epoch advances every task's `MaskSearch` by one epoch of steps, evaluates the masks as
they stand on the validation split, and reports `val_accuracy`, `density`, the per-layer density and
the sweep's `objective` with a checkpoint of all K searches, so ASHA can stop a trial between epochs
and a restored trial continues where its checkpoint left off. A trial that finished is recorded in
OUT/trials/<trial id>.json before its last report: should Tune start it again after a driver crash,
it reports that record and learns nothing.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray.tune
import torch

from supermask.core.packing import TaskMask, pack_masks
from supermask.core.search import MaskSearch
from supermask.learn import evaluate_task, new_search
from supermask.runtime.events import log_event
from supermask.spec import Spec
from supermask.sweep import Sweep, plain

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


def current_mask(search: MaskSearch) -> TaskMask:
    """The mask the search would return if it ended now; the search itself is left untouched."""
    method = copy.deepcopy(search.method)  # finalize (STR's calibration) must not move the live thresholds
    method.finalize()
    hard = method.hard_masks()
    return TaskMask(
        task_id=search.task_id,
        packed=pack_masks(hard),
        layer_names=list(search.base.masked_names),
        layer_shapes=[tuple(s) for s in search.base.layer_shapes],
        layer_density=[float(m.mean()) for m in hard],
        base_fingerprint=search.base.fingerprint,
        bn_stats={k: v.detach().cpu().numpy().astype(np.float32) for k, v in search.bn_state.items()},
    )


def planned_epochs(searches: list[MaskSearch]) -> int:
    """Reported epochs a trial makes: enough for its longest search."""
    return max(math.ceil(s.steps / s.steps_per_epoch) for s in searches)


def advance_one_epoch(searches: list[MaskSearch], epoch: int) -> None:
    """Step every search to the end of epoch `epoch` (1-based) or of its budget, whichever is first."""
    for search in searches:
        while search.step < min(search.steps, epoch * search.steps_per_epoch):
            search.run_step()


def epoch_metrics(
    sweep: Sweep, spec: Spec, searches: list[MaskSearch], epoch: int, planned: int, device: str
) -> dict:
    """What a trial reports after an epoch: validation accuracy, density (global and per layer), objective."""
    masks = [current_mask(s) for s in searches]
    accs = [evaluate_task(spec, t, m, device, split="val") for t, m in enumerate(masks)]
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


def _write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _restore(searches: list[MaskSearch]) -> int:
    """Load the trial's last Tune checkpoint into `searches`; returns the epoch it was taken at (0: none)."""
    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        return 0
    try:
        with checkpoint.as_directory() as folder:
            saved = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        # Tune's state (repaired after a crash) can name a checkpoint that a later one replaced.
        log.warning("checkpoint %s is gone; this trial starts again from epoch 0", checkpoint.path)
        return 0
    for search, state in zip(searches, saved["searches"], strict=True):
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
    resources = sweep.spec.resources_per_trial
    torch.set_num_threads(max(1, int(resources.cpu)))
    device = "cuda" if resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    spec = sweep.trial_spec(config)
    searches = [new_search(spec, t, device) for t in range(spec.stream.num_tasks)]
    epoch = _restore(searches)
    planned = planned_epochs(searches)
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
        advance_one_epoch(searches, epoch)
        metrics = epoch_metrics(sweep, spec, searches, epoch, planned, device)
        log_event(
            context.events_path,
            "epoch_done",
            trial=trial_id,
            epoch=epoch,
            val_accuracy=metrics["val_accuracy"],
            density=metrics["density"],
        )
        if epoch == planned:
            _write_json_atomic(record_path, {"trial": trial_id, "config": config, "metrics": metrics})
        with tempfile.TemporaryDirectory() as folder:
            state = {"epoch": epoch, "searches": [s.state_dict() for s in searches]}
            torch.save(state, Path(folder) / CHECKPOINT_FILE)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(folder))
    log_event(context.events_path, "trial_finished", trial=trial_id, epochs=epoch)
