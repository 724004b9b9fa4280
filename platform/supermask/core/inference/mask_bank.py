"""Mask banks: where task inference finds the masks it scores.

A bank answers two questions about the masks of one base: their per-weight sum (for the mean mask of
the superposition) and the inner products of query tensors with every mask (`query_scores`). The
store's `MaskFile` and the Ray `MaskStore` are banks that answer next to their files; `PackedMasks`
here is the in-memory one, for notebooks, tests and the NNs learner: it keeps k masks packed (one bit
per weight) plus one int32 running sum, so k masks cost k * weights / 8 bytes and a base-sized constant.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from supermask.core.records.packing import (
    RunningSum,
    TaskMask,
    chunked_packed_dot,
    chunked_packed_sum,
    flatten_queries,
    query_count,
)


class MaskBank(Protocol):
    """What task inference needs from a collection of masks (MaskFile, MaskStore and PackedMasks have it)."""

    def get(self, task_id: str, *, fingerprint: str | None = None) -> TaskMask: ...

    def mask_sum(
        self, fingerprint: str | None = None, *, ids: Iterable[str] | None = None
    ) -> tuple[list[np.ndarray], int]: ...

    def query_scores(
        self,
        queries: list[np.ndarray] | np.ndarray,
        chunk: int = 64,
        *,
        fingerprint: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> tuple[list[str], np.ndarray]: ...


class PackedMasks:
    """An in-memory mask bank for one base: masks kept packed, with a running per-weight sum."""

    def __init__(self, masks: Iterable[TaskMask] = ()) -> None:
        self._masks: dict[str, TaskMask] = {}
        self.fingerprint: str | None = None
        self.shapes: list[tuple[int, ...]] | None = None
        self._sum: RunningSum | None = None
        for mask in masks:
            self.put(mask)

    def __len__(self) -> int:
        return len(self._masks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._masks

    @property
    def mask_bytes(self) -> int:
        """Bytes of packed mask bits held."""
        return sum(m.packed.nbytes for m in self._masks.values())

    def list(self) -> list[str]:
        """Every task id held, sorted."""
        return sorted(self._masks)

    def put(self, mask: TaskMask, *, overwrite: bool = False) -> None:
        """Add a mask (or replace one with overwrite=True); every mask must share one base."""
        shapes = [tuple(int(d) for d in s) for s in mask.layer_shapes]
        if self.fingerprint is None:
            self.fingerprint, self.shapes = mask.base_fingerprint, shapes
            self._sum = RunningSum(shapes)
        elif mask.base_fingerprint != self.fingerprint or shapes != self.shapes:
            raise ValueError(
                f"mask {mask.task_id!r} was learned on base {mask.base_fingerprint} {shapes}, but this bank "
                f"holds masks of base {self.fingerprint} {self.shapes}; keep one bank per base"
            )
        old = self._masks.get(mask.task_id)
        if old is not None:
            if not overwrite:
                raise ValueError(
                    f"the bank already holds task {mask.task_id!r}; pass overwrite=True to replace it"
                )
            self._sum.remove(old.packed)
        self._masks[mask.task_id] = mask
        self._sum.add(mask.packed)

    def delete(self, task_id: str) -> bool:
        """Drop a mask; False if there was none."""
        old = self._masks.pop(task_id, None)
        if old is None:
            return False
        self._sum.remove(old.packed)
        return True

    def get(self, task_id: str, *, fingerprint: str | None = None) -> TaskMask:
        """The mask of one task (checked against `fingerprint` when given)."""
        self._check(fingerprint)
        try:
            return self._masks[task_id]
        except KeyError:
            raise KeyError(f"no mask for task {task_id!r} in this bank of {len(self)} masks") from None

    def _check(self, fingerprint: str | None) -> None:
        if fingerprint is not None and self.fingerprint is not None and fingerprint != self.fingerprint:
            raise ValueError(
                f"this bank holds masks of base {self.fingerprint}, not {fingerprint}; "
                "rebuild the base the masks were learned on"
            )

    def _chosen(self, ids: Iterable[str] | None) -> list[str]:
        if ids is None:
            return self.list()
        ids = list(ids)
        missing = [t for t in ids if t not in self._masks]
        if missing:
            raise KeyError(f"no mask for task(s) {missing[:10]} in this bank of {len(self)} masks")
        return ids

    def mask_sum(
        self, fingerprint: str | None = None, *, ids: Iterable[str] | None = None, chunk: int = 64
    ) -> tuple[list[np.ndarray], int]:
        """(per-layer int32 count of masks keeping each weight, number of masks), over all or `ids`."""
        self._check(fingerprint)
        if self._sum is None:
            return [], 0
        if ids is None:
            return self._sum.layers(), len(self)
        chosen = self._chosen(ids)
        subset = RunningSum(self.shapes)
        subset.counts = chunked_packed_sum(chosen, self._rows, subset.counts.size, chunk)
        return subset.layers(), len(chosen)

    def _rows(self, ids: list[str]) -> np.ndarray:
        return np.stack([self._masks[t].packed for t in ids])

    def query_scores(
        self,
        queries: list[np.ndarray] | np.ndarray,
        chunk: int = 64,
        *,
        fingerprint: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """(ids, (k, Q) scores): sum over layers of <queries[l][q], mask[l]>, `chunk` masks unpacked at a time."""
        self._check(fingerprint)
        chosen = self._chosen(ids)
        if self.shapes is None:
            return [], np.zeros((0, query_count(queries)))
        return chosen, chunked_packed_dot(chosen, self._rows, flatten_queries(queries, self.shapes), chunk)
