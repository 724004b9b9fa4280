"""MaskFile: one shard's durable store of TaskMasks, safe against `kill -9` at any moment.

Files, for a store at PATH (e.g. shard-000.h5):

- PATH: an HDF5 snapshot (layout in `supermask.store.snapshot`), never modified
  in place. It is only replaced whole: written to PATH.tmp, fsync'ed,
  os.replace'd over PATH, then the directory is fsync'ed. Anyone, at any
  moment, sees the old snapshot or the new one, never a mixture.
- PATH.wal: an append-only journal of put and delete records (format in
  `supermask.store.journal`). put() and delete() append one record and fsync it
  before returning, so every acknowledged write survives a crash.

On open, a stale PATH.tmp (a compaction cut short) is deleted and the journal is
replayed over the snapshot's index. A torn tail record (an append that never
returned) is cut away with a warning; a damaged record before the tail raises
`CorruptJournalError` naming the file and offset, and nothing is changed.

Compaction (when the journal passes `compact_bytes`, on compact() and on close())
writes every live mask to a new snapshot as above and only then empties the
journal. A crash between the two leaves records the new snapshot already holds;
replaying them again is harmless because put and delete records are idempotent.

Every mask carries a blake2b checksum of its packed bits, re-checked whenever it
is read. The index keeps where each mask lives (snapshot group or journal
offset), never the masks themselves. One writer process owns a store (an
advisory lock on the journal enforces it); a MaskFile is not thread-safe.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from supermask.core.packing import (
    TaskMask,
    chunked_packed_sum,
    flatten_queries,
    packed_dot,
    query_count,
    split_layers,
)
from supermask.store.errors import (
    CorruptJournalError,
    CorruptMaskError,
    FingerprintMismatchError,
    MaskExistsError,
    MaskFileError,
    MaskNotFoundError,
    NotAMaskFileError,
    StoreLockedError,
)
from supermask.store.index import Base, Entry, MaskIndex
from supermask.store.journal import (
    FILE_MAGIC,
    KIND_DELETE,
    KIND_PUT,
    Journal,
    decode_put_meta,
    encode_put,
)
from supermask.store.reader import MaskReader
from supermask.store.snapshot import group_name, open_snapshot, read_entries, read_mask, write_snapshot
from supermask.store.validation import num_weights, validate_mask

__all__ = [
    "CorruptJournalError",
    "CorruptMaskError",
    "FingerprintMismatchError",
    "MaskExistsError",
    "MaskFile",
    "MaskFileError",
    "MaskNotFoundError",
    "NotAMaskFileError",
    "StoreLockedError",
    "VerifyReport",
    "validate_mask",
]

logger = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """What verify() found: how many masks it re-read and every problem, each naming its task."""

    path: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class MaskFile:
    """One shard's durable mask store: an HDF5 snapshot plus an fsync'ed journal, owned by one writer."""

    def __init__(self, path: str | os.PathLike[str], *, compact_bytes: int = 64 * 2**20) -> None:
        if compact_bytes <= 0:
            raise ValueError(f"compact_bytes must be positive, got {compact_bytes}")
        self.path = Path(path)
        self.compact_bytes = compact_bytes
        self._next_compact = compact_bytes  # journal record bytes beyond which to compact
        self._index = MaskIndex()
        self._reader: MaskReader | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            open_snapshot(self.path).close()  # refuse a foreign file before touching anything
        self._journal: Journal | None = Journal(self.path.with_name(self.path.name + ".wal"), owner=self.path)
        self._reader = MaskReader(self.path, self._journal)
        try:
            self._load_index()
        except BaseException:
            self._release()
            raise

    def _load_index(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        if tmp.exists():
            logger.warning("removing %s, left by a compaction that was cut short", tmp)
            tmp.unlink()
        if not self.path.exists():
            if self._journal.record_bytes:
                logger.warning(
                    "snapshot %s is missing; rebuilding the store from its journal alone", self.path
                )
            write_snapshot(self.path, [])
        self._reader.snap = open_snapshot(self.path)
        for tid, e in read_entries(self._reader.snap).items():
            self._index.set(
                tid, Entry(e.checksum, e.fingerprint, e.layer_shapes, e.nbytes, e.group, problem=e.problem)
            )
        for rec, payload in self._journal.replay():
            if rec.kind == KIND_PUT:
                m = decode_put_meta(payload)
                shapes = tuple(tuple(s) for s in m["layer_shapes"])
                fp, nbytes = m["base_fingerprint"], m["packed_nbytes"]
                self._index.set(
                    m["task_id"], Entry(m["checksum"], fp, shapes, nbytes, None, rec.offset, rec.length)
                )
            else:
                self._index.drop(bytes(payload).decode())
        self._maybe_compact()

    def _ensure_sums(self) -> None:
        if self._index.sums_ready:
            return
        for base in self._index.bases.values():
            base.bit_sum = None
        for tid, entry in sorted(self._index.entries.items()):
            if entry.problem is None:
                self._index.add_bits(entry.fingerprint, self._reader.packed(tid, entry), +1)
        self._index.sums_ready = True

    def _check_open(self) -> Journal:
        if self._journal is None:
            raise MaskFileError(f"MaskFile {self.path} is closed; open it again with MaskFile(path)")
        return self._journal

    def _entry(self, task_id: str) -> Entry:
        self._check_open()
        entry = self._index.get(task_id)
        if entry is None:
            raise MaskNotFoundError(
                f"no mask for task {task_id!r} in {self.path} (it holds {len(self._index)} masks)"
            )
        return entry

    # -- public API ----------------------------------------------------------

    def get(self, task_id: str, *, fingerprint: str | None = None) -> TaskMask:
        """The verified mask of one task, optionally checked against the base it will be used on."""
        entry = self._entry(task_id)
        if fingerprint is not None and fingerprint != entry.fingerprint:
            raise FingerprintMismatchError(
                f"mask {task_id!r} in {self.path} was learned on base {entry.fingerprint}, not {fingerprint}: "
                "a mask is only meaningful on its own base, so the base spec (arch, seed, init, shapes) "
                "must match the one used to learn it"
            )
        return self._reader.load(task_id, entry)

    def get_many(self, ids: Iterable[str], *, fingerprint: str | None = None) -> list[TaskMask]:
        """The verified masks of these tasks, in order."""
        self._check_open()
        ids = list(ids)
        missing = [t for t in ids if t not in self._index]
        if missing:
            raise MaskNotFoundError(
                f"{len(missing)} of {len(ids)} task ids have no mask in {self.path} (it holds "
                f"{len(self._index)} masks): {missing[:10]}{' ...' if len(missing) > 10 else ''}"
            )
        return [self.get(t, fingerprint=fingerprint) for t in ids]

    def put(self, mask: TaskMask, *, overwrite: bool = False) -> bool:
        """Durably store a mask; False if this exact mask is already stored."""
        self._check_open()
        validate_mask(mask)
        written = self._put(mask, overwrite=overwrite, sync=True)
        self._maybe_compact()
        return written

    def _put(self, mask: TaskMask, *, overwrite: bool, sync: bool) -> bool:
        journal = self._check_open()
        tid, fp, csum = mask.task_id, mask.base_fingerprint, mask.checksum
        shapes = tuple(tuple(int(d) for d in s) for s in mask.layer_shapes)
        old = self._index.get(tid)
        if old is not None and old.problem is None and old.checksum == csum and old.fingerprint == fp:
            return False
        if old is not None and not overwrite:
            raise MaskExistsError(
                f"{self.path} already holds a different mask for task {tid!r} (checksum {old.checksum}, base "
                f"{old.fingerprint}; new: {csum}, base {fp}); pass overwrite=True to replace it"
            )
        self._index.check_shapes(tid, fp, shapes)
        old_packed = self._packed_for_sums(tid, old)
        rec = journal.append(KIND_PUT, encode_put(mask), sync=sync)
        if old_packed is not None:
            self._index.add_bits(old.fingerprint, old_packed, -1)
        self._index.set(tid, Entry(csum, fp, shapes, mask.packed.size, None, rec.offset, rec.length))
        if self._index.sums_ready:
            self._index.add_bits(fp, mask.packed, +1)
        return True

    def _packed_for_sums(self, tid: str, entry: Entry | None) -> np.ndarray | None:
        """The bits to take out of the running sums when `entry` is replaced or deleted."""
        if not self._index.sums_ready or entry is None or entry.problem is not None:
            return None
        try:
            return self._reader.packed(tid, entry)
        except CorruptMaskError:
            self._index.sums_ready = False  # rebuilt from what is left when next needed
            return None

    def delete(self, task_id: str) -> bool:
        """Durably remove a task's mask; False if there was none."""
        journal = self._check_open()
        old = self._index.get(task_id)
        if old is None:
            return False
        old_packed = self._packed_for_sums(task_id, old)
        journal.append(KIND_DELETE, task_id.encode())
        if old_packed is not None:
            self._index.add_bits(old.fingerprint, old_packed, -1)
        self._index.drop(task_id)
        self._maybe_compact()
        return True

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

    def stats(self) -> dict:
        """Counts and sizes: masks, mask bytes, snapshot and journal bytes, masks per base fingerprint."""
        journal = self._check_open()
        return {
            "path": str(self.path),
            "count": len(self._index),
            "mask_bytes": sum(e.nbytes for e in self._index.entries.values()),
            "file_bytes": self.path.stat().st_size,
            "journal_bytes": journal.size,
            "fingerprints": {fp: b.count for fp, b in sorted(self._index.bases.items())},
        }

    def verify(self) -> VerifyReport:
        """Re-read every mask from disk and check its checksum and shapes."""
        self._check_open()
        report = VerifyReport(self.path)
        for tid, entry in sorted(self._index.entries.items()):
            report.checked += 1
            _, problem = self._reader.read(tid, entry)
            if problem is not None:
                report.problems.append(f"{tid}: {problem} [{self._reader.where(entry)}]")
        return report

    def _snapshot_sources(self) -> dict:
        """write_snapshot arguments for every live mask, each verified as it is read."""
        items = sorted(self._index.entries.items())
        return {
            "copies": ((self._reader.snap, self._reader.verified_group(t, e)) for t, e in items if e.group),
            "masks": (self._reader.load(t, e) for t, e in items if e.group is None),
        }

    def compact(self) -> None:
        """Fold the journal into a new snapshot (atomically replaced), then empty the journal."""
        journal = self._check_open()
        if journal.record_bytes == 0:
            return
        start = time.perf_counter()
        try:
            count = write_snapshot(self.path, **self._snapshot_sources())
        except CorruptMaskError as e:
            raise CorruptMaskError(f"{e}. Compaction was abandoned and nothing was changed") from e
        self._reader.snap.close()
        self._reader.snap = open_snapshot(self.path)
        for tid, e in list(self._index.entries.items()):
            self._index.entries[tid] = Entry(
                e.checksum, e.fingerprint, e.layer_shapes, e.nbytes, group_name(tid)
            )
        folded = journal.record_bytes
        journal.truncate()  # only now: a crash before this replays records the new snapshot already has
        self._next_compact = self.compact_bytes
        secs = time.perf_counter() - start
        logger.info("compacted %s: %d masks, %d journal bytes, %.2f s", self.path, count, folded, secs)

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
        """Write all live masks to a standalone snapshot file; returns how many."""
        self._check_open()
        dest = Path(dest_path)
        own = {
            self.path.resolve(),
            self._journal.path.resolve(),
            self.path.with_name(self.path.name + ".tmp").resolve(),
        }
        if dest.resolve() in own:
            raise ValueError(f"cannot export {self.path} onto its own files ({dest})")
        if dest.exists() and not overwrite:
            raise FileExistsError(f"{dest} already exists; pass overwrite=True to replace it")
        return write_snapshot(dest, **self._snapshot_sources())

    def import_from(self, src_path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
        """Put every mask of an exported file (or another store's snapshot); returns how many were written."""
        journal = self._check_open()
        src = Path(src_path)
        if src.resolve() == self.path.resolve():
            raise ValueError(f"cannot import {self.path} into itself")
        wal = src.with_name(src.name + ".wal")
        if wal.exists() and wal.stat().st_size > len(FILE_MAGIC):
            raise MaskFileError(
                f"{src} has a journal {wal} whose masks are not in its snapshot yet; open and close that "
                "store with MaskFile (which compacts it), or export() it, then import"
            )
        with open_snapshot(src) as f:
            entries = read_entries(f)
            if not overwrite:
                clash = sorted(
                    t
                    for t, e in entries.items()
                    if t in self._index
                    and (self._index.entries[t].checksum, self._index.entries[t].fingerprint)
                    != (e.checksum, e.fingerprint)
                )
                if clash:
                    raise MaskExistsError(
                        f"{len(clash)} masks in {src} differ from the ones {self.path} holds under the same id "
                        f"({clash[:10]}); nothing was imported: pass overwrite=True to replace them"
                    )
            count = 0
            try:
                for tid, e in sorted(entries.items()):
                    mask, stored = read_mask(f, e.group) if e.problem is None else (None, "")
                    if mask is None or mask.checksum != stored:
                        raise CorruptMaskError(
                            f"mask {tid!r} in {src} is corrupt ({e.problem or 'checksum mismatch'}); "
                            f"{count} masks were imported before it"
                        )
                    validate_mask(mask)
                    count += self._put(mask, overwrite=overwrite, sync=False)
            finally:
                journal.sync()
        self._maybe_compact()
        return count

    def _ids_of(
        self, fingerprint: str | None, ids: Iterable[str] | None
    ) -> tuple[str, Base, list[str]] | None:
        """The base picked, and the ids of its masks to work through (all, or those asked for)."""
        picked = self._index.pick_base(fingerprint, self.path)
        if ids is not None:
            ids = list(ids)
            for tid in ids:
                self._checked_entry(tid, picked[0] if picked else fingerprint)
        if picked is None:
            return None
        fp, base = picked
        if ids is None:
            ids = sorted(
                t for t, e in self._index.entries.items() if e.problem is None and e.fingerprint == fp
            )
        return fp, base, ids

    def _checked_entry(self, task_id: str, fingerprint: str | None) -> Entry:
        """The index entry of a task, checked against the base it is used with."""
        entry = self._entry(task_id)
        if fingerprint is not None and entry.fingerprint != fingerprint:
            raise FingerprintMismatchError(
                f"mask {task_id!r} in {self.path} was learned on base {entry.fingerprint}, not {fingerprint}; "
                "score or sum only masks of one base"
            )
        return entry

    def _rows(self, ids: list[str]) -> np.ndarray:
        return np.stack([self._reader.packed(t, self._index.entries[t]) for t in ids])

    def mask_sum(
        self, fingerprint: str | None = None, *, ids: Iterable[str] | None = None, chunk: int = 64
    ) -> tuple[list[np.ndarray], int]:
        """(per-layer int32 count of masks keeping each weight, number of masks) for one base (or these ids)."""
        self._check_open()
        picked = self._ids_of(fingerprint, ids)
        if picked is None:
            return [], 0
        fp, base, chosen = picked
        if ids is None:
            self._ensure_sums()
            return base.layer_sums(), base.count
        flat = chunked_packed_sum(chosen, self._rows, num_weights(base.shapes), chunk)
        return split_layers(flat, list(base.shapes)), len(chosen)

    def query_scores(
        self,
        queries: list[np.ndarray] | np.ndarray,
        chunk: int = 64,
        *,
        fingerprint: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """(ids, (k, Q) scores): sum over layers of <queries[l][q], mask[l]>, reading `chunk` masks at a time."""
        self._check_open()
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        picked = self._ids_of(fingerprint, ids)
        if picked is None:
            return [], np.zeros((0, query_count(queries)))
        fp, base, chosen = picked
        flat = flatten_queries(queries, list(base.shapes))
        out = np.zeros((len(chosen), flat.shape[0]), np.float64)
        for i in range(0, len(chosen), chunk):
            out[i : i + chunk] = packed_dot(self._rows(chosen[i : i + chunk]), flat)
        return chosen, out

    def scores(
        self,
        tensors: list[np.ndarray],
        chunk: int = 64,
        *,
        fingerprint: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> dict[str, float]:
        """sum over layers of <tensors[l], mask[l]> for every mask of one base (or these ids), `chunk` at a time."""
        chosen, values = self.query_scores(
            [np.asarray(t)[None] for t in tensors], chunk, fingerprint=fingerprint, ids=ids
        )
        return dict(zip(chosen, values[:, 0].tolist(), strict=True))

    def close(self, *, compact: bool = True) -> None:
        """Compact (unless compact=False) and release the files; closing twice is harmless."""
        if self._journal is None:
            return
        try:
            if compact:
                self.compact()
        finally:
            self._release()

    def _release(self) -> None:
        if self._reader is not None and self._reader.snap is not None:
            self._reader.snap.close()
            self._reader.snap = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def __enter__(self) -> MaskFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._journal is None else f"{len(self._index)} masks"
        return f"MaskFile({str(self.path)!r}, {state})"
