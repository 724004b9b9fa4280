"""The mask-bank answers of a mask file: per-weight mask sums and query scores over the masks of one base.

Task inference asks these of every shard (see `supermask.core.inference.mask_bank.MaskBank`). Only the
packed bits are read, each checked against its bits checksum, `chunk` masks at a time; the sum
over all of a base's masks is kept running in the index and built the first time it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from supermask.core.records.packing import (
    chunked_packed_dot,
    chunked_packed_sum,
    flatten_queries,
    query_count,
    split_layers,
)
from supermask.store.errors import CorruptMaskError
from supermask.store.index import Base, Entry, MaskIndex
from supermask.store.reader import MaskReader
from supermask.store.validation import num_weights

# (task id, fingerprint or None, what the mask is used for) -> its entry, or the error that says why not
CheckEntry = Callable[[str, str | None, str], Entry]


class FileBank:
    """Sums and scores over one base's masks in a mask file, from its index and reader."""

    def __init__(self, index: MaskIndex, reader: MaskReader, path: Path, check: CheckEntry) -> None:
        self._index, self._reader, self._path, self._check = index, reader, path, check

    def _chosen(self, fingerprint: str | None, ids: Iterable[str] | None) -> tuple[Base, list[str]] | None:
        """The base picked, and the ids of its masks to work through (all, or those asked for)."""
        picked = self._index.pick_base(fingerprint, self._path)
        if ids is not None:
            ids = list(ids)
            for tid in ids:
                self._check(tid, picked[0] if picked else fingerprint, "score or sum only masks of one base")
        if ids is None:
            self._refuse_damaged()
        if picked is None:
            return None
        fp, base = picked
        return base, self._index.masks_of(fp) if ids is None else ids

    def _refuse_damaged(self) -> None:
        """Raise if a record's metadata is damaged: its base is unknown, so "all masks" would silently skip it."""
        damaged = sorted(t for t, e in self._index.entries.items() if e.problem is not None)
        if damaged:
            entry = self._index.entries[damaged[0]]
            raise CorruptMaskError(
                f"{len(damaged)} records in {self._path} are damaged ({damaged[:10]}; the first: "
                f"{entry.problem}), so a sum or score over all its masks would leave them out. Delete them "
                "with delete(task_id) and learn those tasks again, or restore the file from a backup; "
                "`supermask store verify` lists every damaged record"
            )

    def _rows(self, ids: list[str]) -> np.ndarray:
        return np.stack([self._reader.packed(t, self._index.entries[t]) for t in ids])

    def _ensure_sums(self) -> None:
        if self._index.sums_ready:
            return
        for base in self._index.bases.values():
            base.running = None
        for fp in self._index.bases:
            for tid in self._index.masks_of(fp):
                self._index.add_bits(fp, self._reader.packed(tid, self._index.entries[tid]), +1)
        self._index.sums_ready = True

    def mask_sum(
        self, fingerprint: str | None, ids: Iterable[str] | None, chunk: int
    ) -> tuple[list[np.ndarray], int]:
        """(per-layer int32 count of masks keeping each weight, number of masks), one base (or these ids)."""
        chosen = self._chosen(fingerprint, ids)
        if chosen is None:
            return [], 0
        base, chosen_ids = chosen
        if ids is None:
            self._ensure_sums()
            return base.layer_sums(), base.count
        flat = chunked_packed_sum(chosen_ids, self._rows, num_weights(base.shapes), chunk)
        return split_layers(flat, list(base.shapes)), len(chosen_ids)

    def query_scores(
        self,
        queries: list[np.ndarray] | np.ndarray,
        chunk: int,
        fingerprint: str | None,
        ids: Iterable[str] | None,
    ) -> tuple[list[str], np.ndarray]:
        """(ids, (k, Q) scores): sum over layers of <queries[l][q], mask[l]>, `chunk` masks at a time."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        chosen = self._chosen(fingerprint, ids)
        if chosen is None:
            return [], np.zeros((0, query_count(queries)))
        base, chosen_ids = chosen
        flat = flatten_queries(queries, list(base.shapes))
        return chosen_ids, chunked_packed_dot(chosen_ids, self._rows, flat, chunk)
