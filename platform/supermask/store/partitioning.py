"""Which shard owns a task: a stable hash of the id onto fixed virtual partitions, partitions onto shards.

A store at ROOT keeps its layout in ROOT/store.json and shard i's masks in
ROOT/shard-00i.h5 (plus its journal, ROOT/shard-00i.h5.wal). Partitions, never
single tasks, move between shards, so resharding touches as few masks as it can.

store.json also records a reshard in progress (`supermask.store.reshard`):
`"pending": {"phase": "copy" | "delete", "layout": ...}`. While one is pending
the store must not be opened; running the reshard again finishes it.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from supermask.core.files import atomic_write
from supermask.store.errors import MaskFileError

NUM_PARTITIONS = 256
LAYOUT_FILE = "store.json"
LAYOUT_VERSION = 1

logger = logging.getLogger(__name__)


class StoreLayoutError(MaskFileError, ValueError):
    """A store layout (store.json, or the numbers asked for) that cannot be used as it is."""


def partition_of(task_id: str, num_partitions: int = NUM_PARTITIONS) -> int:
    """The virtual partition of a task id: blake2b of its UTF-8 bytes, the same in every process."""
    if not isinstance(task_id, str):
        raise TypeError(f"a task id is a str, got {type(task_id).__name__} {task_id!r}")
    digest = hashlib.blake2b(task_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_partitions


def shard_path(root: str | os.PathLike[str], shard: int) -> Path:
    """The HDF5 file of one shard of the store at `root`."""
    return Path(root) / f"shard-{shard:03d}.h5"


@dataclass(frozen=True)
class StoreLayout:
    """How a store's partitions map onto its shards: assignment[p] is the shard that owns partition p."""

    num_partitions: int
    num_shards: int
    assignment: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.num_shards <= self.num_partitions:
            raise StoreLayoutError(
                f"num_shards must be between 1 and num_partitions ({self.num_partitions}), got {self.num_shards}"
            )
        if len(self.assignment) != self.num_partitions:
            raise StoreLayoutError(
                f"assignment has {len(self.assignment)} entries but there are {self.num_partitions} partitions"
            )
        bad = [s for s in self.assignment if not (isinstance(s, int) and 0 <= s < self.num_shards)]
        if bad:
            raise StoreLayoutError(f"assignment names shards {bad[:5]} outside 0..{self.num_shards - 1}")
        empty = sorted(set(range(self.num_shards)) - set(self.assignment))
        if empty:
            raise StoreLayoutError(f"shards {empty[:5]} own no partition; every shard needs at least one")

    @classmethod
    def initial(cls, num_shards: int, num_partitions: int = NUM_PARTITIONS) -> StoreLayout:
        """A fresh layout: partition p on shard p % num_shards."""
        if not 1 <= num_shards <= num_partitions:
            raise StoreLayoutError(
                f"num_shards must be between 1 and num_partitions ({num_partitions}), got {num_shards}"
            )
        return cls(num_partitions, num_shards, tuple(p % num_shards for p in range(num_partitions)))

    def shard_of(self, task_id: str) -> int:
        """The shard that owns a task id."""
        return self.assignment[partition_of(task_id, self.num_partitions)]

    def partitions_of(self, shard: int) -> list[int]:
        """The partitions a shard owns."""
        return [p for p, s in enumerate(self.assignment) if s == shard]

    def loads(self) -> list[int]:
        """How many partitions each shard owns."""
        counts = [0] * self.num_shards
        for s in self.assignment:
            counts[s] += 1
        return counts

    def reshard(self, new_num_shards: int) -> StoreLayout:
        """A layout over `new_num_shards` shards, evenly loaded, moving as few whole partitions as possible."""
        n, total = new_num_shards, self.num_partitions
        if not 1 <= n <= total:
            raise StoreLayoutError(f"cannot spread {total} partitions over {n} shards: use 1..{total}")
        load = [0] * n
        for s in self.assignment:
            if s < n:
                load[s] += 1
        # Fair shares differ by at most one; the larger ones go to the shards that hold most already.
        base, extra = divmod(total, n)
        by_load = sorted(range(n), key=lambda s: (-load[s], s))
        quota = [base] * n
        for s in by_load[:extra]:
            quota[s] += 1
        kept = [0] * n
        assignment: list[int] = list(self.assignment)
        homeless = []
        for p, s in enumerate(self.assignment):
            if s < n and kept[s] < quota[s]:
                kept[s] += 1
            else:
                homeless.append(p)
        heap = [(kept[s], s) for s in range(n) if kept[s] < quota[s]]
        heapq.heapify(heap)
        for p in homeless:  # to the least-loaded shard with room
            count, s = heapq.heappop(heap)
            assignment[p] = s
            if count + 1 < quota[s]:
                heapq.heappush(heap, (count + 1, s))
        return StoreLayout(total, n, tuple(assignment))

    def to_json(self) -> dict:
        """A JSON-ready dict of this layout."""
        return {
            "num_partitions": self.num_partitions,
            "num_shards": self.num_shards,
            "assignment": list(self.assignment),
        }

    @classmethod
    def from_json(cls, data: dict) -> StoreLayout:
        """The layout `to_json` wrote (StoreLayoutError if it is malformed)."""
        try:
            return cls(int(data["num_partitions"]), int(data["num_shards"]), tuple(data["assignment"]))
        except (KeyError, TypeError, ValueError) as e:
            raise StoreLayoutError(f"not a store layout ({type(e).__name__}: {e})") from e


def moved_partitions(old: StoreLayout, new: StoreLayout) -> list[int]:
    """The partitions whose shard differs between two layouts of the same partitions."""
    if old.num_partitions != new.num_partitions:
        raise StoreLayoutError(
            f"layouts over {old.num_partitions} and {new.num_partitions} partitions cannot be compared"
        )
    return [p for p, (a, b) in enumerate(zip(old.assignment, new.assignment, strict=True)) if a != b]


@dataclass(frozen=True)
class StoreState:
    """What store.json holds: the layout in force, and a reshard in progress if one was cut short."""

    layout: StoreLayout
    pending_phase: str | None = None  # "copy": masks being copied to `pending_layout`; "delete": old copies
    pending_layout: StoreLayout | None = None  # the target (phase "copy") or the layout before it ("delete")


def layout_file(root: str | os.PathLike[str]) -> Path:
    """The store.json of the store at `root`."""
    return Path(root) / LAYOUT_FILE


def write_state(root: str | os.PathLike[str], state: StoreState) -> None:
    """Replace store.json atomically (see `supermask.core.files.atomic_write`)."""
    path = layout_file(root)
    data: dict = {"version": LAYOUT_VERSION, **state.layout.to_json()}
    if state.pending_phase is not None:
        assert state.pending_layout is not None
        data["pending"] = {"phase": state.pending_phase, "layout": state.pending_layout.to_json()}
    atomic_write(path, json.dumps(data).encode())


def read_state(root: str | os.PathLike[str]) -> StoreState | None:
    """The store.json of the store at `root`; None if there is none; StoreLayoutError naming it if corrupt."""
    path = layout_file(root)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != LAYOUT_VERSION:
            raise ValueError(f"expected a JSON object with version {LAYOUT_VERSION}")
        layout = StoreLayout.from_json(data)
        pending = data.get("pending")
        if pending is None:
            return StoreState(layout)
        if pending.get("phase") not in ("copy", "delete"):
            raise ValueError(f"unknown pending phase {pending.get('phase')!r}")
        return StoreState(layout, pending["phase"], StoreLayout.from_json(pending["layout"]))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise StoreLayoutError(
            f"store layout {path} is corrupt ({e}); the shard files next to it are untouched. Restore "
            f"{path} from a backup (it maps hash partitions of task ids onto the shard files), or move "
            "the shard files aside, open a new store and import them with MaskFile.import_from"
        ) from e


DEFAULT_SHARDS = 2  # shards of a store a run creates (`run.shards`), or a migration


def open_layout(root: Path, num_shards: int | None = None) -> StoreLayout:
    """The layout of the store at `root` for opening it, written first if there is no store yet.

    StoreLayoutError if a reshard was cut short, or if `num_shards` differs from the store's.
    """
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
        logger.info("created a store at %s with %d shard(s)", root, state.layout.num_shards)
    if state.pending_phase is not None:
        target = state.pending_layout if state.pending_phase == "copy" else state.layout
        raise StoreLayoutError(
            f"a reshard of {root} to {target.num_shards} shards was cut short; nothing is lost: "
            f"finish it with `supermask store reshard {root} {target.num_shards}`, then open the store"
        )
    if num_shards is not None and num_shards != state.layout.num_shards:
        raise StoreLayoutError(
            f"{root} has {state.layout.num_shards} shards, not {num_shards}: to change that, close every "
            f"MaskStore on it and run `supermask store reshard {root} {num_shards}` (or open it with "
            "num_shards=None to use it as it is)"
        )
    return state.layout
