"""A sweep on Ray Tune: build the Tuner, start it or resume it, and collect every trial.

Tune keeps its experiment under OUT/tune/<sweep name>. Run the same command again after a crash
(a `kill -9` of the driver included) and `Tuner.restore` picks it up: finished trials keep their ids
and results and are not run again, unfinished ones continue from their last epoch checkpoint, and
errored ones are retried from theirs; state files torn by the crash and checkpoints Tune deleted
too early are repaired first (tune_state.py). A different sweep spec over the same folder is refused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from supermask.config.schema import SpecError
from supermask.config.sweep import OPTIONAL_ALGORITHMS, Distribution, Sweep, upgrade_record
from supermask.recipes.results import SweepOutcome, TrialRecord
from supermask.runtime.tune_state import StateBackup, repair_checkpoints, repair_experiment
from supermask.runtime.tune_trial import CHECKPOINT_FILE, TrialContext, sweep_trial

log = logging.getLogger(__name__)

# Seconds between saves of Tune's experiment state: what a resume after `kill -9` starts from.
# Tune's own default (10 s or more) could forget trials that finished just before a crash.
EXPERIMENT_STATE_SECONDS = "2"
SPEC_FILE = "sweep_spec.json"
STATE_BACKUP = "tune_state"  # last whole copies of Tune's state files (see tune_state.py)
TRIAL_FAILURES = 1  # times Tune retries a crashed trial (from its checkpoint) before marking it errored


def tune_domain(dist: Distribution, algorithm: str):
    """A search-space dimension as Ray Tune's sampler (or grid) object."""
    if dist.kind == "grid" or (algorithm == "grid" and dist.discrete):
        return tune.grid_search(dist.points())
    if dist.kind == "choice":
        return tune.choice(list(dist.values))
    if dist.kind == "uniform":
        return tune.uniform(*dist.values)
    if dist.kind == "loguniform":
        return tune.loguniform(*dist.values)
    if dist.kind == "randint":
        return tune.randint(dist.values[0], dist.values[1] + 1)  # Tune's upper bound is exclusive
    raise ValueError(f"unknown distribution {dist.kind!r}")


def param_space(sweep: Sweep) -> dict:
    """The sweep's search space in Ray Tune's terms, keyed by spec field path."""
    return {path: tune_domain(d, sweep.spec.algorithm) for path, d in sweep.space.items()}


def search_algorithm(sweep: Sweep):
    """The searcher the sweep names: Tune's variant generator (random, grid), Optuna or HyperOpt."""
    algorithm, seed = sweep.spec.algorithm, sweep.spec.seed
    if algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=seed)
    if algorithm == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=seed)
    # Tune ignores max_concurrent_trials for a generator passed in, so the limit goes here.
    return BasicVariantGenerator(random_state=seed, max_concurrent=sweep.spec.max_concurrent or 0)


def trial_scheduler(sweep: Sweep):
    """ASHA over reported epochs, or plain first-in-first-out."""
    s = sweep.spec.scheduler
    if s.name == "asha":
        return ASHAScheduler(
            time_attr="epoch",
            max_t=sweep.max_t,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    return FIFOScheduler()


def check_same_sweep(sweep: Sweep, out_dir: Path) -> bool:
    """Record the sweep in OUT on first use; True if OUT already holds this sweep, error if another.

    Fields the code has gained since the sweep started (absent from the record) do not count as changes.
    """
    path = out_dir / SPEC_FILE
    now = json.loads(json.dumps({"fingerprint": sweep.fingerprint(), **sweep.to_dict()}, default=str))
    if not path.exists():
        path.write_text(json.dumps(now, indent=2))
        return False
    before = upgrade_record(json.loads(path.read_text()))
    changed = sorted(_changed_fields(before, now) - {"fingerprint", "base_spec_path", "sweep.out"})
    if changed:
        raise SpecError(
            f"{out_dir} holds another sweep (changed: {', '.join(changed)}); a sweep resumes only with the "
            "spec it started with: pass another --out, or delete the folder to start over"
        )
    return True


def _changed_fields(before, now, prefix: str = "") -> set[str]:
    """Dotted paths whose value in `before` differs in `now` (keys new in `now` are not changes)."""
    if isinstance(before, dict) and isinstance(now, dict):
        out = set()
        for key in before:
            out |= _changed_fields(before[key], now.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    return set() if before == now else {prefix}


def _trial_dirname(trial: Trial) -> str:
    return trial.trial_id


def _new_tuner(sweep: Sweep, trainable, storage: Path, backup: StateBackup, progress: bool) -> tune.Tuner:
    algorithm = sweep.spec.algorithm
    return tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(
            metric="objective",
            mode="max",
            search_alg=search_algorithm(sweep),
            scheduler=trial_scheduler(sweep),
            num_samples=sweep.spec.num_samples,
            max_concurrent_trials=sweep.spec.max_concurrent if algorithm in OPTIONAL_ALGORITHMS else None,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=True,  # a trial's process keeps the loaded stream and the built base for the next
        ),
        run_config=tune.RunConfig(
            name=sweep.name,
            storage_path=str(storage),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=TRIAL_FAILURES),
            verbose=1 if progress else 0,
            callbacks=[backup],
        ),
    )


def run_sweep(sweep: Sweep, out_dir: Path, progress: bool = True) -> SweepOutcome:
    """Run (or resume) the sweep on the connected Ray; Tune's experiment lives in OUT/tune/<name>."""
    started = time.perf_counter()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = out_dir / "tune"
    experiment = storage / sweep.name
    check_same_sweep(sweep, out_dir)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_STATE_SECONDS)
    # num_to_keep=1 makes Tune snapshot its state at every trial checkpoint, which it warns about.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    resources = sweep.spec.resources_per_trial
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, context=TrialContext(sweep, str(out_dir))),
        {"cpu": resources.cpu, "gpu": resources.gpu},
    )
    backup = out_dir / STATE_BACKUP
    if experiment.is_dir():
        repair_experiment(experiment, backup)
    resumed = tune.Tuner.can_restore(str(experiment))
    if resumed:
        repair_checkpoints(experiment, CHECKPOINT_FILE)
    if resumed:
        log.info("resuming the sweep in %s: finished trials are kept, unfinished ones continue", experiment)
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
    else:
        tuner = _new_tuner(sweep, trainable, storage, StateBackup(str(experiment), str(backup)), progress)
    tuner.fit()
    outcome = SweepOutcome(
        collect_trials(experiment), str(experiment), sweep.num_trials, resumed, time.perf_counter() - started
    )
    freed = prune_checkpoints(outcome)
    if freed:
        log.info("deleted %.1f MB of checkpoints of finished trials", freed / 1e6)
    return outcome


def collect_trials(experiment: Path) -> list[TrialRecord]:
    """Every trial of a Tune experiment folder: config, last metrics, status and per-epoch history."""
    analysis = tune.ExperimentAnalysis(str(experiment))
    frames = analysis.trial_dataframes
    records = []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        metrics = {k: v for k, v in (trial.last_result or {}).items() if k != "config"}
        epochs = int(metrics.get("epoch") or 0)
        planned = metrics.get("planned_epochs")
        error = None
        if trial.status == Trial.ERROR:
            status = "error"
            error = str(trial.get_error() or "trial failed")
        elif trial.status != Trial.TERMINATED:
            status = "unfinished"
        elif planned is not None and epochs < planned:
            status = "stopped_early"
        else:
            status = "completed"
        records.append(
            TrialRecord(
                trial_id=trial.trial_id,
                config=dict(trial.config),
                status=status,
                epochs=epochs,
                planned_epochs=planned,
                metrics=metrics,
                history=_history(frames.get(trial.trial_id)),
                error=error,
                path=trial.path,
            )
        )
    return records


def prune_checkpoints(outcome: SweepOutcome) -> int:
    """Delete the epoch checkpoints of a finished sweep's ended trials (they only serve resumes); returns bytes."""
    if not outcome.finished:
        return 0
    freed = 0
    for trial in outcome.trials:
        if trial.status not in ("completed", "stopped_early") or not trial.path:
            continue  # an errored trial is retried from its checkpoint on the next run
        for folder in Path(trial.path).glob("checkpoint_*"):
            freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    return freed


def _history(frame) -> list[dict]:
    if frame is None or "epoch" not in getattr(frame, "columns", ()):
        return []
    columns = [
        c for c in ("epoch", "val_accuracy", "val_hausdorff", "density", "objective") if c in frame.columns
    ]
    rows = frame[columns].dropna(subset=["epoch"]).drop_duplicates(subset="epoch", keep="last")
    return [
        {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in rows.to_dict("records")
    ]
