"""The sharded mask store: one Ray actor per shard file, and `MaskStore`, the client that routes to them.

A store lives in a folder ROOT: ROOT/store.json maps hash partitions of task
ids onto shards, and ROOT/shard-00i.h5 is shard i's `MaskFile`, written only by
its actor. Actors are named after ROOT in the "supermask" namespace, so a
driver and its Ray Train workers reach the same ones. On a multi-node cluster
ROOT must be on a filesystem every node sees, since a restarted shard may land
on another node. Errors raised in a shard reach the caller as their own types
(MaskNotFoundError, FingerprintMismatchError, ...).
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray

from supermask.core.records.packing import TaskMask, query_count
from supermask.core.records.weights import TaskWeights
from supermask.runtime.shard_actor import (
    ShardActor,
    ShardUnavailableError,
    shard_actor_name,
    wait_shards,
)
from supermask.runtime.shard_placement import (
    default_actor_options,
    end_actors,
    revive_lost_shards,
    start_shard_actors,
)
from supermask.store.errors import MaskNotFoundError
from supermask.store.partitioning import (
    StoreLayout,
    StoreState,
    layout_file,
    open_layout,
    shard_path,
    write_state,
)
from supermask.store.reshard import reshard_store
from supermask.store.validation import validate_record

__all__ = ["MaskStore", "ShardActor", "ShardUnavailableError", "shard_actor_name"]

logger = logging.getLogger(__name__)

BATCH = 32  # masks per actor call in put_many/get_many: bounds each object while keeping calls few
WEIGHTS_BATCH = 4  # trained-weights records per call: each is a whole network


def _revives_shards(method: Callable) -> Callable:
    """Retry a store call once after replacing shard actors that are gone for good (a lost node)."""

    @functools.wraps(method)
    def call(self: MaskStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ShardUnavailableError:
            if not self._actors or not revive_lost_shards(
                self.root, self._actors, self._options, self._compact_bytes
            ):
                raise
            return method(self, *args, **kwargs)

    return call


class MaskStore:
    """Client of a sharded mask store; picklable, so it can be handed to Ray tasks and Train workers."""

    def __init__(
        self,
        root: Path,
        layout: StoreLayout,
        actors: list,
        options: dict | None = None,
        compact_bytes: int | None = None,
    ) -> None:
        self.root = root
        self.layout = layout
        self._actors = actors
        self._options = dict(options or {})
        self._compact_bytes = compact_bytes

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        num_shards: int | None = None,
        *,
        actor_options: dict | None = None,
        compact_bytes: int | None = None,
    ) -> MaskStore:
        """Open (creating if absent) the store at `root`, starting or joining its shard actors."""
        root = Path(root).expanduser().resolve()
        layout = open_layout(root, num_shards)
        options = default_actor_options(actor_options)
        actors = start_shard_actors(root, layout.num_shards, options, compact_bytes)
        return cls(root, layout, actors, options, compact_bytes)

    @classmethod
    def reshard(cls, root: str | os.PathLike[str], num_shards: int) -> dict:
        """Move whole partitions' masks between shard files so the store has `num_shards` shards.

        Every MaskStore on `root` must be closed first (the shard files' locks enforce it). Masks are
        copied before they are deleted, and the layout records each phase, so a crash loses nothing:
        running the reshard again finishes it.
        """
        return reshard_store(Path(root).expanduser().resolve(), num_shards)

    # -- routing -------------------------------------------------------------

    @property
    def shard_actors(self) -> list:
        """The shard actor handles, in shard order."""
        if not self._actors:
            raise ShardUnavailableError(
                f"this MaskStore on {self.root} is closed; open it again with MaskStore.open"
            )
        return list(self._actors)

    def _by_shard(self, ids: Sequence[str]) -> dict[int, list[int]]:
        """Input positions of `ids`, grouped by the shard that owns each."""
        groups: dict[int, list[int]] = {}
        for pos, tid in enumerate(ids):
            groups.setdefault(self.layout.shard_of(tid), []).append(pos)
        return groups

    def _scatter(
        self, items: Sequence, keys: Sequence[str], call: Callable, what: str, batch: int = BATCH
    ) -> list:
        """Run `call(actor, batch)` on per-shard batches of `items` concurrently; results in input order."""
        actors = self.shard_actors
        jobs = []
        for shard, positions in self._by_shard(keys).items():
            for i in range(0, len(positions), batch):
                part = positions[i : i + batch]
                jobs.append((part, call(actors[shard], [items[p] for p in part])))
        out: list = [None] * len(items)
        for (part, _), values in zip(jobs, wait_shards([ref for _, ref in jobs], what), strict=True):
            for p, v in zip(part, values, strict=True):
                out[p] = v
        return out

    def _all(self, method: str, *args: Any, what: str, ids: list[str] | None = None) -> list:
        """Call one method on every shard concurrently; results in shard order.

        With `ids`, only the shards that own some of them are called, each with its share as a last argument.
        """
        actors = self.shard_actors
        if ids is None:
            return wait_shards([getattr(a, method).remote(*args) for a in actors], what)
        groups = self._by_shard(ids).items()
        return wait_shards(
            [getattr(actors[s], method).remote(*args, [ids[p] for p in ps]) for s, ps in groups], what
        )

    # -- public API ----------------------------------------------------------

    @_revives_shards
    def put(self, mask: TaskMask | TaskWeights, *, overwrite: bool = False) -> bool:
        """Durably store a mask (or trained weights) on the shard that owns its task; False if it was stored already.

        A put cut short by a shard crash is re-run on the restarted shard, and may then return False
        for a mask that this very call wrote before the crash.
        """
        validate_record(mask)
        actor = self.shard_actors[self.layout.shard_of(mask.task_id)]
        return wait_shards(actor.put.remote(mask, overwrite), f"put {mask.task_id!r}")

    @_revives_shards
    def put_many(self, masks: Sequence[TaskMask | TaskWeights], *, overwrite: bool = False) -> list[bool]:
        """Store many records (masks or trained weights), each shard's share written concurrently; one bool
        per record, in order."""
        masks = list(masks)
        for m in masks:
            validate_record(m)
        return self._scatter(
            masks,
            [m.task_id for m in masks],
            lambda a, batch: a.put_many.remote(batch, overwrite),
            f"put_many of {len(masks)} records",
            BATCH if all(isinstance(m, TaskMask) for m in masks) else WEIGHTS_BATCH,
        )

    @_revives_shards
    def get(self, task_id: str, fingerprint: str | None = None) -> TaskMask:
        """The verified mask of one task (FingerprintMismatchError if it belongs to another base)."""
        actor = self.shard_actors[self.layout.shard_of(task_id)]
        return wait_shards(actor.get.remote(task_id, fingerprint), f"get {task_id!r}")

    @_revives_shards
    def get_many(self, ids: Iterable[str], fingerprint: str | None = None) -> list[TaskMask]:
        """The verified masks of these tasks in input order, fetched from every shard concurrently."""
        ids = list(ids)
        try:
            return self._scatter(
                ids, ids, lambda a, batch: a.get_many.remote(batch, fingerprint), f"get_many of {len(ids)}"
            )
        except MaskNotFoundError as e:
            raise self._not_found(ids, e) from None

    @_revives_shards
    def get_weights_many(self, ids: Iterable[str], fingerprint: str | None = None) -> list[TaskWeights]:
        """The verified trained-weights records of these tasks in input order (a mask is refused, never
        returned as weights: WrongKindError)."""
        ids = list(ids)
        try:
            return self._scatter(
                ids,
                ids,
                lambda a, batch: a.get_weights_many.remote(batch, fingerprint),
                f"get_weights_many of {len(ids)}",
                WEIGHTS_BATCH,
            )
        except MaskNotFoundError as e:
            raise self._not_found(ids, e) from None

    def _not_found(self, ids: list[str], error: MaskNotFoundError) -> MaskNotFoundError:
        """The error naming which of `ids` have no mask, after a shard raised `error` for one of them."""
        missing = self.missing(ids)
        if not missing:  # deleted and put back meanwhile: the shard's own error says what it saw
            return error
        return MaskNotFoundError(
            f"{len(missing)} of {len(ids)} task ids have no mask in the store at {self.root}: "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
        )

    @_revives_shards
    def delete(self, task_id: str) -> bool:
        """Durably remove a task's mask; False if there was none."""
        actor = self.shard_actors[self.layout.shard_of(task_id)]
        return wait_shards(actor.delete.remote(task_id), f"delete {task_id!r}")

    @_revives_shards
    def list(self) -> list[str]:
        """Every stored task id, sorted."""
        return sorted({t for ids in self._all("list", what="list") for t in ids})

    @_revives_shards
    def contains(self, task_id: str) -> bool:
        """Whether a mask is stored for this task."""
        return not self.missing([task_id])

    @_revives_shards
    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids (in input order) that have no stored mask."""
        ids = list(ids)
        found = self._scatter(ids, ids, lambda a, batch: a.contains_many.remote(batch), "missing")
        return [t for t, here in zip(ids, found, strict=True) if not here]

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self.contains(task_id)

    def __len__(self) -> int:
        return sum(s["count"] for s in self._all("stats", what="len"))

    @_revives_shards
    def stats(self) -> dict:
        """Totals over the store (records per base, kind and provenance hash), each shard's under "shards"."""
        shards = self._all("stats", what="stats")
        counted = {key: Counter() for key in ("fingerprints", "kinds", "provenance")}
        for s in shards:
            for key, counter in counted.items():
                counter.update(s[key])
        totals = {
            k: sum(s[k] for s in shards) for k in ("count", "mask_bytes", "file_bytes", "journal_bytes")
        }
        return {
            "root": str(self.root),
            "num_shards": self.layout.num_shards,
            "num_partitions": self.layout.num_partitions,
            **totals,
            **{key: dict(sorted(counter.items())) for key, counter in counted.items()},
            "shards": [{"shard": i, **s} for i, s in enumerate(shards)],
        }

    @_revives_shards
    def describe(self, ids: Iterable[str] | None = None) -> dict[str, dict]:
        """task id -> the record's metadata, from each shard's index (no bits read); see MaskFile.describe.

        Every id, sorted; or only `ids`, in their order (MaskNotFoundError naming any that are missing).
        """
        if ids is None:
            parts = self._all("describe", what="describe")
        else:
            ids = list(ids)
            try:
                parts = self._all("describe", what=f"describe {len(ids)} masks", ids=ids)
            except MaskNotFoundError as e:
                raise self._not_found(ids, e) from None
        merged = {t: d for part in parts for t, d in part.items()}
        return {t: merged[t] for t in (sorted(merged) if ids is None else ids)}

    @_revives_shards
    def verify(self) -> list[dict]:
        """Re-read every mask of every shard: per shard {shard, file, checked, ok, problems}."""
        return [{"shard": i, **r} for i, r in enumerate(self._all("verify", what="verify"))]

    def _fingerprint(self, fingerprint: str | None) -> str | None:
        """The base asked for, or the only one the store holds (None if it holds none)."""
        if fingerprint is not None:
            return fingerprint
        held = sorted({fp for s in self._all("stats", what="stats") for fp in s["fingerprints"]})
        if len(held) > 1:
            raise ValueError(
                f"the store at {self.root} holds masks learned on {len(held)} bases ({', '.join(held)}); "
                "pass fingerprint= to choose one"
            )
        return held[0] if held else None

    @_revives_shards
    def mask_sum(
        self, fingerprint: str | None = None, ids: Sequence[str] | None = None
    ) -> tuple[list[np.ndarray], int]:
        """(per-layer count of masks keeping each weight, number of masks) over every shard, for one base.

        With `ids`, only those masks are summed, each by the shard that holds it.
        """
        fp = self._fingerprint(fingerprint)
        if fp is None:
            return [], 0
        parts = self._all("mask_sum", fp, what="mask_sum", ids=None if ids is None else list(ids))
        total: list[np.ndarray] = []
        count = 0
        for i, (sums, n) in enumerate(parts):
            if n == 0:
                continue
            if total and [s.shape for s in sums] != [t.shape for t in total]:
                raise ValueError(
                    f"shard {i} of {self.root} holds masks of base {fp} with layer shapes "
                    f"{[s.shape for s in sums]}, other shards {[t.shape for t in total]}; check base_fingerprint"
                )
            total = [t + s for t, s in zip(total, sums, strict=True)] if total else sums
            count += n
        return total, count

    @_revives_shards
    def query_scores(
        self,
        queries: Sequence[np.ndarray] | np.ndarray,
        chunk: int = 64,
        fingerprint: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """(ids, (k, Q) scores) of Q query tensors against every mask of one base (or these ids).

        Each shard scores its own masks next to where they live, reading `chunk` packed masks at a
        time; only the queries (base-sized) go out and k x Q numbers come back.
        """
        fp = self._fingerprint(fingerprint)
        num_queries = query_count(queries)
        if fp is None:
            return [], np.zeros((0, num_queries))
        ref = ray.put(queries if isinstance(queries, np.ndarray) else [np.asarray(q) for q in queries])
        parts = self._all(
            "query_scores", ref, chunk, fp, what="query_scores", ids=None if ids is None else list(ids)
        )
        out_ids = [t for part_ids, _ in parts for t in part_ids]
        values = [v for _, v in parts if len(v)]
        return out_ids, (np.concatenate(values) if values else np.zeros((0, num_queries)))

    def export(self, dest_dir: str | os.PathLike[str], *, overwrite: bool = False) -> int:
        """Write each shard's masks to DEST/shard-00i.h5 plus DEST/store.json (a store you can open)."""
        dest = Path(dest_dir).expanduser().resolve()
        if dest == self.root:
            raise ValueError(f"cannot export the store at {self.root} onto itself")
        targets = [shard_path(dest, i) for i in range(self.layout.num_shards)]
        clash = [str(p) for p in [*targets, layout_file(dest)] if p.exists()]
        if clash and not overwrite:
            raise FileExistsError(f"{clash[0]} already exists; export to a new folder or pass overwrite=True")
        dest.mkdir(parents=True, exist_ok=True)
        counts = wait_shards(
            [a.export.remote(str(p)) for a, p in zip(self.shard_actors, targets, strict=True)], "export"
        )
        write_state(dest, StoreState(self.layout))
        return sum(counts)

    def pids(self) -> list[int]:
        """The process id of each shard actor, in shard order."""
        return self._all("pid", what="pids")

    def close(self) -> None:
        """Close every shard file (compacting it) and end the shard actors; closing twice is harmless."""
        if not self._actors:
            return
        try:
            self._all("close", what="close")
        finally:
            self._kill()

    def _kill(self) -> None:
        actors, self._actors = self._actors, []
        end_actors(actors, [shard_actor_name(self.root, i) for i in range(len(actors))])

    def __enter__(self) -> MaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"{self.layout.num_shards} shards" if self._actors else "closed"
        return f"MaskStore({str(self.root)!r}, {state})"
