"""The in-memory index of a mask file: where each mask lives, plus per-base shapes, counts and bit sums.

No mask bits are held here except one running int32 sum per base network
(built the first time it is needed), from which the mean mask for task
inference is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from supermask.core.packing import packed_dot
from supermask.store.validation import num_weights


@dataclass(frozen=True)
class Entry:
    """Where a mask lives (a snapshot group, or else a journal record at `offset`) and what it is."""

    checksum: str
    fingerprint: str
    layer_shapes: tuple[tuple[int, ...], ...]
    nbytes: int
    group: str | None = None
    offset: int = -1
    length: int = 0
    problem: str | None = None  # set when its metadata could not be read; such a mask is in no Base


@dataclass
class Base:
    """The masks of one base network: their shared layer shapes, how many, and their running bit sum."""

    shapes: tuple[tuple[int, ...], ...]
    count: int = 0
    bit_sum: np.ndarray | None = None  # int32, one per weight

    def layer_sums(self) -> list[np.ndarray]:
        """The bit sum split into per-layer int32 arrays (copies)."""
        flat = self.bit_sum if self.bit_sum is not None else np.zeros(num_weights(self.shapes), np.int32)
        out, start = [], 0
        for s in self.shapes:
            n = math.prod(s)
            out.append(flat[start : start + n].reshape(s).copy())
            start += n
        return out


class MaskIndex:
    """task id -> Entry, with per-fingerprint Base bookkeeping kept in step."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.bases: dict[str, Base] = {}
        self.sums_ready = False  # whether every Base.bit_sum is current

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, task_id: str) -> Entry | None:
        return self.entries.get(task_id)

    def set(self, task_id: str, entry: Entry) -> None:
        """Record where a mask lives (replacing any earlier entry)."""
        self.drop(task_id)
        self.entries[task_id] = entry
        if entry.problem is None:
            self.bases.setdefault(entry.fingerprint, Base(entry.layer_shapes)).count += 1

    def drop(self, task_id: str) -> None:
        """Forget a mask, if present."""
        old = self.entries.pop(task_id, None)
        if old is not None and old.problem is None:
            base = self.bases[old.fingerprint]
            base.count -= 1
            if base.count == 0:
                del self.bases[old.fingerprint]

    def add_bits(self, fingerprint: str, packed: np.ndarray, sign: int) -> None:
        """Add (sign=+1) or remove (-1) one mask's bits from its base's running sum."""
        base = self.bases.get(fingerprint)
        if base is None:
            return
        if base.bit_sum is None:
            base.bit_sum = np.zeros(num_weights(base.shapes), np.int32)
        bits = np.unpackbits(packed, count=base.bit_sum.size)
        if sign > 0:
            base.bit_sum += bits
        else:
            base.bit_sum -= bits

    def check_shapes(self, task_id: str, fingerprint: str, shapes: tuple[tuple[int, ...], ...]) -> None:
        """Raise ValueError if a mask's shapes differ from the other masks stored for its base."""
        base = self.bases.get(fingerprint)
        if base is None or base.shapes == shapes:
            return
        old = self.entries.get(task_id)
        if old is not None and old.fingerprint == fingerprint and base.count == 1:
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


def score_rows(rows: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """<flat, bits of row i> for every row of packed masks (k, nbytes); see `packed_dot`."""
    return packed_dot(rows, flat)
