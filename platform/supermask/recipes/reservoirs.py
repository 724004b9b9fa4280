"""The Hopfield-reservoir half of the supermask learner (store.kind reservoir or both; no Ray here): the
set of stores each task is written to, their provenance, and recovery without task ids measured.

Learning is the supermask learner's, on the same Train run, plan, checkpoints and restarts: workers
get a `StoreSet` in their plan instead of a mask store and call the same methods on it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from supermask.core.hopfield.reservoir import Reservoir
from supermask.core.masks.neuron import neuron_dims, patterns_from_masks
from supermask.data import stream_of
from supermask.recipes.recipe import Recipe, stale_tasks
from supermask.recipes.recovery_eval import evaluate_recovery, recovery_summary
from supermask.store.reservoir_layout import RESERVOIR_LAYOUT_FILE

log = logging.getLogger(__name__)


def reservoir_dims(recipe: Recipe) -> tuple[int, ...]:
    """Neurons per hidden layer of the recipe's base: each reservoir's matrix sizes."""
    return tuple(neuron_dims([tuple(s) for s in recipe.layer_shapes]))


class StoreSet:
    """What a run writes each learned task to: the exact mask store (None with store.kind reservoir) and
    the reservoirs. Picklable; Ray Train workers call `missing` and `put_many` on it as on a mask store."""

    def __init__(self, masks: Any, reservoirs: Any, reopen) -> None:
        self.masks, self.reservoirs = masks, reservoirs
        self._reopen = reopen  # () -> the reservoirs opened anew (after their files were deleted)
        self.root = reservoirs.root

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

    def reset_reservoirs(self) -> None:
        """Delete the reservoir files and open them empty (a pattern cannot be taken out of a matrix)."""
        root = self.reservoirs.root
        self.reservoirs.close()
        for path in [
            root / RESERVOIR_LAYOUT_FILE,
            *root.glob("reservoir-*.npz"),
            *root.glob("reservoir-*.npz.wal"),
        ]:
            path.unlink(missing_ok=True)
        self.reservoirs = self._reopen()

    def close(self) -> None:
        try:
            if self.masks is not None:
                self.masks.close()
        finally:
            self.reservoirs.close()


def check_reservoir_provenance(recipe: Recipe, stores: StoreSet, ids: list[str], relearn: bool) -> None:
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
        stores.reset_reservoirs()


def backfill(recipe: Recipe, stores: StoreSet, ids: list[str]) -> None:
    """Put into the reservoirs the patterns of tasks the exact store holds and they lack (no need to learn them again)."""
    if stores.masks is None:
        return
    lacking = set(stores.reservoirs.missing(ids)) - set(stores.masks.missing(ids))
    if lacking:
        log.info("writing %d stored mask(s) into the reservoirs", len(lacking))
        stores.reservoirs.put_many(
            stores.masks.get_many(sorted(lacking), fingerprint=recipe.base_fingerprint)
        )


def stored_metrics(recipe: Recipe, stores: StoreSet, ids: list[str]) -> list[tuple[Any, dict]]:
    """(exact mask or None, metrics) of every task: from the exact store if kept, else the reservoirs' index."""
    if stores.masks is not None:
        return [(m, m.metrics) for m in stores.masks.get_many(ids, fingerprint=recipe.base_fingerprint)]
    return [(None, d["metrics"]) for d in stores.reservoirs.describe(ids).values()]


def recover(recipe: Recipe, stores: StoreSet, progress: bool) -> dict:
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
    dims = list(reservoir_dims(recipe))
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


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{n:,} B"


def resolved_reservoir(recipe: Recipe) -> list[str]:
    """`--check` lines: the size each reservoir will have, its bytes and estimated capacity."""
    spec, dims = recipe.store.reservoir, reservoir_dims(recipe)
    r = Reservoir(list(dims), spec.rule, spec.dtype)
    shape = " + ".join(f"{d}x{d}" for d in dims)
    return [
        f"# resolved: store.kind {recipe.store.kind}: {spec.shards} reservoir(s) of {shape} ({spec.rule}, "
        f"{spec.dtype}), {_mb(r.nbytes)} each, estimated capacity ~{r.capacity()} patterns each; the same bytes "
        f"hold {r.packed_bits_equivalent():,} neuron masks as packed bits"
    ]
