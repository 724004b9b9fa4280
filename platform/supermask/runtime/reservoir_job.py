"""`supermask run` with store.kind reservoir or both: learn with task ids on Ray Train, write each task's
neuron pattern into the sharded Hopfield reservoirs (with `both`, its exact mask into the mask store
too), then recover every test batch from the reservoirs alone, without task ids.

The learning is the main job's (`runtime.job`): the same Train run, plan, checkpoints and restarts;
workers get a `StoreSet` in their plan instead of a MaskStore and call the same two methods on it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from supermask.core.masks.neuron import patterns_from_masks
from supermask.data import stream_of
from supermask.recipes.recipe import Recipe, stale_tasks
from supermask.recipes.recovery_eval import evaluate_recovery, recovery_summary
from supermask.recipes.results import JobResult, TaskOutcome
from supermask.runtime.inference_job import new_result
from supermask.runtime.job import _abandon, _check_provenance, _start_train, learn_tasks
from supermask.runtime.mask_store import MaskStore
from supermask.runtime.placement import check_cluster
from supermask.runtime.reservoir_store import ReservoirStore
from supermask.store.reservoir_layout import RESERVOIR_LAYOUT_FILE

log = logging.getLogger(__name__)


class StoreSet:
    """What a run writes each learned task to (store.kind): the exact mask store, the reservoirs, or both.

    Picklable; Ray Train workers call `missing` and `put_many` on it as on a MaskStore.
    """

    def __init__(self, masks: MaskStore | None, reservoirs: ReservoirStore) -> None:
        self.masks, self.reservoirs = masks, reservoirs

    def missing(self, ids) -> list[str]:
        """Ids (in input order) that some store of the set lacks: they are learned (again)."""
        ids = list(ids)
        gone = set(self.reservoirs.missing(ids)) | (
            set(self.masks.missing(ids)) if self.masks is not None else set()
        )
        return [t for t in ids if t in gone]

    def put_many(self, masks, overwrite: bool = False) -> list[bool]:
        """Exact masks first (if kept), then patterns; whether each was new to the exact store (else the reservoir)."""
        written = self.masks.put_many(masks, overwrite=overwrite) if self.masks is not None else None
        into_reservoir = self.reservoirs.put_many(masks)
        return written if written is not None else into_reservoir

    def close(self) -> None:
        try:
            if self.masks is not None:
                self.masks.close()
        finally:
            self.reservoirs.close()


def reset_reservoirs(root: Path) -> None:
    """Delete the store's reservoir files (a pattern cannot be taken out of a matrix: --relearn starts them anew)."""
    for path in [
        root / RESERVOIR_LAYOUT_FILE,
        *root.glob("reservoir-*.npz"),
        *root.glob("reservoir-*.npz.wal"),
    ]:
        path.unlink(missing_ok=True)


def _open_reservoirs(recipe: Recipe, root: Path) -> ReservoirStore:
    return ReservoirStore.open(root, recipe.store.reservoir, recipe.reservoir_dims, recipe.base_fingerprint)


def run_reservoir_job(
    recipe: Recipe, out_dir: Path, progress: bool = True, relearn: bool = False
) -> JobResult:
    """Learn the recipe's stream into its store kind (reservoir or both) under out_dir/store, then recover every
    test batch without task ids; stored patterns of other settings stop it, unless `relearn`."""
    if not recipe.store.has_reservoir:
        raise ValueError(
            "run_reservoir_job runs store.kind reservoir or both; use runtime.job.run_job for masks"
        )
    check_cluster(recipe.run)
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir / "store"
    train = _start_train(recipe, out_dir, recipe.stream.num_tasks) if not root.exists() else None
    try:
        masks = MaskStore.open(root, recipe.run.shards) if recipe.store.has_masks else None
        try:
            stores = StoreSet(masks, _open_reservoirs(recipe, root))
        except BaseException:
            if masks is not None:
                masks.close()
            raise
    except BaseException:
        _abandon(train)
        raise
    try:
        result = new_result(recipe, recipe.run.strategy, recipe.run.shards if masks is not None else 0)
        outcomes = _learn(recipe, out_dir, stores, result, progress, relearn, train)
        result.tasks = [outcomes[t] for t in sorted(outcomes)]
        eval_started = time.perf_counter()
        result.reservoir = _recover(recipe, stores, progress)
        result.eval_seconds = time.perf_counter() - eval_started
        result.timing["recovery_seconds"] = result.eval_seconds
    finally:
        stores.close()
    result.seconds = time.perf_counter() - started
    return result


def _check_reservoir_provenance(recipe: Recipe, stores: StoreSet, ids: list[str], relearn: bool) -> None:
    """Refuse patterns stored with other settings; with relearn, start the reservoirs anew (they cannot drop one)."""
    held = [t for t in ids if t not in set(stores.reservoirs.missing(ids))]
    described = stores.reservoirs.describe(held)
    where = f"the reservoirs at {stores.reservoirs.root}"
    stale = stale_tasks(
        recipe, {t: d["provenance"] for t, d in described.items()}, where, relearn, "pattern(s)"
    )
    if stale:
        log.warning(
            "starting the reservoirs anew: %d pattern(s) were stored with other settings (--relearn)",
            len(stale),
        )
        root = stores.reservoirs.root
        stores.reservoirs.close()
        reset_reservoirs(root)
        stores.reservoirs = _open_reservoirs(recipe, root)


def _backfill(recipe: Recipe, stores: StoreSet, ids: list[str]) -> None:
    """Put into the reservoirs the patterns of tasks the exact store holds and they lack (no need to learn them again)."""
    if stores.masks is None:
        return
    lacking = set(stores.reservoirs.missing(ids)) - set(stores.masks.missing(ids))
    if lacking:
        log.info("writing %d stored mask(s) into the reservoirs", len(lacking))
        stores.reservoirs.put_many(
            stores.masks.get_many(sorted(lacking), fingerprint=recipe.base_fingerprint)
        )


def _learn(
    recipe: Recipe,
    out_dir: Path,
    stores: StoreSet,
    result: JobResult,
    progress: bool,
    relearn: bool,
    train,
) -> dict[int, TaskOutcome]:
    """Learn what the stores lack (as the main job does) and read back what each task's search measured."""
    ids = recipe.task_ids()
    try:
        if stores.masks is not None:
            _check_provenance(recipe, out_dir, stores.masks, ids, relearn)
        _check_reservoir_provenance(recipe, stores, ids, relearn)
        _backfill(recipe, stores, ids)
        missing = set(stores.missing(ids))
    except BaseException:
        _abandon(train)
        raise
    outcomes = {t: TaskOutcome(t, tid, skipped=tid not in missing) for t, tid in enumerate(ids)}
    todo = [t for t, o in outcomes.items() if not o.skipped]
    learn_tasks(recipe, stores, ids, todo, out_dir, result, progress, train)
    if stores.masks is not None:
        for o, mask in zip(
            outcomes.values(), stores.masks.get_many(ids, fingerprint=recipe.base_fingerprint), strict=True
        ):
            o.density, o.mask_bytes, metrics = mask.density, mask.mask_bytes, mask.metrics
            _fill(o, metrics)
    else:
        for o, d in zip(outcomes.values(), stores.reservoirs.describe(ids).values(), strict=True):
            _fill(o, d["metrics"])
    return outcomes


def _fill(o: TaskOutcome, metrics: dict) -> None:
    """GG numbers measured by the worker on the device, on the very bits it stored."""
    o.accuracy, o.accuracy_all_outputs = (
        metrics.get("test_accuracy"),
        metrics.get("test_accuracy_all_outputs"),
    )
    o.train_accuracy, o.search_seconds = metrics.get("train_accuracy"), metrics.get("seconds")
    o.resumed_at_steps = metrics.get("resumed_at_steps", [])


def _recover(recipe: Recipe, stores: StoreSet, progress: bool) -> dict:
    """Every test batch recovered from the reservoirs without its task id; the stores' sizes beside it."""
    ids = recipe.task_ids()
    reference = None
    if stores.masks is not None:
        exact = stores.masks.get_many(ids, fingerprint=recipe.base_fingerprint)
        reference = {m.task_id: patterns_from_masks(m.masks()) for m in exact}

    def ask(xs):
        return stores.reservoirs.recover_many(recipe.base, xs, recipe.recovery, recipe.num_classes)

    started = time.perf_counter()
    with tqdm(total=len(ids), desc="recovering without task ids", unit="task", disable=not progress) as bar:
        outcomes = evaluate_recovery(
            stream_of(recipe.stream, recipe.data),
            range(len(ids)),
            recipe.recovery.batch_size,
            ask,
            reference,
            on_task=lambda o: bar.update(1),
        )
    summary = recovery_summary(outcomes, time.perf_counter() - started)
    shards = stores.reservoirs.stats()
    exact_stats = stores.masks.stats() if stores.masks is not None else None
    count = sum(s["count"] for s in shards)
    dims = list(recipe.reservoir_dims)
    return {
        "kind": recipe.store.kind,
        "rule": recipe.store.reservoir.rule,
        "dtype": recipe.store.reservoir.dtype,
        "shards": len(shards),
        "dims": dims,
        "patterns_stored": count,
        "estimated_capacity": sum(s["estimated_capacity"] for s in shards),
        "reservoir_bytes": sum(s["state_bytes"] for s in shards),
        "reservoir_file_bytes": sum(s["file_bytes"] + s["journal_bytes"] for s in shards),
        "exact_store_bytes": exact_stats["mask_bytes"] if exact_stats else None,
        "exact_store_file_bytes": exact_stats["file_bytes"] + exact_stats["journal_bytes"]
        if exact_stats
        else None,
        "neuron_bits_bytes": count * int(np.ceil(sum(dims) / 8)),
        "packed_bits_masks_same_bytes": sum(s["packed_bits_masks_same_bytes"] for s in shards),
        "per_shard": shards,
        "recovery": {**dataclasses.asdict(recipe.recovery), **summary},
    }
