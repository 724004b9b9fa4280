"""`supermask run` with `learn: weights` and `weights.mode: fine_tune`: one network through the stream.

Fine-tuning is sequential by nature (task t starts from the network task t-1 ended with), so one Ray
actor holds the workbench and learns task after task as the driver asks; after each task it puts
the network as it then stands into the store (kind "weights") with its row of the accuracy matrix.
A rerun resumes after the last task stored in order, and a record stored after a gap (another
chain of tasks) is learned again. Stored records of other settings stop the run unless --relearn.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import ray
from tqdm.auto import tqdm

from supermask.recipes.checkpoints import load_checkpoint
from supermask.recipes.fine_tune import fine_tune_task, forgetting_summary
from supermask.recipes.learn import CheckpointPolicy, block_name
from supermask.recipes.recipe import Recipe, Workbench, stale_tasks
from supermask.recipes.results import JobResult, TaskOutcome, fill_from_record
from supermask.runtime.events import log_event
from supermask.runtime.inference_job import new_result
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.placement import actor_options, check_cluster, process_device

log = logging.getLogger(__name__)


@ray.remote
class FineTuner:
    """Holds the workbench and the network the last task ended with; learns one task per call."""

    def __init__(self, recipe: Recipe, store: MaskStore, out_dir: str) -> None:
        self.bench = Workbench(recipe, process_device(recipe.run))
        self.store, self.out_dir = store, Path(out_dir)
        self.previous = None

    def learn(self, t: int) -> dict:
        """Learn task t from the network of task t-1 (read from the store unless held), store it; its summary."""
        bench, recipe = self.bench, self.bench.recipe
        if t > 0 and (self.previous is None or self.previous.metrics.get("task_index") != t - 1):
            (self.previous,) = self.store.get_weights_many(
                [bench.stream.task_id(t - 1)], fingerprint=recipe.base_fingerprint
            )
        task_id = bench.stream.task_id(t)
        checkpoint = None
        if recipe.run.checkpoint_seconds != 0:
            checkpoint = self.out_dir / "checkpoints" / f"{block_name([task_id])}.pt"
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
        events = self.out_dir / "events.jsonl"
        log_event(events, "task_started", task=task_id, from_task=None if t == 0 else t - 1)
        record, outcome = fine_tune_task(
            bench,
            t,
            self.previous if t > 0 else None,
            checkpoint=checkpoint,
            policy=CheckpointPolicy(every=recipe.run.checkpoint_seconds),
        )
        self.store.put(record, overwrite=True)  # a record of this chain replaces one of an older chain
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        log_event(
            events,
            "task_stored",
            task=task_id,
            train_accuracy=record.metrics["train_accuracy"],
            test_accuracy=record.metrics["test_accuracy"],
            seconds=record.metrics["seconds"],
        )
        self.previous = record
        return {
            "task": task_id,
            "accuracy_on_tasks": record.metrics["accuracy_on_tasks"],
            "search_seconds": outcome.search_seconds,
            "evaluate_seconds": outcome.evaluate_seconds,
        }


def _first_to_learn(recipe: Recipe, store: MaskStore, ids: list[str], relearn: bool) -> int:
    """The first task of the stream to learn: after the stored records that form an unbroken chain from
    task 0 with this run's settings (records of other settings: ProvenanceError, or deleted with relearn)."""
    missing = set(store.missing(ids))
    described = store.describe([t for t in ids if t not in missing])
    stored = {tid: d.get("provenance") or {} for tid, d in described.items()}
    for tid in stale_tasks(recipe, stored, f"the store at {store.root}", relearn, what="record(s)"):
        log.warning("deleting %s: it was trained with other settings (--relearn)", tid)
        store.delete(tid)
        missing.add(tid)
    folder = Path(store.root).parent / "checkpoints"
    checkpoints = {
        p.stem: (load_checkpoint(p) or {}).get("provenance") or {} for p in sorted(folder.glob("*.pt"))
    }
    for name in stale_tasks(recipe, checkpoints, str(folder), relearn, what="checkpoint(s)"):
        (folder / f"{name}.pt").unlink(missing_ok=True)
    first = next((t for t, tid in enumerate(ids) if tid in missing), len(ids))
    later = [tid for tid in ids[first:] if tid not in missing]
    if later:
        log.warning(
            "%d record(s) after task %d belong to an earlier chain; learning them again", len(later), first
        )
    return first


def run_fine_tune(recipe: Recipe, out_dir: Path, progress: bool = True, relearn: bool = False) -> JobResult:
    """Fine-tune one network through the recipe's stream, store its network after every task, and report
    each task's accuracy with the last network, right after its own task, and the forgetting between."""
    check_cluster(recipe.run)
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    store = MaskStore.open(out_dir / "store", recipe.run.shards)
    try:
        ids = recipe.task_ids()
        first = _first_to_learn(recipe, store, ids, relearn)
        result = new_result(
            recipe, "fine_tune: one network, one Ray actor (sequential)", store.layout.num_shards, 1
        )
        result.stack_size = 1
        learn_started = time.perf_counter()
        if first < len(ids):
            tuner = FineTuner.options(**actor_options(recipe.run)).remote(recipe, store, str(out_dir))
            try:
                with tqdm(
                    total=len(ids), initial=first, desc="fine-tuning", unit="task", disable=not progress
                ) as bar:
                    for t in range(first, len(ids)):
                        done = ray.get(tuner.learn.remote(t))
                        for key in ("search_seconds", "evaluate_seconds"):
                            result.timing[key] = result.timing.get(key, 0.0) + done[key]
                        bar.set_postfix_str(f"{done['task']} acc {done['accuracy_on_tasks'][-1]:.3f}")
                        bar.update(1)
            finally:
                ray.kill(tuner)
        result.learn_seconds = time.perf_counter() - learn_started
        eval_started = time.perf_counter()
        records = store.get_weights_many(ids, fingerprint=recipe.base_fingerprint)
        outcomes = [TaskOutcome(t, tid, skipped=t < first) for t, tid in enumerate(ids)]
        for o, record in zip(outcomes, records, strict=True):
            fill_from_record(o, record)
        result.forgetting = forgetting_summary(records, outcomes)
        result.tasks = outcomes
        result.eval_seconds = time.perf_counter() - eval_started
    finally:
        store.close()
    result.seconds = time.perf_counter() - started
    return result
