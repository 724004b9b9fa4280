"""Reading records back from wherever a mask file's index says they live, verifying every one.

A whole record is checked against its record checksum (every field, every array); reads that need
only the bits (scoring, sums) check the bits checksum.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from supermask.core.records.packing import bits_checksum
from supermask.store.array_records import (
    ARRAY_KINDS,
    KNOWN_KINDS,
    Record,
    array_record_problem,
    decode_array_payload,
    read_array_group,
)
from supermask.store.errors import CorruptJournalError, CorruptMaskError, WrongKindError
from supermask.store.index import Entry
from supermask.store.journal import Journal, decode_put, decode_put_meta
from supermask.store.records import KIND_MASK, record_problem
from supermask.store.snapshot import read_mask, read_packed
from supermask.store.validation import num_weights


class MaskReader:
    """Reads masks from the snapshot or the journal and checks each against its checksums and shapes."""

    def __init__(self, path: Path, journal: Journal) -> None:
        self.path = path
        self.journal = journal
        self.snap: h5py.File | None = None  # the open snapshot; replaced by the owner on compaction

    def where(self, entry: Entry) -> str:
        """The file (and group or byte offset) an entry points at, for messages."""
        if entry.group is not None:
            return f"{self.path} (group /masks/{entry.group})"
        return f"{self.journal.path} (record at byte {entry.offset})"

    def read(self, tid: str, entry: Entry) -> tuple[Record | None, str | None]:
        """(record, None) if it reads back whole and verified, else (None, what is wrong)."""
        if entry.problem is not None:
            return None, entry.problem
        if entry.info.kind not in KNOWN_KINDS:
            return None, (
                f"a record of kind {entry.info.kind!r}, which this version of supermask cannot read "
                "or check: upgrade supermask to verify it"
            )
        if entry.info.kind in ARRAY_KINDS:
            return self._read_arrays(tid, entry)
        try:
            if entry.group is not None:
                mask, stored = read_mask(self.snap, entry.group)
            else:
                mask, stored = decode_put(self.journal.read(entry.offset, entry.length))
        except CorruptJournalError as e:
            return None, str(e)
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
            return None, f"cannot be read ({type(e).__name__}: {e})"
        if mask.task_id != tid:
            return None, f"the record holds task {mask.task_id!r}"
        problem = record_problem(mask, stored)
        if problem is not None:
            return None, problem
        if stored["checksum"] != entry.info.checksum:
            return None, f"the record changed since the file was opened (checksum {stored['checksum']})"
        need = (num_weights(mask.layer_shapes) + 7) // 8
        if mask.packed.size != need:
            return (
                None,
                f"packed has {mask.packed.size} bytes but layer shapes {mask.layer_shapes} need {need}",
            )
        return mask, None

    def _read_arrays(self, tid: str, entry: Entry) -> tuple[Record | None, str | None]:
        try:
            if entry.group is not None:
                g = self.snap["masks"][entry.group]
                meta, arrays = json.loads(g.attrs["meta"]), read_array_group(g)
            else:
                payload = self.journal.read(entry.offset, entry.length)
                meta = decode_put_meta(payload)
                arrays = decode_array_payload(payload, meta)
        except CorruptJournalError as e:
            return None, str(e)
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
            return None, f"cannot be read ({type(e).__name__}: {e})"
        record, problem = array_record_problem(arrays, meta)
        if problem is not None:
            return None, problem
        if record.task_id != tid:
            return None, f"the record holds task {record.task_id!r}"
        if meta["checksum"] != entry.info.checksum:
            return None, f"the record changed since the file was opened (checksum {meta['checksum']})"
        return record, None

    def corrupt(self, tid: str, entry: Entry, problem: str) -> CorruptMaskError:
        """The error for a damaged record: where it is, what is wrong, what to do."""
        return CorruptMaskError(
            f"mask {tid!r} in {self.where(entry)} is corrupt: {problem}. Nothing else is affected: delete "
            f"it with delete({tid!r}) and learn the task again, or restore {self.path} from a backup; "
            "`supermask store verify` lists every damaged mask"
        )

    def check_kind(self, tid: str, entry: Entry, expected: str = KIND_MASK) -> None:
        """Refuse a readable record of another kind where one of kind `expected` is asked for (a trained
        weights record is never returned as a mask, nor a mask as trained weights)."""
        if entry.problem is None and entry.info.kind != expected:
            api = {KIND_MASK: "get / get_many", **{k: v.api for k, v in ARRAY_KINDS.items()}}
            raise WrongKindError(
                f"task {tid!r} in {self.where(entry)} holds a record of kind {entry.info.kind!r}, not "
                f"{expected!r}, and is never returned as one; read it with "
                f"{api.get(entry.info.kind, 'the API for its kind')} (`supermask store ls` shows each record's kind)"
            )

    def load(self, tid: str, entry: Entry, kind: str | None = KIND_MASK) -> Record:
        """The verified record of kind `kind` (None: any kind), or WrongKindError / CorruptMaskError."""
        if kind is not None:
            self.check_kind(tid, entry, kind)
        record, problem = self.read(tid, entry)
        if record is None:
            raise self.corrupt(tid, entry, problem)
        return record

    def packed(self, tid: str, entry: Entry) -> np.ndarray:
        """Only the packed bits, checked against the bits checksum (cheaper than a whole record)."""
        self.check_kind(tid, entry)
        if entry.group is None or entry.problem is not None:
            return self.load(tid, entry).packed
        try:
            packed = read_packed(self.snap, entry.group)
        except (OSError, KeyError) as e:
            raise self.corrupt(tid, entry, f"cannot be read ({e})") from e
        actual = bits_checksum(packed)
        if (
            actual != entry.info.bits_checksum
            or packed.size != (num_weights(entry.info.layer_shapes) + 7) // 8
        ):
            raise self.corrupt(
                tid,
                entry,
                f"bits checksum mismatch: recorded {entry.info.bits_checksum}, the bits hash to {actual}",
            )
        return packed

    def verified_group(self, tid: str, entry: Entry) -> str:
        """The snapshot group of a record, after checking the whole of it (so damage is never copied along).

        A record of another kind is copied as it is: this version cannot check it, and must not lose it.
        """
        if entry.problem is not None or entry.info.kind in KNOWN_KINDS:
            self.load(tid, entry, kind=None)
        return entry.group
