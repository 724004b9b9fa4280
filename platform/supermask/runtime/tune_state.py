"""Keeping Ray Tune's experiment state restorable across a `kill -9` of the driver.

Two gaps in Tune's own bookkeeping, both met by the tests' kill -9:

- Tune rewrites its state files (experiment_state-*.json, the searcher's and callbacks' state) in
  place, so a driver killed mid-write leaves a torn file that `Tuner.restore` cannot read, and the
  sweep would start over. `StateBackup` copies every state file that reads back whole into a side
  folder (write, fsync, rename); `repair_experiment` puts those copies back over torn files.
- With `num_to_keep`, Tune deletes a trial's previous checkpoint as soon as it registers a new one
  but saves its state a moment later, so a crash in between leaves the state naming a deleted
  checkpoint, and the trial fails on restore. `repair_checkpoints` puts the trial's newest whole
  checkpoint in its place (a checkpoint records its own epoch), or an empty one (start again).
"""

from __future__ import annotations

import io
import json
import logging
import pickletools
import shutil
import time
import zipfile
from pathlib import Path

from ray import tune
from ray.tune.experiment import Trial

from supermask.core.files import atomic_write

log = logging.getLogger(__name__)

STATE_PATTERNS = (
    "experiment_state-*.json",
    "basic-variant-state-*.json",
    "searcher-state-*.pkl",
    "callback-states-*.pkl",
)
BACKUP_EVERY_S = 0.5


def state_files(folder: Path) -> list[Path]:
    """Tune's state files in an experiment folder."""
    return sorted(p for pattern in STATE_PATTERNS for p in folder.glob(pattern))


def readable(data: bytes) -> bool:
    """Whether a state file's bytes are whole: JSON that parses, or a pickle stream that runs to its STOP.

    Tune writes both kinds (some pickles named .json). A pickle is only walked opcode by opcode with
    `pickletools`, never loaded: nothing in it is executed.
    """
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        ops = list(pickletools.genops(io.BytesIO(data)))
    except Exception:  # noqa: BLE001 - truncated or not a pickle at all
        return False
    return bool(ops) and ops[-1][0].name == "STOP" and ops[-1][2] + 1 == len(data)


class StateBackup(tune.Callback):
    """A Tune callback that keeps the last whole copy of every experiment state file in `backup`."""

    def __init__(self, experiment: str, backup: str) -> None:
        self.experiment, self.backup = experiment, backup
        self._seen: dict[str, tuple[float, int]] = {}
        self._last = 0.0

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self._last >= BACKUP_EVERY_S:
            self._last = time.monotonic()
            self.sync()

    def on_experiment_end(self, trials: list, **info) -> None:
        self.sync()

    def sync(self) -> None:
        """Copy every state file that changed since the last look and reads back whole."""
        backup = Path(self.backup)
        backup.mkdir(parents=True, exist_ok=True)
        for path in state_files(Path(self.experiment)):
            try:
                stat = path.stat()
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            key = (stat.st_mtime, stat.st_size)
            if self._seen.get(path.name) == key or not readable(data):
                continue  # unchanged, or caught mid-write: the next look gets it
            atomic_write(backup / path.name, data)
            self._seen[path.name] = key


def repair_experiment(experiment: Path, backup: Path) -> list[str]:
    """Replace torn state files with their last whole copy (or drop them if none); returns their names."""
    repaired = []
    for path in state_files(experiment):
        if readable(path.read_bytes()):
            continue
        copy = backup / path.name
        if copy.exists():
            shutil.copyfile(copy, path)
            log.warning("%s was torn by a crash; restored its last whole copy", path.name)
        else:
            path.unlink()
            log.warning("%s was torn by a crash and has no copy; resuming from an earlier state", path.name)
        repaired.append(path.name)
    return repaired


def whole_checkpoint(folder: Path, name: str) -> bool:
    """Whether a trial checkpoint folder holds a complete `torch.save` file (a zip whose CRCs check)."""
    path = folder / name
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def repair_checkpoints(experiment: Path, checkpoint_file: str) -> list[str]:
    """Make the checkpoint Tune's saved state names for every unfinished trial exist; returns their ids."""
    fixed = []
    for trial in tune.ExperimentAnalysis(str(experiment)).trials:
        checkpoint = trial.checkpoint
        if trial.status == Trial.TERMINATED or checkpoint is None or Path(checkpoint.path).exists():
            continue
        missing = Path(checkpoint.path)
        newer = sorted(p for p in missing.parent.glob("checkpoint_*") if whole_checkpoint(p, checkpoint_file))
        if newer:
            shutil.copytree(newer[-1], missing)
            log.warning(
                "trial %s: its checkpoint %s was replaced by %s; resuming from that",
                trial.trial_id,
                missing.name,
                newer[-1].name,
            )
        else:
            missing.mkdir(parents=True)
            log.warning("trial %s: no whole checkpoint left; it starts again", trial.trial_id)
        fixed.append(trial.trial_id)
    return fixed
