"""What every shard file of a store shares: one writer, an fsync'ed journal, snapshots replaced whole, verify.

A store kind is a file class (`MaskFile`, `ReservoirFile`, `TranslationFile`) built on `ShardFile`.
One shard actor hosts any of them (`runtime.shard_actor`) and calls only what is defined here, plus
the kind's own calls by name. The snapshot at PATH is only ever replaced whole
(`core.files.atomic_write`); the journal PATH.wal is opened with an exclusive lock, so a file has one
writer, and every acknowledged write is fsync'ed there before it returns.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from supermask.core.files import stale_temporaries
from supermask.store.errors import MaskFileError
from supermask.store.journal import Journal

logger = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """What verify() found: how many records it re-read and every problem, each naming its task."""

    path: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        """As the store clients and `supermask store verify --json` report it."""
        return {"file": str(self.path), "checked": self.checked, "ok": self.ok, "problems": self.problems}


class ShardFile:
    """One shard's durable file and its journal, owned by one writer; closing compacts the journal away."""

    kind = "records"  # the store kind, for messages

    def __init__(self, path: str | os.PathLike[str], magic: bytes) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._journal: Journal | None = Journal(
            self.path.with_name(self.path.name + ".wal"), self.path, magic
        )

    def _remove_stale_temporaries(self) -> None:
        for tmp in stale_temporaries(self.path):  # we hold the lock: no one else is writing them
            logger.warning("removing %s, left by a compaction that was cut short", tmp)
            tmp.unlink()

    def _check_open(self) -> Journal:
        if self._journal is None:
            raise MaskFileError(f"{type(self).__name__} {self.path} is closed; open it again")
        return self._journal

    # -- what the shard actor calls, for every kind ------------------------------

    def put_many(self, records: Sequence, overwrite: bool = False) -> list[bool]:
        """Durably store each record in turn (each before the next); False for one stored already."""
        return [self.put(r, overwrite=overwrite) for r in records]

    def get_many(self, ids: Iterable[str], *, fingerprint: str | None = None) -> list:
        """The verified records of these tasks, in order."""
        raise NotImplementedError

    def delete(self, task_id: str) -> bool:
        """Durably remove a task's record; False if there was none."""
        raise NotImplementedError

    def list(self) -> list[str]:
        """Every stored task id, sorted."""
        raise NotImplementedError

    def contains_many(self, ids: Iterable[str]) -> list[bool]:
        """Whether each task is stored."""
        self._check_open()
        return [t in self for t in ids]

    def describe(self, ids: Iterable[str] | None = None) -> dict[str, dict]:
        """task id -> what the file keeps of its record, from the index alone: every id, or `ids`."""
        raise NotImplementedError

    def stats(self) -> dict:
        """Counts and sizes of this file."""
        raise NotImplementedError

    def verify(self) -> VerifyReport:
        """Re-read every record from disk and check it."""
        raise NotImplementedError

    def compact(self) -> None:
        """Fold the journal into a new snapshot (replaced whole), then empty the journal."""
        raise NotImplementedError

    def __contains__(self, task_id: object) -> bool:
        raise NotImplementedError

    # -- closing -------------------------------------------------------------

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
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
