"""The reservoir store on Ray: one actor per Hopfield reservoir, and `ReservoirStore`, the client that routes to them.

A store folder ROOT holds reservoir.json (`store.reservoir_layout`: how many reservoirs, their
settings) and ROOT/reservoir-00i.npz (+ .wal), reservoir i's `ReservoirFile`, written only by its
actor. Actors are named after ROOT in the "supermask" namespace, restarted by Ray after a crash
(they rebuild their matrices from their files), and every call may be re-run after a crash: `put`
of a stored task returns False, the rest only read. A task's pattern goes to the reservoir its id
hashes to; recovering a batch asks every reservoir for its best attractor at once
(`recover_many`), and the caller keeps the one with the lowest output entropy.

Recovery runs in the reservoir actors, next to their matrices (d^2 numbers per layer never travel):
each builds the base once from its spec (checking its fingerprint) and runs `core.hopfield.recovery`. Only
recovery imports torch: an actor restarted after a crash replays its journal on NumPy alone.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import ray

from supermask.core.records.packing import TaskMask
from supermask.runtime.shard_actor import LOCK_WAIT_S, NAMESPACE, ShardUnavailableError, wait_shards
from supermask.runtime.shard_placement import default_actor_options, end_actors
from supermask.store.errors import StoreLockedError
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


@ray.remote
class ReservoirActor:
    """One Hopfield reservoir: owns one ReservoirFile (opened in __init__, so a restart rebuilds it)."""

    def __init__(self, path: str, layout: ReservoirLayout, compact_bytes: int) -> None:
        self._error: Exception | None = None
        self._file: ReservoirFile | None = None
        self._layout = layout
        self._base = None
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                self._file = ReservoirFile(
                    path,
                    dims=layout.dims,
                    rule=layout.rule,
                    dtype=layout.dtype,
                    fingerprint=layout.fingerprint,
                    compact_bytes=compact_bytes,
                )
                return
            except StoreLockedError as e:
                if time.monotonic() > deadline:
                    self._error = e
                    return
                time.sleep(0.5)  # a killed predecessor's lock is released when its process is gone
            except Exception as e:  # kept and raised by every call, so callers get it as its own type
                self._error = e
                return

    def _open(self) -> ReservoirFile:
        if self._error is not None:
            raise self._error
        if self._file is None:
            raise ShardUnavailableError("this reservoir was closed; open the store again")
        return self._file

    def ping(self) -> int:
        self._open()
        return os.getpid()

    def put_many(self, records: list[tuple[str, list[np.ndarray], dict, dict]]) -> list[bool]:
        """Store (task id, pattern, provenance, metrics) records, each fsynced before the next; False if held."""
        f = self._open()
        fp = self._layout.fingerprint
        return [f.put(t, p, fingerprint=fp, provenance=prov, metrics=m) for t, p, prov, m in records]

    def contains_many(self, ids: list[str]) -> list[bool]:
        f = self._open()
        return [t in f for t in ids]

    def describe(self, ids: list[str] | None = None) -> dict[str, dict]:
        return self._open().describe(ids)

    def stats(self) -> dict:
        return self._open().stats()

    def verify(self) -> dict:
        f = self._open()
        problems = f.verify()
        return {"file": str(f.path), "checked": len(f), "ok": not problems, "problems": problems}

    def recover(
        self, base_spec: dict, x: np.ndarray, config: RecoveryConfig, num_classes: int
    ) -> dict | None:
        """This reservoir's best attractor for one batch (None if it holds nothing), and how well it fits."""
        import torch

        from supermask.core.bases.networks import BaseSpec, build_base
        from supermask.core.hopfield.recovery import recover_batch

        f = self._open()
        if len(f) == 0:
            return None
        if self._base is None:
            base = build_base(BaseSpec.from_dict(base_spec))
            if base.fingerprint != self._layout.fingerprint:
                raise ValueError(
                    f"the base rebuilt in reservoir {f.path} has fingerprint {base.fingerprint}, but its patterns "
                    f"were learned on {self._layout.fingerprint}: this node's torch or NumPy draws other weights"
                )
            torch.set_num_threads(1)
            self._base = base
        started = time.perf_counter()
        found = recover_batch(self._base, f.reservoir, torch.as_tensor(x), config, num_classes=num_classes)
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

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def pid(self) -> int:
        return os.getpid()


def reservoir_actor_name(root: str | os.PathLike[str], shard: int) -> str:
    """The Ray actor name of one reservoir of the store at `root` (the same in every process)."""
    digest = hashlib.blake2b(str(Path(root).expanduser().resolve()).encode(), digest_size=16).hexdigest()
    return f"supermask-reservoir-{digest[:10]}-{shard}"


class ReservoirStore:
    """Client of a store's reservoirs; picklable, so Ray Train workers can put patterns in it."""

    def __init__(self, root: Path, layout: ReservoirLayout, actors: list) -> None:
        self.root, self.layout, self._actors = root, layout, actors

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
        options = default_actor_options(actor_options)
        actors = [
            ReservoirActor.options(
                name=reservoir_actor_name(root, i), namespace=NAMESPACE, get_if_exists=True, **options
            ).remote(str(reservoir_path(root, i)), layout, spec.compact_bytes)
            for i in range(layout.num_shards)
        ]
        store = cls(root, layout, actors)
        try:
            store.pids()  # raises what opening a reservoir file raised
        except BaseException:
            store._kill()
            raise
        return store

    @property
    def actors(self) -> list:
        if not self._actors:
            raise ShardUnavailableError(f"this ReservoirStore on {self.root} is closed; open it again")
        return list(self._actors)

    def _by_shard(self, ids: Sequence[str]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for pos, tid in enumerate(ids):
            groups.setdefault(self.layout.shard_of(tid), []).append(pos)
        return groups

    def put_many(self, masks: Sequence[TaskMask], overwrite: bool = False) -> list[bool]:
        """Store each (neuron) mask's pattern in the reservoir its task hashes to; one bool per mask, in order."""
        from supermask.core.masks.neuron import patterns_from_masks

        if overwrite:
            raise ValueError(
                "a pattern cannot be taken out of a Hopfield reservoir, so it cannot be overwritten"
            )
        records = [
            (m.task_id, patterns_from_masks(m.masks()), m.provenance, _small_metrics(m.metrics))
            for m in masks
        ]
        return self.put_patterns(records)

    def put_patterns(self, records: Sequence[tuple[str, list[np.ndarray], dict, dict]]) -> list[bool]:
        """Store (task id, per-layer boolean pattern, provenance, metrics) records; one bool each, in order."""
        actors, out = self.actors, [False] * len(records)
        jobs = [
            (ps, actors[s].put_many.remote([records[p] for p in ps]))
            for s, ps in self._by_shard([r[0] for r in records]).items()
        ]
        for (ps, _), written in zip(jobs, wait_shards([j for _, j in jobs], "reservoir put"), strict=True):
            for p, w in zip(ps, written, strict=True):
                out[p] = w
        return out

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ids (in input order) whose pattern no reservoir holds."""
        ids, actors = list(ids), self.actors
        groups = list(self._by_shard(ids).items())
        found = wait_shards(
            [actors[s].contains_many.remote([ids[p] for p in ps]) for s, ps in groups], "missing"
        )
        held = {
            ids[p]
            for (_, ps), here in zip(groups, found, strict=True)
            for p, h in zip(ps, here, strict=True)
            if h
        }
        return [t for t in ids if t not in held]

    def describe(self, ids: Sequence[str] | None = None) -> dict[str, dict]:
        """task id -> what its reservoir keeps of it (digest, provenance, metrics); every id or these."""
        actors = self.actors
        if ids is None:
            parts = wait_shards([a.describe.remote() for a in actors], "describe")
            return dict(sorted((t, d) for part in parts for t, d in part.items()))
        ids = list(ids)
        groups = self._by_shard(ids).items()
        parts = wait_shards([actors[s].describe.remote([ids[p] for p in ps]) for s, ps in groups], "describe")
        merged = {t: d for part in parts for t, d in part.items()}
        return {t: merged[t] for t in ids}

    def stats(self) -> list[dict]:
        """Each reservoir's stats (size, patterns, capacity, bytes), in shard order."""
        return wait_shards([a.stats.remote() for a in self.actors], "stats")

    def verify(self) -> list[dict]:
        return [
            {"shard": i, **r}
            for i, r in enumerate(wait_shards([a.verify.remote() for a in self.actors], "verify"))
        ]

    def recover_many(
        self, base_spec: BaseSpec, xs: Sequence[np.ndarray], config: RecoveryConfig, num_classes: int
    ) -> list[list[dict | None]]:
        """For each batch, every reservoir's best attractor (None from an empty one), all asked at once."""
        spec, actors = base_spec.to_dict(), self.actors
        refs = []
        for x in xs:
            ref = ray.put(
                np.ascontiguousarray(x, dtype=np.float32)
            )  # once per batch, read by every reservoir
            refs.append([a.recover.remote(spec, ref, config, num_classes) for a in actors])
        return [wait_shards(row, "recover") for row in refs]

    def pids(self) -> list[int]:
        return wait_shards([a.ping.remote() for a in self.actors], f"opening the reservoirs of {self.root}")

    def close(self) -> None:
        """Compact and close every reservoir file and end the actors; closing twice is harmless."""
        if not self._actors:
            return
        try:
            wait_shards([a.close.remote() for a in self._actors], "close")
        finally:
            self._kill()

    def _kill(self) -> None:
        actors, self._actors = self._actors, []
        end_actors(actors, [reservoir_actor_name(self.root, i) for i in range(len(actors))])

    def __enter__(self) -> ReservoirStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _small_metrics(metrics: dict) -> dict:
    """The scalar metrics of a mask (curves stay out of the reservoir's index)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool) or v is None}
