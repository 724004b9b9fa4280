"""MaskFile: one shard's durable store of records (masks; trained weights and translation tasks too, see
`store.array_records`), safe against `kill -9` at any moment.

Files, for a store at PATH (e.g. shard-000.h5):

- PATH: an HDF5 snapshot (layout in `supermask.store.snapshot`), never modified
  in place. It is only replaced whole (`supermask.core.files.atomic_write`), so
  anyone, at any moment, sees the old snapshot or the new one, never a mixture.
- PATH.wal: an append-only journal of put and delete records (format in
  `supermask.store.journal`). put() and delete() append one record and fsync it
  before returning, so every acknowledged write survives a crash.

On open, a stale temporary snapshot (a compaction cut short) is deleted and the
journal is replayed over the snapshot's index. A torn tail record (an append that
never returned) is cut away with a warning; a damaged record before the tail
raises `CorruptJournalError` naming the file and offset, and nothing is changed.

Compaction (when the journal passes `compact_bytes`, on compact() and on close())
writes every live record to a new snapshot as above and only then empties the
journal. A crash between the two leaves records the new snapshot already holds;
replaying them again is harmless because put and delete records are idempotent.

Every record carries a checksum over all of it, re-checked whenever it is read
whole (get, export, import, compaction), and a checksum of its bits, checked by
the reads that need only the bits (sums, scores); see `supermask.store.records`.
The index keeps where each record lives and its small metadata (`describe()`),
never the masks themselves. One writer process owns a store (an advisory lock on
the journal enforces it); a MaskFile is not thread-safe.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from supermask.core.records.packing import TaskMask
from supermask.core.records.weights import TaskWeights
from supermask.store import transfer
from supermask.store.array_records import Record, encode_array_put, kind_of, stored_form
from supermask.store.bank import FileBank
from supermask.store.errors import (
    CorruptMaskError,
    FingerprintMismatchError,
    MaskExistsError,
    MaskFileError,
    MaskNotFoundError,
)
from supermask.store.index import Entry, MaskIndex
from supermask.store.journal import FILE_MAGIC, KIND_DELETE, KIND_PUT, encode_put
from supermask.store.reader import MaskReader
from supermask.store.records import (
    KIND_MASK,
    KIND_TRANSLATION,
    KIND_WEIGHTS,
    RecordInfo,
    describe_unreadable,
    mask_meta,
    provenance_key,
)
from supermask.store.shard_file import ShardFile, VerifyReport
from supermask.store.snapshot import group_name, open_snapshot, read_entries, write_snapshot
from supermask.store.validation import validate_mask, validate_record

__all__ = ["MaskFile", "VerifyReport", "validate_mask"]

# What a record of each kind is, how it relates to its base, and what the base check protects.
_ON_BASE = {
    KIND_MASK: ("mask", "was learned on"),
    KIND_WEIGHTS: ("weights", "were trained from"),
    KIND_TRANSLATION: ("translation record", "was learned on"),
}
_USE = {
    KIND_MASK: "a mask is only meaningful on its own base, so the base spec (arch, seed, init, shapes) must "
    "match the one used to learn it",
    KIND_WEIGHTS: "evaluate them with the base spec they were trained from",
    KIND_TRANSLATION: "its masks only mean something over the frozen generators they were learned on",
}

logger = logging.getLogger(__name__)


class MaskFile(ShardFile):
    """One shard's durable mask store: an HDF5 snapshot plus an fsync'ed journal, owned by one writer."""

    kind = "masks"

    def __init__(self, path: str | os.PathLike[str], *, compact_bytes: int = 64 * 2**20) -> None:
        if compact_bytes <= 0:
            raise ValueError(f"compact_bytes must be positive, got {compact_bytes}")
        path = Path(path)
        self.compact_bytes = compact_bytes
        self._next_compact = compact_bytes  # journal record bytes beyond which to compact
        self._index = MaskIndex()
        self._reader: MaskReader | None = None
        if path.exists():
            open_snapshot(path).close()  # refuse a foreign or old file before touching anything
        super().__init__(path, FILE_MAGIC)
        self._reader = MaskReader(self.path, self._journal)
        self._bank = FileBank(self._index, self._reader, self.path, self._mask_entry)
        try:
            self._load_index()
        except BaseException:
            self._release()
            raise

    def _load_index(self) -> None:
        self._remove_stale_temporaries()
        if not self.path.exists():
            if self._journal.record_bytes:
                logger.warning(
                    "snapshot %s is missing; rebuilding the store from its journal alone", self.path
                )
            write_snapshot(self.path, [])
        self._reader.snap = open_snapshot(self.path)
        self._index.load(read_entries(self._reader.snap), self._journal.replay())
        self._maybe_compact()

    def _entry(self, task_id: str) -> Entry:
        self._check_open()
        entry = self._index.get(task_id)
        if entry is None:
            raise MaskNotFoundError(
                f"no mask for task {task_id!r} in {self.path} (it holds {len(self._index)} masks)"
            )
        return entry

    def _kind_entry(self, task_id: str, kind: str, fingerprint: str | None, use: str) -> Entry:
        """The entry of a record of kind `kind` (never another), checked against the base it will be used on."""
        entry = self._entry(task_id)
        self._reader.check_kind(task_id, entry, kind)
        if fingerprint is not None and entry.info is not None and fingerprint != entry.info.fingerprint:
            what, verb = _ON_BASE[kind]
            raise FingerprintMismatchError(
                f"{what} {task_id!r} in {self.path} {verb} base {entry.info.fingerprint}, not {fingerprint}: {use}"
            )
        return entry

    def _mask_entry(self, task_id: str, fingerprint: str | None, use: str) -> Entry:
        return self._kind_entry(task_id, KIND_MASK, fingerprint, use)

    def get_kind_many(self, ids: Iterable[str], kind: str, fingerprint: str | None = None) -> list[Record]:
        """The verified records of kind `kind` of these tasks, in order (WrongKindError for another kind)."""
        self._check_open()
        ids = list(ids)
        missing = [t for t in ids if t not in self._index]
        if missing:
            raise MaskNotFoundError(
                f"{len(missing)} of {len(ids)} task ids have no record in {self.path} (it holds "
                f"{len(self._index)} records): {missing[:10]}{' ...' if len(missing) > 10 else ''}"
            )
        use = _USE[kind]
        return [self._reader.load(t, self._kind_entry(t, kind, fingerprint, use), kind) for t in ids]

    # -- reading and writing masks -------------------------------------------

    def get(self, task_id: str, *, fingerprint: str | None = None) -> TaskMask:
        """The verified mask of one task, optionally checked against the base it will be used on."""
        return self._reader.load(task_id, self._mask_entry(task_id, fingerprint, _USE[KIND_MASK]))

    def get_many(self, ids: Iterable[str], *, fingerprint: str | None = None) -> list[TaskMask]:
        """The verified masks of these tasks, in order."""
        return self.get_kind_many(ids, KIND_MASK, fingerprint)

    def get_weights(self, task_id: str, *, fingerprint: str | None = None) -> TaskWeights:
        """The verified trained-weights record of one task (WrongKindError if it holds a mask)."""
        entry = self._kind_entry(task_id, KIND_WEIGHTS, fingerprint, _USE[KIND_WEIGHTS])
        return self._reader.load(task_id, entry, KIND_WEIGHTS)

    def get_weights_many(self, ids: Iterable[str], *, fingerprint: str | None = None) -> list[TaskWeights]:
        """The verified trained-weights records of these tasks, in order."""
        return self.get_kind_many(ids, KIND_WEIGHTS, fingerprint)

    def get_record(self, task_id: str) -> Record:
        """The verified record of one task, whatever its kind (for moving records between files)."""
        return self._reader.load(task_id, self._entry(task_id), kind=None)

    def put(self, mask: Record, *, overwrite: bool = False) -> bool:
        """Durably store a record (mask, trained weights, translation); False if this exact record is stored."""
        self._check_open()
        validate_record(mask)
        written = self.put_validated(mask, overwrite=overwrite, sync=True)
        self._maybe_compact()
        return written

    def put_validated(self, mask: Record, *, overwrite: bool, sync: bool) -> bool:
        """put() of a record already validated; with sync=False the caller fsyncs (see `sync`)."""
        journal = self._check_open()
        tid, fp, csum = mask.task_id, mask.base_fingerprint, mask.checksum
        kind = kind_of(mask)
        old = self._index.get(tid)
        if old is not None and old.problem is None and old.info.kind == kind and old.info.checksum == csum:
            return False
        if old is not None and not overwrite:
            was = f"checksum {old.info.checksum}, base {old.info.fingerprint}" if old.info else old.problem
            raise MaskExistsError(
                f"{self.path} already holds a different record for task {tid!r} ({was}; new: {csum}, base "
                f"{fp}); pass overwrite=True to replace it"
            )
        if kind == KIND_MASK:
            self._index.check_shapes(tid, fp, tuple(tuple(int(d) for d in s) for s in mask.layer_shapes))
        old_packed = self._packed_for_sums(tid, old)
        if kind == KIND_MASK:
            meta = mask_meta(mask, checksum=csum)
            payload, nbytes = encode_put(mask, meta), mask.packed.size
        else:
            arrays, meta = stored_form(mask)
            payload, nbytes = encode_array_put(arrays, meta), None
        rec = journal.append(KIND_PUT, payload, sync=sync)
        if old_packed is not None:
            self._index.add_bits(old.info.fingerprint, old_packed, -1)
        self._index.set(tid, Entry(RecordInfo.from_meta(meta, nbytes), None, rec.offset, rec.length))
        if self._index.sums_ready and kind == KIND_MASK:
            self._index.add_bits(fp, mask.packed, +1)
        return True

    def sync(self) -> None:
        """fsync the journal (after put_validated(..., sync=False))."""
        self._check_open().sync()

    def _packed_for_sums(self, tid: str, entry: Entry | None) -> np.ndarray | None:
        """The bits to take out of the running sums when `entry` is replaced or deleted."""
        if not self._index.sums_ready or entry is None or not entry.is_mask:
            return None
        try:
            return self._reader.packed(tid, entry)
        except CorruptMaskError:
            self._index.sums_ready = False  # rebuilt from what is left when next needed
            return None

    def delete(self, task_id: str) -> bool:
        """Durably remove a task's record; False if there was none."""
        journal = self._check_open()
        old = self._index.get(task_id)
        if old is None:
            return False
        old_packed = self._packed_for_sums(task_id, old)
        journal.append(KIND_DELETE, task_id.encode())
        if old_packed is not None:
            self._index.add_bits(old.info.fingerprint, old_packed, -1)
        self._index.drop(task_id)
        self._maybe_compact()
        return True

    # -- what is stored ------------------------------------------------------

    def list(self) -> list[str]:
        """Every stored task id, sorted."""
        self._check_open()
        return sorted(self._index.entries)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def describe(self, ids: Iterable[str] | None = None) -> dict[str, dict]:
        """task id -> the record's metadata, from the index alone (no arrays are read): every id, or `ids`.

        Keys: kind, base_fingerprint, provenance, density, layer_density, mask_bytes, stored_bytes,
        created, checksum; a trained-weights record adds method, dtype, sparsity, dense_bytes and
        layer_formats, a translation record its method (for both, mask_bytes is None; a translation
        record's density too). Every value was checked against the digest written with it when the file
        was opened; a record whose metadata is damaged has None values and a "problem" saying what.
        """
        self._check_open()
        chosen = self.list() if ids is None else list(ids)
        out = {}
        for tid in chosen:
            entry = self._entry(tid)
            out[tid] = describe_unreadable(entry.problem) if entry.info is None else entry.info.describe()
        return out

    def stats(self) -> dict:
        """Counts and sizes: records, mask bytes, file bytes, and records per base, kind and provenance."""
        journal = self._check_open()
        infos = [e.info for e in self._index.entries.values()]
        weights = [i for i in infos if i is not None and i.kind == KIND_WEIGHTS]
        return {
            "path": str(self.path),
            "count": len(self._index),
            "mask_bytes": sum(i.nbytes for i in infos if i is not None and i.kind == KIND_MASK),
            # trained weights: as stored (sparse formats where they pay), and as dense values would take
            "weights_bytes": sum(i.nbytes for i in weights),
            "weights_dense_bytes": sum(i.extra["dense_bytes"] for i in weights),
            "weights_methods": dict(
                sorted(Counter(f"{i.extra['method']} {i.extra['dtype']}" for i in weights).items())
            ),
            "file_bytes": self.path.stat().st_size,
            "journal_bytes": journal.size,
            "fingerprints": {fp: b.count for fp, b in sorted(self._index.bases.items())},
            "kinds": dict(sorted(Counter(i.kind if i else "damaged" for i in infos).items())),
            "provenance": dict(sorted(Counter(provenance_key(i) for i in infos).items())),
        }

    def verify(self) -> VerifyReport:
        """Re-read every record from disk and check its record checksum (every field and array) and shapes."""
        self._check_open()
        report = VerifyReport(self.path)
        for tid, entry in sorted(self._index.entries.items()):
            report.checked += 1
            _, problem = self._reader.read(tid, entry)
            if problem is not None:
                report.problems.append(f"{tid}: {problem} [{self._reader.where(entry)}]")
        return report

    # -- compaction and closing ---------------------------------------------

    def snapshot_sources(self) -> dict:
        """write_snapshot arguments for every live record, each verified whole as it is read."""
        items = sorted(self._index.entries.items())
        return {
            "copies": ((self._reader.snap, self._reader.verified_group(t, e)) for t, e in items if e.group),
            "masks": (self._reader.load(t, e, kind=None) for t, e in items if e.group is None),
        }

    def compact(self) -> None:
        """Fold the journal into a new snapshot (atomically replaced), then empty the journal."""
        journal = self._check_open()
        if journal.record_bytes == 0:
            return
        start = time.perf_counter()
        try:
            count = write_snapshot(self.path, **self.snapshot_sources())
        except CorruptMaskError as e:
            raise CorruptMaskError(f"{e}. Compaction was abandoned and nothing was changed") from e
        self._reader.snap.close()
        self._reader.snap = open_snapshot(self.path)
        for tid, e in self._index.entries.items():
            self._index.entries[tid] = e.in_snapshot(group_name(tid))
        folded = journal.record_bytes
        journal.truncate()  # only now: a crash before this replays records the new snapshot already has
        self._next_compact = self.compact_bytes
        secs = time.perf_counter() - start
        logger.info("compacted %s: %d records, %d journal bytes, %.2f s", self.path, count, folded, secs)

    def _maybe_compact(self) -> None:
        """Compact once the journal is big; a failure here is logged, since the write before it is durable."""
        if self._journal.record_bytes <= self._next_compact:
            return
        try:
            self.compact()
        except (MaskFileError, OSError) as e:
            self._next_compact = self._journal.record_bytes + self.compact_bytes  # retry after as much again
            logger.error("automatic compaction of %s failed; the journal keeps every write: %s", self.path, e)

    def export(self, dest_path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
        """Write every live record, verified, to a standalone snapshot file; returns how many."""
        return transfer.export_file(self, dest_path, overwrite=overwrite)

    def import_from(self, src_path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
        """Put every mask of an exported file (or another store's snapshot), verified; how many were new."""
        count = transfer.import_file(self, src_path, overwrite=overwrite)
        self._maybe_compact()
        return count

    def owns(self, path: Path) -> bool:
        """Whether `path` is one of this store's own files (snapshot, journal or a temporary)."""
        own = {self.path.resolve(), self._check_open().path.resolve()}
        return path.resolve() in own or path.name.startswith(f".{self.path.name}.")

    def _release(self) -> None:
        if self._reader is not None and self._reader.snap is not None:
            self._reader.snap.close()
            self._reader.snap = None
        super()._release()

    def __repr__(self) -> str:
        state = "closed" if self._journal is None else f"{len(self._index)} masks"
        return f"MaskFile({str(self.path)!r}, {state})"

    # -- sums and scores over one base (task inference) ----------------------

    def mask_sum(
        self, fingerprint: str | None = None, *, ids: Iterable[str] | None = None, chunk: int = 64
    ) -> tuple[list[np.ndarray], int]:
        """(per-layer int32 count of masks keeping each weight, number of masks), one base (or these ids)."""
        self._check_open()
        return self._bank.mask_sum(fingerprint, ids, chunk)

    def query_scores(
        self,
        queries: list[np.ndarray] | np.ndarray,
        chunk: int = 64,
        *,
        fingerprint: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """(ids, (k, Q) scores): sum over layers of <queries[l][q], mask[l]>, `chunk` masks at a time."""
        self._check_open()
        return self._bank.query_scores(queries, chunk, fingerprint, ids)
