"""The client of a sharded store, for every store kind: routing, batching, revival, placement, shutdown.

A store lives in a folder ROOT whose layout (store.json, or reservoir.json) maps the stable hash of a
task id onto N shards; shard i is one file, written only by its `ShardActor`. `ShardedStore` sends
each call to the shards that own its ids, in batches, concurrently, and puts the answers back in
input order. Actors are named after ROOT and their kind in the "supermask" namespace, so a driver
and its Ray Train workers reach the same ones; a client is picklable and can be handed to them. A
call that finds a shard gone with its node is retried once after a new actor is started for that
shard on a live node (it reads the same file: on a cluster, ROOT must be on storage every node sees).
`MaskStore`, `ReservoirStore` and `TranslationStore` are this client with their kind's own calls.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from supermask.runtime.shard_actor import ShardFiles, ShardUnavailableError, wait_shards
from supermask.runtime.shard_placement import (
    default_actor_options,
    end_actors,
    revive_lost_shards,
    start_shard_actors,
)
from supermask.store.errors import MaskNotFoundError
from supermask.store.partitioning import open_layout
from supermask.store.validation import validate_record

BATCH = 32  # records per actor call in put_many/get_many: bounds each object while keeping calls few


class Layout(Protocol):
    """Which shard owns a task id (a StoreLayout, a ReservoirLayout)."""

    num_shards: int

    def shard_of(self, task_id: str) -> int: ...


def revives_shards(method: Callable) -> Callable:
    """Retry a store call once after replacing shard actors that are gone for good (a lost node)."""

    @functools.wraps(method)
    def call(self: ShardedStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ShardUnavailableError:
            if not self._actors or not revive_lost_shards(self.root, self.files, self._actors, self._options):
                raise
            return method(self, *args, **kwargs)

    return call


class ShardedStore:
    """Client of a sharded store of one kind; picklable, so it can be handed to Ray tasks and Train workers."""

    def __init__(
        self, root: Path, layout: Layout, files: ShardFiles, actors: list, options: dict | None = None
    ) -> None:
        self.root = root
        self.layout = layout
        self.files = files
        self._actors = actors
        self._options = dict(options or {})

    @classmethod
    def start(
        cls,
        root: str | os.PathLike[str],
        layout: Layout,
        files: ShardFiles,
        actor_options: dict | None = None,
    ) -> Any:
        """A client of the store at `root`, its shard actors started (or joined) and their files open."""
        root = Path(root).expanduser().resolve()
        options = default_actor_options(actor_options)
        return cls(root, layout, files, start_shard_actors(root, files, layout.num_shards, options), options)

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        num_shards: int | None = None,
        *,
        actor_options: dict | None = None,
        compact_bytes: int | None = None,
    ) -> Any:
        """Open (creating if absent) the store at `root`, laid out by store.json, starting or joining its
        shard actors (`compact_bytes`: journal bytes before a shard compacts)."""
        root = Path(root).expanduser().resolve()
        cls.check_root(root)
        return cls.start(root, open_layout(root, num_shards), cls.shard_files(compact_bytes), actor_options)

    @classmethod
    def check_root(cls, root: Path) -> None:
        """Raise if the folder cannot be opened as a store of this kind (before anything is written)."""

    @classmethod
    def shard_files(cls, compact_bytes: int | None = None) -> ShardFiles:
        """How this kind's shard files are named and opened."""
        raise NotImplementedError

    # -- routing -------------------------------------------------------------

    @property
    def shard_actors(self) -> list:
        """The shard actor handles, in shard order."""
        if not self._actors:
            raise ShardUnavailableError(
                f"this {type(self).__name__} on {self.root} is closed; open it again with "
                f"{type(self).__name__}.open"
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
        """Call one actor method on every shard concurrently; results in shard order.

        With `ids`, only the shards that own some of them are called, each with its share as a last argument.
        """
        actors = self.shard_actors
        if ids is None:
            return wait_shards([getattr(a, method).remote(*args) for a in actors], what)
        groups = self._by_shard(ids).items()
        return wait_shards(
            [getattr(actors[s], method).remote(*args, [ids[p] for p in ps]) for s, ps in groups], what
        )

    def _one(self, task_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call one actor method on the shard that owns `task_id`."""
        actor = self.shard_actors[self.layout.shard_of(task_id)]
        return wait_shards(getattr(actor, method).remote(*args, **kwargs), f"{method} {task_id!r}")

    def _not_found(self, ids: list[str], error: MaskNotFoundError) -> MaskNotFoundError:
        """The error naming which of `ids` are not stored, after a shard raised `error` for one of them."""
        missing = self.missing(ids)
        if not missing:  # deleted and put back meanwhile: the shard's own error says what it saw
            return error
        return MaskNotFoundError(
            f"{len(missing)} of {len(ids)} task ids have no record in the store at {self.root}: "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
        )

    # -- what every kind offers ------------------------------------------------

    batch = BATCH  # records per actor call (a kind with large records sends fewer)

    def check_record(self, record: Any) -> None:
        """Raise ValueError naming what is wrong with a record about to be stored."""
        validate_record(record)

    def task_of(self, record: Any) -> str:
        """The task id a record belongs to (routes it to its shard)."""
        return record.task_id

    @revives_shards
    def put(self, record: Any, *, overwrite: bool = False) -> bool:
        """Durably store a record on the shard that owns its task; False if it was stored already.

        A put cut short by a shard crash is re-run on the restarted shard, and may then return False
        for a record that this very call wrote before the crash.
        """
        self.check_record(record)
        return self._one(self.task_of(record), "put_many", [record], overwrite)[0]

    @revives_shards
    def put_many(self, records: Sequence, *, overwrite: bool = False) -> list[bool]:
        """Durably store records, each on the shard that owns its task, every shard's share written
        concurrently; one bool per record in order (False: that exact record was stored already)."""
        records = list(records)
        for r in records:
            self.check_record(r)
        return self._scatter(
            records,
            [self.task_of(r) for r in records],
            lambda a, part: a.put_many.remote(part, overwrite),
            f"put_many of {len(records)} records",
            self.batch_for(records),
        )

    def batch_for(self, records: list) -> int:
        """Records per actor call when putting these."""
        return self.batch

    @revives_shards
    def get(self, task_id: str, fingerprint: str | None = None) -> Any:
        """The verified record of one task (FingerprintMismatchError if it belongs to another base)."""
        return self._one(task_id, "get_many", [task_id], fingerprint)[0]

    @revives_shards
    def get_many(self, ids: Iterable[str], fingerprint: str | None = None) -> list:
        """The verified records of these tasks in input order, fetched from every shard concurrently."""
        ids = list(ids)
        try:
            return self._scatter(
                ids,
                ids,
                lambda a, part: a.get_many.remote(part, fingerprint),
                f"get_many of {len(ids)}",
                self.batch,
            )
        except MaskNotFoundError as e:
            raise self._not_found(ids, e) from None

    @revives_shards
    def delete(self, task_id: str) -> bool:
        """Durably remove a task's record; False if there was none."""
        return self._one(task_id, "delete", task_id)

    @revives_shards
    def list(self) -> list[str]:
        """Every stored task id, sorted."""
        return sorted({t for ids in self._all("list", what="list") for t in ids})

    @revives_shards
    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids (in input order) that have no stored record."""
        ids = list(ids)
        found = self._scatter(ids, ids, lambda a, part: a.contains_many.remote(part), "missing")
        return [t for t, here in zip(ids, found, strict=True) if not here]

    def contains(self, task_id: str) -> bool:
        """Whether a record is stored for this task."""
        return not self.missing([task_id])

    def __contains__(self, task_id: object) -> bool:
        return isinstance(task_id, str) and self.contains(task_id)

    def __len__(self) -> int:
        return sum(s["count"] for s in self._all("stats", what="len"))

    @revives_shards
    def describe(self, ids: Iterable[str] | None = None) -> dict[str, dict]:
        """task id -> what its shard keeps of its record, from the shards' indexes (no arrays read).

        Every id, sorted; or only `ids`, in their order (MaskNotFoundError naming any that are missing).
        """
        if ids is None:
            parts = self._all("describe", what="describe")
        else:
            ids = list(ids)
            try:
                parts = self._all("describe", what=f"describe {len(ids)} records", ids=ids)
            except MaskNotFoundError as e:
                raise self._not_found(ids, e) from None
        merged = {t: d for part in parts for t, d in part.items()}
        return {t: merged[t] for t in (sorted(merged) if ids is None else ids)}

    @revives_shards
    def stats(self) -> dict:
        """Totals over the store (records, file and journal bytes) and each shard's own stats under "shards"."""
        shards = self._all("stats", what="stats")
        return {
            "root": str(self.root),
            "kind": self.files.file_class.kind,
            "num_shards": self.layout.num_shards,
            **{k: sum(s.get(k, 0) for s in shards) for k in ("count", "file_bytes", "journal_bytes")},
            "shards": [{"shard": i, **s} for i, s in enumerate(shards)],
        }

    @revives_shards
    def verify(self) -> list[dict]:
        """Re-read every record of every shard: per shard {shard, file, checked, ok, problems}."""
        return [{"shard": i, **r} for i, r in enumerate(self._all("verify", what="verify"))]

    @revives_shards
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
        end_actors(actors, [self.files.actor_name(self.root, i) for i in range(len(actors))])

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"{self.layout.num_shards} shards" if self._actors else "closed"
        return f"{type(self).__name__}({str(self.root)!r}, {state})"
