"""What a store holds (`store.kind`) and how its Hopfield reservoirs are laid out on disk.

A store folder ROOT may hold exact masks (store.json, shard-00i.h5: `store.partitioning`), reservoirs
(reservoir.json, reservoir-00i.npz: `store.reservoir_file`) or both. A task id goes to reservoir
`assignment[blake2b(id) mod 256]` of the initial layout of R shards, the same stable hash as the mask
shards. Unlike mask shards, reservoirs are never resharded: a pattern cannot be taken out of one
matrix and put into another. Total capacity grows with R; each reservoir stays the same size.

reservoir.json records the settings every reservoir of the store was made with (shards, rule,
dtype, layer sizes, base fingerprint); opening the store with other settings is an error that names
the spec field, the stored value and the two ways out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from supermask.core.fields import choices, in_range
from supermask.core.files import atomic_write
from supermask.core.hopfield.reservoir import DTYPES, RULES
from supermask.store.errors import MaskFileError
from supermask.store.partitioning import NUM_PARTITIONS, StoreLayout

STORE_KINDS = ("masks", "reservoir", "both")
RESERVOIR_LAYOUT_FILE = "reservoir.json"
RESERVOIR_LAYOUT_VERSION = 1


@dataclass(frozen=True)
class ReservoirSpec:
    """The Hopfield reservoirs of a store: `store.reservoir` in a task spec.

    Each reservoir holds one d x d matrix per hidden layer of the base (d: that layer's neurons), so
    its size follows from the base; `shards` reservoirs share the tasks by the stable hash of their ids.
    """

    rule: str = field(default="storkey", metadata=choices(*RULES))
    dtype: str = field(default="fp32", metadata=choices(*DTYPES))
    shards: int = field(default=1, metadata=in_range(1, NUM_PARTITIONS))
    compact_bytes: int = field(default=2**20, metadata=in_range(1))  # journal bytes before a snapshot


@dataclass(frozen=True)
class StoreSpec:
    """What a run keeps of each task: `masks` (exact, bit-packed), a `reservoir`, or `both`."""

    kind: str = field(default="masks", metadata=choices(*STORE_KINDS))
    reservoir: ReservoirSpec = field(default_factory=ReservoirSpec)

    @property
    def has_masks(self) -> bool:
        return self.kind in ("masks", "both")

    @property
    def has_reservoir(self) -> bool:
        return self.kind in ("reservoir", "both")


@dataclass(frozen=True)
class ReservoirLayout:
    """The reservoirs of a store: how many, their settings, and which one owns a task."""

    num_shards: int
    rule: str
    dtype: str
    dims: tuple[int, ...]
    fingerprint: str

    def shard_of(self, task_id: str) -> int:
        """The reservoir that owns a task id (the mask store's stable hash over 256 partitions)."""
        return StoreLayout.initial(self.num_shards).shard_of(task_id)

    def to_dict(self) -> dict:
        return {
            "version": RESERVOIR_LAYOUT_VERSION,
            "num_shards": self.num_shards,
            "rule": self.rule,
            "dtype": self.dtype,
            "dims": list(self.dims),
            "fingerprint": self.fingerprint,
        }


def reservoir_path(root: str | os.PathLike[str], shard: int) -> Path:
    """The snapshot file of one reservoir of the store at `root` (its journal adds `.wal`)."""
    return Path(root) / f"reservoir-{shard:03d}.npz"


def read_reservoir_layout(root: str | os.PathLike[str]) -> ReservoirLayout | None:
    """The reservoir layout of the store at `root`, or None if it has no reservoirs."""
    path = Path(root) / RESERVOIR_LAYOUT_FILE
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        if d.get("version") != RESERVOIR_LAYOUT_VERSION:
            raise ValueError(f"version {d.get('version')!r}, expected {RESERVOIR_LAYOUT_VERSION}")
        return ReservoirLayout(
            int(d["num_shards"]), d["rule"], d["dtype"], tuple(d["dims"]), d["fingerprint"]
        )
    except (ValueError, KeyError, TypeError) as e:
        raise MaskFileError(
            f"{path} is not a readable reservoir layout ({e}); restore it from a backup"
        ) from None


def open_reservoir_layout(root: str | os.PathLike[str], wanted: ReservoirLayout) -> ReservoirLayout:
    """The store's reservoir layout: `wanted`, written if the store has none; an error if it differs."""
    root = Path(root)
    have = read_reservoir_layout(root)
    if have is None:
        atomic_write(root / RESERVOIR_LAYOUT_FILE, (json.dumps(wanted.to_dict(), indent=1) + "\n").encode())
        return wanted
    fields = {
        "num_shards": "store.reservoir.shards",
        "rule": "store.reservoir.rule",
        "dtype": "store.reservoir.dtype",
    }
    fields.update({"dims": "the base's hidden layer sizes", "fingerprint": "the base (its fingerprint)"})
    differ = [
        f"{name}: stored {getattr(have, k)!r}, this run {getattr(wanted, k)!r}"
        for k, name in fields.items()
        if getattr(have, k) != getattr(wanted, k)
    ]
    if differ:
        raise MaskFileError(
            f"the reservoirs at {root} were made with other settings ({'; '.join(differ)}). Nothing was "
            "changed. Run with the settings they were made with, or write this run to another folder (--out)"
        )
    return have
