"""Reading masks back from wherever a mask file's index says they live, verifying every one."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from supermask.core.packing import TaskMask, checksum
from supermask.store.errors import CorruptJournalError, CorruptMaskError
from supermask.store.index import Entry
from supermask.store.journal import Journal, decode_put
from supermask.store.snapshot import read_mask
from supermask.store.validation import num_weights


class MaskReader:
    """Reads masks from the snapshot or the journal and checks each against its checksum and shapes."""

    def __init__(self, path: Path, journal: Journal) -> None:
        self.path = path
        self.journal = journal
        self.snap: h5py.File | None = None  # the open snapshot; replaced by the owner on compaction

    def where(self, entry: Entry) -> str:
        """The file (and group or byte offset) an entry points at, for messages."""
        if entry.group is not None:
            return f"{self.path} (group /masks/{entry.group})"
        return f"{self.journal.path} (record at byte {entry.offset})"

    def read(self, tid: str, entry: Entry) -> tuple[TaskMask | None, str | None]:
        """(mask, None) if it reads back whole and verified, else (None, what is wrong)."""
        if entry.problem is not None:
            return None, entry.problem
        try:
            if entry.group is not None:
                mask, stored = read_mask(self.snap, entry.group)
            else:
                mask, stored = decode_put(self.journal.read(entry.offset, entry.length))
        except CorruptJournalError as e:
            return None, str(e)
        except (OSError, KeyError, ValueError, TypeError) as e:
            return None, f"cannot be read ({type(e).__name__}: {e})"
        actual = mask.checksum
        if actual != stored or actual != entry.checksum:
            return None, f"checksum mismatch: recorded {stored}, its packed bits hash to {actual}"
        need = (num_weights(mask.layer_shapes) + 7) // 8
        if mask.packed.size != need:
            return (
                None,
                f"packed has {mask.packed.size} bytes but layer shapes {mask.layer_shapes} need {need}",
            )
        if mask.task_id != tid:
            return None, f"record holds task {mask.task_id!r}"
        return mask, None

    def corrupt(self, tid: str, entry: Entry, problem: str) -> CorruptMaskError:
        """The error for a damaged mask: where it is, what is wrong, what to do."""
        return CorruptMaskError(
            f"mask {tid!r} in {self.where(entry)} is corrupt: {problem}. Delete it with "
            f"delete({tid!r}) and learn the task again, or restore {self.path} from a backup; "
            "verify() lists every damaged mask"
        )

    def load(self, tid: str, entry: Entry) -> TaskMask:
        """The verified mask, or CorruptMaskError."""
        mask, problem = self.read(tid, entry)
        if mask is None:
            raise self.corrupt(tid, entry, problem)
        return mask

    def packed(self, tid: str, entry: Entry) -> np.ndarray:
        """Only the verified packed bits (cheaper than a whole mask for snapshot entries)."""
        if entry.group is None or entry.problem is not None:
            return self.load(tid, entry).packed
        try:
            packed = np.asarray(self.snap["masks"][entry.group]["packed"][()], dtype=np.uint8)
        except (OSError, KeyError) as e:
            raise self.corrupt(tid, entry, f"cannot be read ({e})") from e
        if checksum(packed) != entry.checksum or packed.size != (num_weights(entry.layer_shapes) + 7) // 8:
            raise self.corrupt(tid, entry, f"checksum mismatch: recorded {entry.checksum}")
        return packed

    def verified_group(self, tid: str, entry: Entry) -> str:
        """The snapshot group of an entry, after checking its bits (so damage is never copied along)."""
        self.packed(tid, entry)
        return entry.group
