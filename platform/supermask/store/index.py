"""The in-memory index of a mask file: where each record lives and what it is, plus per-base bookkeeping.

No mask bits are held here except one running sum per base network (built the
first time it is needed), from which the mean mask for task inference is read.
Only records of kind "mask" whose metadata checked out belong to a base.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from supermask.core.records.packing import RunningSum
from supermask.store.journal import KIND_PUT, Record, decode_put_meta
from supermask.store.records import KIND_MASK, RecordInfo, canonical_json, changed_fields
from supermask.store.snapshot import SnapshotEntry


@dataclass(frozen=True)
class Entry:
    """Where a record lives (a snapshot group, or else a journal record at `offset`) and what it is."""

    info: RecordInfo | None  # None when `problem` says why its metadata could not be used
    group: str | None = None
    offset: int = -1
    length: int = 0
    problem: str | None = None

    @property
    def is_mask(self) -> bool:
        """A readable record of kind "mask" (one that belongs to a base)."""
        return self.problem is None and self.info is not None and self.info.kind == KIND_MASK

    @classmethod
    def from_journal(cls, meta: dict, offset: int, length: int) -> Entry:
        """The entry of a journal put record, its index fields checked against their digests."""
        try:
            changed = changed_fields(meta, meta["parts"])
            info = RecordInfo.from_meta(meta, meta.get("packed_nbytes"))
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            return cls(None, None, offset, length, problem=f"unreadable metadata ({type(e).__name__}: {e})")
        if changed:
            problem = f"metadata changed since it was written: {', '.join(changed)}"
            return cls(None, None, offset, length, problem=problem)
        return cls(info, None, offset, length)

    def in_snapshot(self, group: str) -> Entry:
        """This entry after compaction moved its record into the snapshot group `group`."""
        return replace(self, group=group, offset=-1, length=0)


@dataclass
class Base:
    """The masks of one base network: their shared layer shapes, how many, and their running bit sum."""

    shapes: tuple[tuple[int, ...], ...]
    count: int = 0
    running: RunningSum | None = None  # built on first use

    def layer_sums(self) -> list[np.ndarray]:
        """The running sum as per-layer int32 arrays (copies)."""
        return (self.running or RunningSum(list(self.shapes))).layers()


class MaskIndex:
    """task id -> Entry, with per-fingerprint Base bookkeeping kept in step."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.bases: dict[str, Base] = {}
        self.sums_ready = False  # whether every Base.running is current
        self._provenance: dict[str, dict] = {}  # one copy of each distinct provenance

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, task_id: str) -> Entry | None:
        return self.entries.get(task_id)

    def set(self, task_id: str, entry: Entry) -> None:
        """Record where a record lives (replacing any earlier entry)."""
        self.drop(task_id)
        if entry.info is not None:  # thousands of masks of one run share one provenance
            key = canonical_json(entry.info.provenance)
            entry = replace(
                entry,
                info=replace(entry.info, provenance=self._provenance.setdefault(key, entry.info.provenance)),
            )
        self.entries[task_id] = entry
        if entry.is_mask:
            self.bases.setdefault(entry.info.fingerprint, Base(entry.info.layer_shapes)).count += 1

    def load(self, snapshot: dict[str, SnapshotEntry], journal: Iterable[tuple[Record, memoryview]]) -> None:
        """Fill the index from a snapshot's entries, then replay a journal's puts and deletes over them."""
        for tid, e in snapshot.items():
            self.set(tid, Entry(e.info, e.group, problem=e.problem))
        for rec, payload in journal:
            if rec.kind == KIND_PUT:
                meta = decode_put_meta(payload)
                self.set(meta["task_id"], Entry.from_journal(meta, rec.offset, rec.length))
            else:
                self.drop(bytes(payload).decode())

    def drop(self, task_id: str) -> None:
        """Forget a record, if present."""
        old = self.entries.pop(task_id, None)
        if old is not None and old.is_mask:
            base = self.bases[old.info.fingerprint]
            base.count -= 1
            if base.count == 0:
                del self.bases[old.info.fingerprint]

    def masks_of(self, fingerprint: str) -> list[str]:
        """The ids of the readable masks of one base, sorted."""
        return sorted(t for t, e in self.entries.items() if e.is_mask and e.info.fingerprint == fingerprint)

    def add_bits(self, fingerprint: str, packed: np.ndarray, sign: int) -> None:
        """Add (sign=+1) or remove (-1) one mask's bits from its base's running sum."""
        base = self.bases.get(fingerprint)
        if base is None:
            return
        if base.running is None:
            base.running = RunningSum(list(base.shapes))
        if sign > 0:
            base.running.add(packed)
        else:
            base.running.remove(packed)

    def check_shapes(self, task_id: str, fingerprint: str, shapes: tuple[tuple[int, ...], ...]) -> None:
        """Raise ValueError if a mask's shapes differ from the other masks stored for its base."""
        base = self.bases.get(fingerprint)
        if base is None or base.shapes == shapes:
            return
        old = self.entries.get(task_id)
        if old is not None and old.is_mask and old.info.fingerprint == fingerprint and base.count == 1:
            return  # replacing the only mask of this base
        raise ValueError(
            f"mask {task_id!r} has layer shapes {list(shapes)}, but the {base.count} masks stored for base "
            f"{fingerprint} have {list(base.shapes)}; masks learned on one base share its shapes: "
            "check base_fingerprint"
        )

    def pick_base(self, fingerprint: str | None, where: object) -> tuple[str, Base] | None:
        """The base asked for, or the only one held; None if there is none."""
        if fingerprint is None:
            if len(self.bases) > 1:
                raise ValueError(
                    f"{where} holds masks learned on {len(self.bases)} bases "
                    f"({', '.join(sorted(self.bases))}); pass fingerprint= to choose one"
                )
            fingerprint = next(iter(self.bases), None)
        base = self.bases.get(fingerprint) if fingerprint is not None else None
        return (fingerprint, base) if base is not None else None
