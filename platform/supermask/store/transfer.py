"""Moving masks between a MaskFile and standalone snapshot files: export and import, every record verified."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from supermask.store.array_records import KNOWN_KINDS, Record, array_record_problem, read_array_group
from supermask.store.errors import CorruptMaskError, MaskExistsError, MaskFileError
from supermask.store.journal import FILE_MAGIC
from supermask.store.records import KIND_MASK, record_problem
from supermask.store.snapshot import open_snapshot, read_entries, read_mask, write_snapshot
from supermask.store.validation import validate_record


class RecordFile(Protocol):
    """What export and import need of a mask file (its own class imports this module)."""

    path: Path

    def owns(self, path: Path) -> bool: ...
    def snapshot_sources(self) -> dict: ...
    def describe(self, ids: list[str]) -> dict[str, dict]: ...
    def __contains__(self, task_id: object) -> bool: ...
    def put_validated(self, record: Record, *, overwrite: bool, sync: bool) -> bool: ...
    def sync(self) -> None: ...


def export_file(store: RecordFile, dest_path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
    """Write every live record of `store`, each verified whole, to a standalone snapshot; returns how many."""
    dest = Path(dest_path)
    if store.owns(dest):
        raise ValueError(f"cannot export {store.path} onto its own files ({dest})")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists; pass overwrite=True to replace it")
    return write_snapshot(dest, **store.snapshot_sources())


def import_file(store: RecordFile, src_path: str | os.PathLike[str], *, overwrite: bool = False) -> int:
    """Put every mask of a snapshot file into `store`, each verified whole first; returns how many were new.

    Nothing is imported if a mask in the file differs from one `store` holds under the same id
    (unless overwrite=True). A damaged mask stops the import there, naming it; the masks before
    it stay imported (each put is journaled, so rerunning the import is harmless).
    """
    src = Path(src_path)
    if src.resolve() == store.path.resolve():
        raise ValueError(f"cannot import {store.path} into itself")
    wal = src.with_name(src.name + ".wal")
    if wal.exists() and wal.stat().st_size > len(FILE_MAGIC):
        raise MaskFileError(
            f"{src} has a journal {wal} whose masks are not in its snapshot yet; open and close that "
            "store with MaskFile (which compacts it), or export() it, then import"
        )
    with open_snapshot(src) as f:
        entries = read_entries(f)
        if not overwrite:
            held = store.describe([t for t in entries if t in store])
            clash = sorted(
                t
                for t, e in entries.items()
                if t in held and (e.info is None or held[t]["checksum"] != e.info.checksum)
            )
            if clash:
                raise MaskExistsError(
                    f"{len(clash)} masks in {src} differ from the ones {store.path} holds under the same id "
                    f"({clash[:10]}); nothing was imported: pass overwrite=True to replace them"
                )
        count = 0
        try:
            for tid, e in sorted(entries.items()):
                problem = e.problem
                if problem is None and e.info.kind not in KNOWN_KINDS:
                    problem = f"a record of kind {e.info.kind!r}, which this version cannot import"
                if problem is None and e.info.kind != KIND_MASK:
                    g = f["masks"][e.group]
                    mask, problem = array_record_problem(read_array_group(g), json.loads(g.attrs["meta"]))
                elif problem is None:
                    mask, stored = read_mask(f, e.group)
                    problem = record_problem(mask, stored)
                if problem is not None:
                    raise CorruptMaskError(
                        f"mask {tid!r} in {src} cannot be imported: {problem}; {count} masks were "
                        "imported before it"
                    )
                validate_record(mask)
                count += store.put_validated(mask, overwrite=overwrite, sync=False)
        finally:
            store.sync()
    return count
