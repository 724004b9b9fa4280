"""Translation records on disk: one HDF5 file per task, kind "translation", written atomically.

A translation task is one record of a few kilobytes (masks) to megabytes (trained generators), written
once by the worker that trained it, so it needs no journal or shard actor: each record is its own
file `<root>/<task id>.h5`, replaced whole (write, fsync, rename, fsync the folder), so after a crash
a record is complete or absent. Readable with plain h5py:

    meta = json.loads(h5py.File(path).attrs["meta"])   # kind, task_id, method, settings, metrics, ...
    h5py.File(path)["arrays/g_xy/bits"][()]             # the arrays, by name

`meta["checksum"]` (blake2b over the metadata and every array) is checked on every read and by
`verify`; a record of another kind, or a mask file, is never read as a translation record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from supermask.core.files import atomic_write, stale_temporaries
from supermask.core.translation.records import KIND_TRANSLATION, TranslationRecord
from supermask.store.errors import CorruptMaskError, MaskFileError, MaskNotFoundError, WrongKindError

SUFFIX = ".h5"
FORMAT_VERSION = 1


class TranslationStore:
    """A folder of translation records, one file per task id."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, task_id: str) -> Path:
        return self.root / f"{task_id}{SUFFIX}"

    def put(self, record: TranslationRecord) -> int:
        """Write a record (replacing any older one of that task); returns the file's bytes."""
        meta = {**record.meta(), "checksum": record.checksum, "format_version": FORMAT_VERSION}

        def write(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                f.attrs["meta"] = json.dumps(meta, sort_keys=True)
                arrays = f.create_group("arrays")
                for name, array in sorted(record.arrays.items()):
                    arrays.create_dataset(name, data=np.ascontiguousarray(array))

        path = self.path(record.task_id)
        atomic_write(path, write)
        for tmp in stale_temporaries(path):  # a write a crash cut short
            tmp.unlink(missing_ok=True)
        return path.stat().st_size

    def task_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name[: -len(SUFFIX)] for p in self.root.glob(f"*{SUFFIX}") if not p.name.startswith(".")
        )

    def missing(self, task_ids: list[str]) -> list[str]:
        """The ids among `task_ids` with no record."""
        return [t for t in task_ids if not self.path(t).exists()]

    def meta(self, task_id: str) -> dict:
        """A record's metadata (kind checked; arrays not read)."""
        path = self.path(task_id)
        if not path.exists():
            raise MaskNotFoundError(f"no translation record for task {task_id!r} in {self.root}")
        try:
            with h5py.File(path, "r") as f:
                meta = json.loads(f.attrs["meta"])
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise CorruptMaskError(
                f"{path} is not a readable translation record ({e}); delete it to train the task again"
            ) from None
        if meta.get("kind") != KIND_TRANSLATION:
            raise WrongKindError(
                f"{path} holds a record of kind {meta.get('kind')!r}, not {KIND_TRANSLATION!r}"
            )
        return meta

    def get(self, task_id: str) -> TranslationRecord:
        """The record of a task, checked against its checksum."""
        meta = self.meta(task_id)
        path = self.path(task_id)
        with h5py.File(path, "r") as f:
            arrays: dict[str, np.ndarray] = {}
            f["arrays"].visititems(
                lambda name, node: (
                    arrays.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None
                )
            )
        recorded = meta.pop("checksum")
        meta.pop("format_version", None)
        record = TranslationRecord(arrays=arrays, **meta)
        if record.checksum != recorded:
            raise CorruptMaskError(
                f"{path}: record checksum mismatch (recorded {recorded}, now {record.checksum}): the file changed "
                "since it was written; delete it to train the task again"
            )
        return record

    def put_many(self, records: list[TranslationRecord], overwrite: bool = False) -> list[bool]:
        """Write each record unless its task is stored (or with `overwrite`); whether each was written."""
        written = []
        for record in records:
            new = overwrite or not self.path(record.task_id).exists()
            if new:
                self.put(record)
            written.append(new)
        return written

    def get_many(self, task_ids: list[str], fingerprint: str | None = None) -> list[TranslationRecord]:
        """The records of these tasks, in order, each checked against its checksum."""
        return [self.get(t) for t in task_ids]

    def describe(self, task_ids: list[str] | None = None) -> dict[str, dict]:
        """task id -> its record's metadata (arrays not read) and the bytes of its file; every id or these."""
        ids = self.task_ids() if task_ids is None else task_ids
        return {t: {**self.meta(t), "file_bytes": self.path(t).stat().st_size} for t in ids}

    def close(self) -> None:
        """Nothing to release: every record is its own file, opened only while read or written."""

    def delete(self, task_id: str) -> None:
        self.path(task_id).unlink(missing_ok=True)

    def verify(self) -> dict[str, str | None]:
        """Every record's problem (None when it reads back whole and matches its checksum)."""
        problems: dict[str, str | None] = {}
        for task_id in self.task_ids():
            try:
                self.get(task_id)
                problems[task_id] = None
            except MaskFileError as e:
                problems[task_id] = str(e)
        return problems
