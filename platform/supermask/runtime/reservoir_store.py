"""The reservoir store on Ray: `ReservoirStore`, the client of a store's Hopfield reservoir actors.

A store folder ROOT holds reservoir.json (`store.reservoir_layout`: how many reservoirs, their
settings) and ROOT/reservoir-00i.npz (+ .wal), reservoir i's `ReservoirFile`, written only by its
shard actor (the one every store kind uses, `runtime.shard_actor`: restarted by Ray after a crash,
revived on a live node after its node is lost, see `runtime.shard_store`). A task's pattern goes to
the reservoir its id hashes to; recovering a batch asks every reservoir for its best attractor at
once (`recover_many`), and the caller keeps the one with the lowest output entropy.

Recovery runs in the reservoir actors, next to their matrices (d^2 numbers per layer never travel):
each builds the base once from its spec (checking its fingerprint) and runs `core.hopfield.recovery`. Only
recovery imports torch: an actor restarted after a crash replays its journal on NumPy alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import ray

from supermask.core.records.packing import TaskMask
from supermask.runtime.shard_actor import ShardFiles, wait_shards
from supermask.runtime.shard_store import ShardedStore, revives_shards
from supermask.store.reservoir_file import ReservoirFile, pattern_digest
from supermask.store.reservoir_layout import (
    ReservoirLayout,
    ReservoirSpec,
    open_reservoir_layout,
    reservoir_path,
)

if TYPE_CHECKING:
    from supermask.core.bases.networks import BaseSpec
    from supermask.core.hopfield.recovery import RecoveryConfig

PatternRecord = tuple[str, list[np.ndarray], dict, dict]  # task id, per-layer pattern, provenance, metrics


def reservoir_files(layout: ReservoirLayout, compact_bytes: int) -> ShardFiles:
    """How a store's reservoir files are opened: with the settings its layout records."""
    settings = {
        "dims": list(layout.dims),
        "rule": layout.rule,
        "dtype": layout.dtype,
        "fingerprint": layout.fingerprint,
        "compact_bytes": compact_bytes,
    }
    return ShardFiles("reservoir", ReservoirFile, reservoir_path, settings)


class ReservoirStore(ShardedStore):
    """Client of a store's reservoirs; picklable, so Ray Train workers can put patterns in it.

    `open(root, spec, dims, fingerprint, actor_options=None)` (the reservoirs' settings are recorded in
    reservoir.json); `put_many` takes (neuron) masks and `put_patterns` patterns; `get_many` and `delete`
    are refused (a pattern cannot be taken back out of a Hopfield matrix); `recover_many` recovers.
    """

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        spec: ReservoirSpec,
        dims: Sequence[int],
        fingerprint: str,
        actor_options: dict | None = None,
    ) -> ReservoirStore:
        """Open (creating if absent) the reservoirs of the store at `root`, starting or joining their actors."""
        root = Path(root).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        wanted = ReservoirLayout(spec.shards, spec.rule, spec.dtype, tuple(int(d) for d in dims), fingerprint)
        layout = open_reservoir_layout(root, wanted)
        return cls.start(root, layout, reservoir_files(layout, spec.compact_bytes), actor_options)

    @property
    def actors(self) -> list:
        """The reservoir actor handles, in shard order."""
        return self.shard_actors

    def task_of(self, record: PatternRecord) -> str:
        return record[0]

    def check_record(self, record: PatternRecord) -> None:
        """Patterns are checked by the reservoir that stores them (sizes, base)."""

    def put_many(self, masks: Sequence[TaskMask], overwrite: bool = False) -> list[bool]:
        """Store each (neuron) mask's pattern in the reservoir its task hashes to; one bool per mask, in order."""
        from supermask.core.masks.neuron import patterns_from_masks

        records = [
            (m.task_id, patterns_from_masks(m.masks()), m.provenance, _small_metrics(m.metrics))
            for m in masks
        ]
        return super().put_many(records, overwrite=overwrite)

    def put_patterns(self, records: Sequence[PatternRecord]) -> list[bool]:
        """Store (task id, per-layer boolean pattern, provenance, metrics) records; one bool each, in order."""
        return super().put_many(records)

    @revives_shards
    def recover_many(
        self, base_spec: BaseSpec, xs: Sequence[np.ndarray], config: RecoveryConfig, num_classes: int
    ) -> list[list[dict | None]]:
        """For each batch, every reservoir's best attractor (None from an empty one), all asked at once."""
        spec, actors = base_spec.to_dict(), self.shard_actors
        refs = []
        for x in xs:
            ref = ray.put(
                np.ascontiguousarray(x, dtype=np.float32)
            )  # once per batch, read by every reservoir
            refs.append([a.run.remote(recover, spec, ref, config, num_classes) for a in actors])
        return [wait_shards(row, "recover") for row in refs]

    def stats(self) -> list[dict]:
        """Each reservoir's stats (size, patterns, capacity, bytes), in shard order."""
        return super().stats()["shards"]


def recover(
    f: ReservoirFile, held: dict, base_spec: dict, x: np.ndarray, config: RecoveryConfig, num_classes: int
) -> dict | None:
    """In a reservoir's actor: its best attractor for one batch (None if it holds nothing), and how well it fits."""
    import torch

    from supermask.core.bases.networks import BaseSpec, build_base
    from supermask.core.hopfield.recovery import recover_batch

    if len(f) == 0:
        return None
    if "base" not in held:
        base = build_base(BaseSpec.from_dict(base_spec))
        if base.fingerprint != f.settings["fingerprint"]:
            raise ValueError(
                f"the base rebuilt in reservoir {f.path} has fingerprint {base.fingerprint}, but its patterns "
                f"were learned on {f.settings['fingerprint']}: this node's torch or NumPy draws other weights"
            )
        torch.set_num_threads(1)
        held["base"] = base
    started = time.perf_counter()
    found = recover_batch(held["base"], f.reservoir, torch.as_tensor(x), config, num_classes=num_classes)
    digest = pattern_digest(found.patterns)
    match = next((t for t, e in f.index.items() if e["digest"] == digest), None)
    return {
        "patterns": found.patterns,
        "entropy": found.entropy,
        "predictions": found.predictions,
        "converged_step": found.converged_step,
        "recall_sweeps": found.recall_sweeps,
        "fixed_point": found.fixed_point,
        "candidates": found.candidates,
        "from_annealing": found.from_annealing,
        "stored_as": match,  # the task whose stored pattern this attractor is exactly, if any
        "seconds": time.perf_counter() - started,
    }


def _small_metrics(metrics: dict) -> dict:
    """The scalar metrics of a mask (curves stay out of the reservoir's index)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool) or v is None}
