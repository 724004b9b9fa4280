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
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from supermask.core.packing import TaskMask, query_count
from supermask.runtime.shard_actor import (
    NAMESPACE,
    ShardActor,
    ShardUnavailableError,
    best_scores,
    shard_actor_name,
    wait_shards,
)
from supermask.store.errors import MaskNotFoundError
from supermask.store.maskfile import validate_mask
from supermask.store.partitioning import (
    StoreLayout,
    StoreLayoutError,
    StoreState,
    layout_file,
    read_state,
    reshard_store,
    shard_path,
    write_state,
)

__all__ = ["MaskStore", "ShardActor", "ShardUnavailableError", "shard_actor_name"]

logger = logging.getLogger(__name__)

BATCH = 32  # masks per actor call in put_many/get_many: bounds each object while keeping calls few


def _spread_over_nodes(shard: int):
    """Shard i goes to alive node i mod N (round robin over the nodes alive now).

    Ray's "SPREAD" (and soft node affinity) is best effort and often packs zero-CPU actors onto one
    node. Pinning is exact, but a pinned actor cannot restart on another node when its node is
    lost: `_revives_shards` then starts a fresh actor for that shard on a live node, which reads the
    same file (shared storage), so the call goes through.
    """
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    if not nodes:
        return "SPREAD"
    return NodeAffinitySchedulingStrategy(node_id=nodes[shard % len(nodes)], soft=False)


def _revives_shards(method: Callable) -> Callable:
    """Retry a store call once after replacing shard actors that are gone for good (a lost node)."""

    @functools.wraps(method)
    def call(self: MaskStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ShardUnavailableError:
            if not self._actors or not self._revive_dead_shards():
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
        state = read_state(root)
        if state is None:
            stray = sorted(p.name for p in root.glob("shard-*.h5"))
            if stray:
                raise StoreLayoutError(
                    f"{root} holds shard files ({', '.join(stray[:5])}) but no {layout_file(root).name}, so "
                    "which shard owns which task is unknown; restore it from a backup, or move the shard "
                    "files aside and import them into a new store with MaskFile.import_from"
                )
            state = StoreState(StoreLayout.initial(num_shards or 1))
            write_state(root, state)
            logger.info("created a mask store at %s with %d shard(s)", root, state.layout.num_shards)
        if state.pending_phase is not None:
            target = state.pending_layout if state.pending_phase == "copy" else state.layout
            raise StoreLayoutError(
                f"a reshard of {root} to {target.num_shards} shards was cut short; nothing is lost: "
                f"finish it with `supermask store reshard {root} {target.num_shards}`, then open the store"
            )
        layout = state.layout
        if num_shards is not None and num_shards != layout.num_shards:
            raise StoreLayoutError(
                f"{root} has {layout.num_shards} shards, not {num_shards}: to change that, close every "
                f"MaskStore on it and run `supermask store reshard {root} {num_shards}` (or open it with "
                "num_shards=None to use it as it is)"
            )
        options = {
            "num_cpus": 0,  # shards wait on disks, not CPUs
            "max_restarts": -1,
            # Safe because every shard method can be re-run after a crash (put is idempotent).
            "max_task_retries": -1,
            **(actor_options or {}),
        }
        actors = cls._start_actors(root, layout.num_shards, options, compact_bytes)
        return cls(root, layout, actors, options, compact_bytes)

    @staticmethod
    def _start_actors(
        root: Path, num_shards: int, options: dict, compact_bytes: int | None, only: list[int] | None = None
    ) -> list:
        """Start (or join) the shard actors (all, or those in `only`) and wait until each has its file open."""
        actors: list = [None] * num_shards
        wanted = list(range(num_shards)) if only is None else list(only)
        for _ in range(50):
            todo = [i for i in wanted if actors[i] is None]
            if not todo:
                return actors
            started = {
                i: ShardActor.options(
                    name=shard_actor_name(root, i),
                    namespace=NAMESPACE,
                    get_if_exists=True,
                    **{"scheduling_strategy": _spread_over_nodes(i), **options},
                ).remote(str(shard_path(root, i)), compact_bytes)
                for i in todo
            }
            pings = {i: a.ping.remote() for i, a in started.items()}
            try:
                wait_shards(list(pings.values()), f"opening the shard files of {root}")
            except ShardUnavailableError:  # a closed store's actor whose name is not released yet
                time.sleep(0.1)
            except Exception:
                # Leave no shard behind holding its file: the next open starts fresh ones.
                for a in [*started.values(), *(a for a in actors if a is not None)]:
                    ray.kill(a, no_restart=True)
                raise
            for i, ref in pings.items():
                try:
                    ray.get(ref)  # at once: every ping has finished
                    actors[i] = started[i]
                except ray.exceptions.RayError:
                    pass  # started afresh (or its error raised) on the next round
        raise ShardUnavailableError(f"could not start the shard actors of {root}; is Ray healthy?")

    @classmethod
    def reshard(cls, root: str | os.PathLike[str], num_shards: int) -> dict:
        """Move whole partitions' masks between shard files so the store has `num_shards` shards.

        Every MaskStore on `root` must be closed first (the shard files' locks enforce it). Masks are
        copied before they are deleted, and the layout records each phase, so a crash loses nothing:
        running the reshard again finishes it.
        """
        return reshard_store(Path(root).expanduser().resolve(), num_shards)

    # -- routing -------------------------------------------------------------

    def _revive_dead_shards(self) -> bool:
        """Start new actors for shards whose pinned node is gone; True if any was replaced.

        Only that case: an actor ended on purpose (close(), ray.kill) stays ended, so a copy of a
        closed store held elsewhere cannot bring its shards back behind the owner's back. Ray
        reports a lost node either as "unschedulable" or as a death whose message is not ray.kill's.
        """
        dead = []
        for i, actor in enumerate(self._actors):
            try:
                ray.get(actor.ping.remote(), timeout=60)
            except ray.exceptions.ActorUnschedulableError:
                dead.append(i)
            except ray.exceptions.RayActorError as e:
                if "ray.kill" not in str(e):  # lost with its node, not ended on purpose
                    dead.append(i)
            except ray.exceptions.GetTimeoutError:
                continue
        if not dead:
            return False
        logger.warning("shard(s) %s of %s lost their actor (node gone?); starting new ones", dead, self.root)
        for i in dead:
            try:
                ray.kill(self._actors[i], no_restart=True)
            except Exception:  # already dead
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            fresh = self._start_actors(
                self.root, len(self._actors), self._options, self._compact_bytes, only=dead
            )
            if all(fresh[i] is not None for i in dead):
                break
            time.sleep(0.2)
        for i in dead:
            self._actors[i] = fresh[i]
        return True

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

    def _scatter(self, items: Sequence, keys: Sequence[str], call: Callable, what: str) -> list:
        """Run `call(actor, batch)` on per-shard batches of `items` concurrently; results in input order."""
        actors = self.shard_actors
        jobs = []
        for shard, positions in self._by_shard(keys).items():
            for i in range(0, len(positions), BATCH):
                part = positions[i : i + BATCH]
                jobs.append((part, call(actors[shard], [items[p] for p in part])))
        out: list = [None] * len(items)
        for (part, _), values in zip(jobs, wait_shards([ref for _, ref in jobs], what), strict=True):
            for p, v in zip(part, values, strict=True):
                out[p] = v
        return out

    def _all(self, method: str, *args: Any, what: str, **kwargs: Any) -> list:
        """Call one method on every shard concurrently; results in shard order."""
        return wait_shards([getattr(a, method).remote(*args, **kwargs) for a in self.shard_actors], what)

    # -- public API ----------------------------------------------------------

    @_revives_shards
    def put(self, mask: TaskMask, *, overwrite: bool = False) -> bool:
        """Durably store a mask on the shard that owns its task; False if it was stored already.

        A put cut short by a shard crash is re-run on the restarted shard, and may then return False
        for a mask that this very call wrote before the crash.
        """
        validate_mask(mask)
        actor = self.shard_actors[self.layout.shard_of(mask.task_id)]
        return wait_shards(actor.put.remote(mask, overwrite), f"put {mask.task_id!r}")

    @_revives_shards
    def put_many(self, masks: Sequence[TaskMask], *, overwrite: bool = False) -> list[bool]:
        """Store many masks, each shard's share written concurrently; one bool per mask, in order."""
        masks = list(masks)
        for m in masks:
            validate_mask(m)
        return self._scatter(
            masks,
            [m.task_id for m in masks],
            lambda a, batch: a.put_many.remote(batch, overwrite),
            f"put_many of {len(masks)} masks",
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
        except MaskNotFoundError:
            missing = self.missing(ids)
            if not missing:
                raise
            raise MaskNotFoundError(
                f"{len(missing)} of {len(ids)} task ids have no mask in the store at {self.root}: "
                f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
            ) from None

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
        """Totals over the store, and each shard's MaskFile stats under "shards"."""
        shards = self._all("stats", what="stats")
        fingerprints: dict[str, int] = {}
        for s in shards:
            for fp, n in s["fingerprints"].items():
                fingerprints[fp] = fingerprints.get(fp, 0) + n
        totals = {
            k: sum(s[k] for s in shards) for k in ("count", "mask_bytes", "file_bytes", "journal_bytes")
        }
        return {
            "root": str(self.root),
            "num_shards": self.layout.num_shards,
            "num_partitions": self.layout.num_partitions,
            **totals,
            "fingerprints": dict(sorted(fingerprints.items())),
            "shards": [{"shard": i, **s} for i, s in enumerate(shards)],
        }

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
        if ids is None:
            parts = self._all("mask_sum", fp, what="mask_sum")
        else:
            ids = list(ids)
            refs = [
                self.shard_actors[shard].mask_sum.remote(fp, [ids[p] for p in positions])
                for shard, positions in self._by_shard(ids).items()
            ]
            parts = wait_shards(refs, f"mask_sum of {len(ids)} masks")
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
        if ids is None:
            parts = self._all("query_scores", ref, chunk, fp, what="query_scores")
        else:
            ids = list(ids)
            refs = [
                self.shard_actors[shard].query_scores.remote(ref, chunk, fp, [ids[p] for p in positions])
                for shard, positions in self._by_shard(ids).items()
            ]
            parts = wait_shards(refs, f"query_scores of {len(ids)} masks")
        out_ids = [t for part_ids, _ in parts for t in part_ids]
        values = [v for _, v in parts if len(v)]
        return out_ids, (np.concatenate(values) if values else np.zeros((0, num_queries)))

    @_revives_shards
    def scores(
        self, tensors: Sequence[np.ndarray], chunk: int = 64, fingerprint: str | None = None
    ) -> dict[str, float]:
        """sum over layers of <tensors[l], mask[l]> for every mask of one base, scored where the masks live."""
        fp = self._fingerprint(fingerprint)
        if fp is None:
            return {}
        ref = ray.put([np.asarray(t) for t in tensors])
        out: dict[str, float] = {}
        for part in self._all("scores", ref, chunk, fp, what="scores"):
            out.update(part)
        return out

    @_revives_shards
    def top_scores(
        self, tensors: Sequence[np.ndarray], k: int, chunk: int = 64, fingerprint: str | None = None
    ) -> list[tuple[str, float]]:
        """The k best (task id, score), best first: each shard sends only its own k best."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        fp = self._fingerprint(fingerprint)
        if fp is None:
            return []
        ref = ray.put([np.asarray(t) for t in tensors])
        parts = self._all("top_scores", ref, k, chunk, fp, what="top_scores")
        return best_scores((kv for part in parts for kv in part), k)

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
        for a in actors:
            ray.kill(a, no_restart=True)
        names = [shard_actor_name(self.root, i) for i in range(len(actors))]
        deadline = time.monotonic() + 10.0
        while names and time.monotonic() < deadline:  # let the next open() create fresh actors
            try:
                ray.get_actor(names[0], namespace=NAMESPACE)
                time.sleep(0.05)
            except ValueError:
                names.pop(0)

    def __enter__(self) -> MaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"{self.layout.num_shards} shards" if self._actors else "closed"
        return f"MaskStore({str(self.root)!r}, {state})"
