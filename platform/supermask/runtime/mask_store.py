"""The sharded mask store: `MaskStore`, the client of a store's mask shard actors.

A store lives in a folder ROOT: ROOT/store.json maps hash partitions of task ids onto shards, and
ROOT/shard-00i.h5 is shard i's `MaskFile`, written only by its actor (see `runtime.shard_store` for
routing, revival after a lost node and shutdown, shared by every store kind). It holds masks and
trained-weights records; beside what every store offers, it answers task inference's mask sums and
query scores, next to where the masks live.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import ray

from supermask.core.records.packing import TaskMask, query_count
from supermask.core.records.weights import TaskWeights
from supermask.runtime.shard_actor import ShardActor, ShardFiles, ShardUnavailableError, wait_shards
from supermask.runtime.shard_store import ShardedStore, revives_shards
from supermask.store.errors import MaskNotFoundError
from supermask.store.maskfile import MaskFile
from supermask.store.partitioning import StoreState, layout_file, shard_path, write_state
from supermask.store.reshard import reshard_store

__all__ = ["MaskStore", "ShardActor", "ShardUnavailableError", "mask_files", "shard_actor_name"]

WEIGHTS_BATCH = 4  # trained-weights records per call: each is a whole network


def mask_files(compact_bytes: int | None = None) -> ShardFiles:
    """How a mask store's shard files are opened (`compact_bytes`: journal bytes before a compaction)."""
    return ShardFiles(
        "shard", MaskFile, shard_path, {} if compact_bytes is None else {"compact_bytes": compact_bytes}
    )


def shard_actor_name(root: str | os.PathLike[str], shard: int) -> str:
    """The Ray actor name of one shard of the mask store at `root` (the same in every process)."""
    return mask_files().actor_name(root, shard)


class MaskStore(ShardedStore):
    """Client of a sharded mask store; picklable, so it can be handed to Ray tasks and Train workers.

    `open(root, num_shards=None, *, actor_options=None, compact_bytes=None)`; `put`/`put_many` take
    masks (TaskMask) and trained weights (TaskWeights), `get`/`get_many` return masks only.
    """

    @classmethod
    def shard_files(cls, compact_bytes: int | None = None) -> ShardFiles:
        return mask_files(compact_bytes)

    @classmethod
    def reshard(cls, root: str | os.PathLike[str], num_shards: int) -> dict:
        """Move whole partitions' masks between shard files so the store has `num_shards` shards.

        Every MaskStore on `root` must be closed first (the shard files' locks enforce it). Masks are
        copied before they are deleted, and the layout records each phase, so a crash loses nothing:
        running the reshard again finishes it.
        """
        return reshard_store(Path(root).expanduser().resolve(), num_shards)

    # -- masks and trained weights ------------------------------------------------

    def batch_for(self, records: list) -> int:
        return self.batch if all(isinstance(m, TaskMask) for m in records) else WEIGHTS_BATCH

    @revives_shards
    def get(self, task_id: str, fingerprint: str | None = None) -> TaskMask:
        """The verified mask of one task (FingerprintMismatchError if it belongs to another base)."""
        return self._one(task_id, "call", "get", task_id, fingerprint=fingerprint)

    @revives_shards
    def get_weights_many(self, ids: Iterable[str], fingerprint: str | None = None) -> list[TaskWeights]:
        """The verified trained-weights records of these tasks in input order (a mask is refused, never
        returned as weights: WrongKindError)."""
        ids = list(ids)
        try:
            return self._scatter(
                ids,
                ids,
                lambda a, part: a.call.remote("get_weights_many", part, fingerprint=fingerprint),
                f"get_weights_many of {len(ids)}",
                WEIGHTS_BATCH,
            )
        except MaskNotFoundError as e:
            raise self._not_found(ids, e) from None

    @revives_shards
    def stats(self) -> dict:
        """Totals over the store (records per base, kind and provenance hash), each shard's under "shards"."""
        out = super().stats()
        shards = out["shards"]
        counted = {key: Counter() for key in ("fingerprints", "kinds", "provenance")}
        for s in shards:
            for key, counter in counted.items():
                counter.update(s[key])
        return {
            **out,
            "num_partitions": self.layout.num_partitions,
            "mask_bytes": sum(s["mask_bytes"] for s in shards),
            **{key: dict(sorted(counter.items())) for key, counter in counted.items()},
        }

    # -- task inference: sums and scores next to the masks ---------------------------

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

    def _on_shards(
        self, method: str, *args: object, what: str, ids: Sequence[str] | None, **kwargs: object
    ) -> list:
        """A MaskFile call on every shard (or on those that own `ids`, each given its share as `ids=`)."""
        actors = self.shard_actors
        if ids is None:
            return wait_shards([a.call.remote(method, *args, **kwargs) for a in actors], what)
        ids = list(ids)
        groups = self._by_shard(ids).items()
        refs = [actors[s].call.remote(method, *args, ids=[ids[p] for p in ps], **kwargs) for s, ps in groups]
        return wait_shards(refs, what)

    @revives_shards
    def mask_sum(
        self, fingerprint: str | None = None, ids: Sequence[str] | None = None
    ) -> tuple[list[np.ndarray], int]:
        """(per-layer count of masks keeping each weight, number of masks) over every shard, for one base.

        With `ids`, only those masks are summed, each by the shard that holds it.
        """
        fp = self._fingerprint(fingerprint)
        if fp is None:
            return [], 0
        total: list[np.ndarray] = []
        count = 0
        for i, (sums, n) in enumerate(self._on_shards("mask_sum", fp, what="mask_sum", ids=ids)):
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

    @revives_shards
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
        parts = self._on_shards("query_scores", ref, chunk, what="query_scores", ids=ids, fingerprint=fp)
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
        refs = [
            a.call.remote("export", str(p), overwrite=True)
            for a, p in zip(self.shard_actors, targets, strict=True)
        ]
        counts = wait_shards(refs, "export")
        write_state(dest, StoreState(self.layout))
        return sum(counts)
