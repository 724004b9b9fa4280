"""Translation tasks on Ray Train: one task per worker (task_parallel), or all workers on each task (data_parallel).

The store (OUT/store, one record file per task, kind "translation") is the record of finished
tasks: a rerun after a crash (or Ray Train restarting its worker group) skips them, and an
unfinished task continues from its checkpoint, OUT/checkpoints/<task>.pt, bit for bit. Stored
records and checkpoints made with other settings stop the job before it trains anything, unless
--relearn. Workers log every measurement to OUT/events.jsonl and draw sample grids into
OUT/samples/<task>/step-NNNNNNN.png; the driver follows the events with a progress bar.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import ray.train
from ray.train.torch import TorchTrainer
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
from tqdm.auto import tqdm

from supermask.recipes.recipe import stale_tasks
from supermask.recipes.translation import TranslationRecipe
from supermask.runtime import train_entry
from supermask.runtime.events import log_event, read_events
from supermask.runtime.job import JobFailed, check_checkpoints
from supermask.runtime.placement import check_cluster, num_workers, worker_resources
from supermask.runtime.translation_store import TranslationStore

log = logging.getLogger(__name__)


class TranslationJobFailed(JobFailed):
    """Training could not finish; every stored task is kept, and a rerun resumes."""


@dataclass
class TranslationJobResult:
    """What a translation run produced: each task's record metadata, and where the time went."""

    tasks: list[dict] = field(default_factory=list)  # record metadata (metrics included), in task order
    skipped: list[str] = field(default_factory=list)  # already stored when the command started
    workers: int = 0
    strategy: str = ""
    seconds: float = 0.0
    learn_seconds: float = 0.0
    record_bytes: dict[str, int] = field(default_factory=dict)


class _EventProgress:
    """A progress bar over every task's steps, following the workers' events."""

    def __init__(self, events: Path, total_steps: int, enabled: bool) -> None:
        self.events = events
        self.bar = tqdm(total=total_steps, desc="training translation", unit="step", disable=not enabled)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._begun = time.time()

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self._update()

    def _update(self) -> None:
        steps: dict[str, int] = {}
        last = None
        for e in read_events(self.events):
            if e["time"] < self._begun or e["event"] not in ("translation_progress", "translation_eval"):
                continue
            steps[e["task"]] = max(steps.get(e["task"], 0), int(e["step"]))
            if e["event"] == "translation_eval":
                last = e
        self.bar.update(sum(steps.values()) - self.bar.n)
        if last is not None and last.get("hausdorff_score") is not None:
            self.bar.set_postfix_str(
                f"{last['task']} step {last['step']}: Hausdorff score {last['hausdorff_score']:.3f}"
            )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()


def _check_provenance(
    recipe: TranslationRecipe, out_dir: Path, store: TranslationStore, ids: list[str], relearn: bool
) -> None:
    stored = {
        tid: d.get("provenance") or {}
        for tid, d in store.describe(sorted(set(ids) - set(store.missing(ids)))).items()
    }
    for tid in stale_tasks(
        recipe, stored, f"the store at {store.root}", relearn, what="translation record(s)"
    ):  # type: ignore[arg-type]
        log.warning("deleting %s: it was trained with other settings (--relearn)", tid)
        store.delete(tid)
    check_checkpoints(recipe, out_dir / "checkpoints", relearn)


def run_translation_job(
    recipe: TranslationRecipe, out_dir: Path, progress: bool = True, relearn: bool = False
) -> TranslationJobResult:
    """Train every task of the recipe's stream that the store lacks, with Ray Train; read them all back."""
    check_cluster(recipe.run)
    started = time.perf_counter()
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with TranslationStore.open(out_dir / "store") as store:
        return _train_and_read(recipe, out_dir, store, progress, relearn, started)


def _train_and_read(
    recipe: TranslationRecipe,
    out_dir: Path,
    store: TranslationStore,
    progress: bool,
    relearn: bool,
    started: float,
) -> TranslationJobResult:
    ids = recipe.task_ids()
    _check_provenance(recipe, out_dir, store, ids, relearn)
    missing = set(store.missing(ids))
    todo = [t for t, tid in enumerate(ids) if tid in missing]
    result = TranslationJobResult(
        skipped=[tid for tid in ids if tid not in missing], strategy=recipe.run.strategy
    )
    if result.skipped:
        log.info(
            "%d of %d translation tasks are already stored; training the other %d",
            len(result.skipped),
            len(ids),
            len(todo),
        )
    if todo:
        parallel = recipe.run.strategy == "task_parallel"
        workers = num_workers(recipe.run, len(todo), parallel)
        result.workers = workers
        events = out_dir / "events.jsonl"
        storage = Path(recipe.run.storage_path) if recipe.run.storage_path else out_dir / "train"
        storage.mkdir(parents=True, exist_ok=True)
        trainer_cls, loop = (
            (DataParallelTrainer, train_entry.translation_task_parallel)
            if parallel
            else (TorchTrainer, train_entry.translation_data_parallel)
        )
        trainer = trainer_cls(
            loop,
            train_loop_config={
                "recipe": ray.put(recipe),
                "tasks": todo,
                "out_dir": str(out_dir),
                "events": str(events),
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers,
                use_gpu=recipe.run.use_gpu,
                resources_per_worker=worker_resources(recipe.run),
            ),
            run_config=ray.train.RunConfig(
                name=f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(storage.resolve()),
                failure_config=ray.train.FailureConfig(max_failures=recipe.run.max_failures),
            ),
        )
        log.info(
            "Ray Train: %s over %d worker(s), %d translation task(s) of %d steps",
            recipe.run.strategy,
            workers,
            len(todo),
            recipe.settings.steps,
        )
        log_event(events, "train_started", workers=workers, strategy=recipe.run.strategy, tasks=len(todo))
        learn_started = time.perf_counter()
        try:
            with _EventProgress(events, len(todo) * recipe.settings.steps, progress):
                trainer.fit()
        except ray.train.TrainingFailedError as e:
            left = store.missing(ids)
            raise TranslationJobFailed(
                f"translation training failed after {recipe.run.max_failures} restart(s) with {len(left)} of "
                f"{len(ids)} tasks unfinished ({e}); the {len(ids) - len(left)} stored tasks are kept: run the "
                "same command again to resume"
            ) from e
        result.learn_seconds = time.perf_counter() - learn_started
    for tid in ids:  # read back whole, each checked against its checksum
        record = store.get(tid)
        result.tasks.append({**record.meta(), "array_bytes": record.nbytes})
        result.record_bytes[tid] = store.describe([tid])[tid]["stored_bytes"]
    result.seconds = time.perf_counter() - started
    return result
