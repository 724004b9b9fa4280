"""Translation stores of the previous version (one HDF5 file per task), and moving them into a sharded store.

The previous supermask kept each translation task as its own file `<store>/<task id>.h5`: the root
attribute `meta` (JSON: every field of the `TranslationRecord`, its checksum and format_version 1)
beside a group `arrays` with one dataset per array. Such a folder is never read as a store of the
current version (that would see no records and train every task again): opening it names the command
that migrates it. `migrate_translation_folder` reads every record, checks it against its checksum,
puts it into the sharded store in the same folder (store.json, shard-00i.h5: `TranslationFile`),
reads the store back, and only then deletes the old files. A crash at any point loses nothing:
running it again finishes the job (a put of a record stored already does nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from supermask.core.files import fsync_dir
from supermask.core.records.translation import TranslationRecord
from supermask.store.errors import CorruptMaskError, MaskFileError, OldFormatError
from supermask.store.partitioning import DEFAULT_SHARDS, LAYOUT_FILE, open_layout, shard_path
from supermask.store.snapshot import legacy_translation_meta
from supermask.store.translation_file import TranslationFile

logger = logging.getLogger(__name__)


def _legacy_meta(path: Path) -> dict | None:
    """The metadata of an earlier version's translation record file, or None for any other file."""
    try:
        if not h5py.is_hdf5(path):
            return None
        with h5py.File(path, "r") as f:
            return legacy_translation_meta(f)
    except OSError:
        return None


def legacy_translation_files(folder: str | Path) -> list[Path]:
    """The previous version's translation record files directly in `folder`, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("*.h5")) if not p.name.startswith(".") and _legacy_meta(p)]


def legacy_error(folder: Path, files: list[Path]) -> OldFormatError:
    """The error for opening a folder of the previous version's translation records as a store."""
    names = ", ".join(p.name for p in files[:3]) + (" ..." if len(files) > 3 else "")
    return OldFormatError(
        f"{folder} holds {len(files)} translation records in the format of an earlier supermask (one file per "
        f"task: {names}), which this version keeps in a sharded store. Nothing was changed, and no task is "
        f"trained again. Run `supermask store migrate {folder}` to check every record against its checksum "
        "and move it into the sharded store, then run again"
    )


def read_legacy_record(path: Path) -> TranslationRecord:
    """A previous version's translation record file, checked against its checksum (CorruptMaskError if not)."""
    meta = _legacy_meta(path)
    if meta is None:
        raise CorruptMaskError(f"{path} is not a readable translation record of an earlier supermask")
    try:
        with h5py.File(path, "r") as f:
            arrays: dict[str, np.ndarray] = {}
            f["arrays"].visititems(
                lambda name, node: (
                    arrays.__setitem__(name, node[()]) if isinstance(node, h5py.Dataset) else None
                )
            )
        recorded = meta.pop("checksum")
        meta.pop("format_version", None)
        record = TranslationRecord.from_meta(meta, arrays)
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise CorruptMaskError(f"{path} is not a readable translation record ({e})") from None
    if record.checksum != recorded:
        raise CorruptMaskError(
            f"{path}: record checksum mismatch (recorded {recorded}, now {record.checksum}): the file changed "
            "since it was written; move it aside to train that task again"
        )
    return record


@dataclass
class TranslationMigration:
    """What migrating a folder of the previous version's translation records did."""

    path: Path
    records: list[str] = field(default_factory=list)  # task ids now in the sharded store
    removed: list[Path] = field(default_factory=list)  # the old files, deleted once their record was verified


def migrate_translation_folder(folder: str | Path) -> TranslationMigration:
    """Move every translation record file of an earlier version under `folder` into a sharded store there."""
    folder = Path(folder)
    files = legacy_translation_files(folder)
    records = [read_legacy_record(p) for p in files]  # every one checks out before anything is written
    # as many shards as a run would create, so that rerunning the spec opens the store as it is
    layout = open_layout(folder, None if (folder / LAYOUT_FILE).exists() else DEFAULT_SHARDS)
    shards: dict[int, TranslationFile] = {}
    try:
        for record in records:
            shard = layout.shard_of(record.task_id)
            if shard not in shards:
                shards[shard] = TranslationFile(shard_path(folder, shard))
            shards[shard].put(record)
        for record in records:  # read back whole from the new store before any old file goes
            back = shards[layout.shard_of(record.task_id)].get(record.task_id)
            if back.checksum != record.checksum:
                raise MaskFileError(
                    f"{record.task_id!r} did not read back whole from the new store; nothing deleted"
                )
    finally:
        for f in shards.values():
            f.close()
    for path in files:
        path.unlink()
    if files:
        fsync_dir(folder)
        logger.info("moved %d translation records of %s into its sharded store", len(files), folder)
    return TranslationMigration(folder, [r.task_id for r in records], files)
