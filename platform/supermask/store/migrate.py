"""`supermask store migrate`: rewrite mask files of format 1 as format 2, verifying every mask, losing none
(and move an earlier version's translation records, one file per task, into a sharded store:
`store.translation_legacy`).

Format 1 (snapshot format_version 1, journal magic `supermask-wal-v1`) kept one checksum per
mask, over its packed bits only, and no provenance or kind. Migrating a file reads every live
mask (the snapshot's, then the journal's puts and deletes in order), checks its bits against
that checksum, and writes a format-2 snapshot (kind "mask", empty provenance, the new record
checksum and per-field digests) to a temporary file. The new file is read back and checked in
full before it replaces the old snapshot; only then is the journal replaced by an empty
format-2 one. A crash at any point leaves the old files or a new snapshot beside an old
journal whose records it already holds: running the migration again finishes it.

A mask that fails its old checksum stops the migration with nothing changed, unless
`drop_corrupt=True`: then the others are migrated and the old files are kept beside the new
ones as PATH.v1 and PATH.wal.v1.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from supermask.core.files import atomic_write
from supermask.core.records.packing import TaskMask, bits_checksum
from supermask.store.errors import MaskFileError, NotAMaskFileError, StoreLockedError
from supermask.store.journal import (
    FILE_MAGIC,
    HEADER,
    KIND_PUT,
    OLD_FILE_MAGICS,
    decode_arrays,
    decode_put_meta,
    record_end,
    scan_records,
)
from supermask.store.records import FORMAT_VERSION, mask_from_meta, record_problem
from supermask.store.snapshot import (
    format_version,
    open_snapshot,
    read_entries,
    read_mask,
    start_snapshot,
    write_mask,
)
from supermask.store.translation_legacy import (
    TranslationMigration,
    legacy_translation_files,
    migrate_translation_folder,
)
from supermask.store.validation import num_weights

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None

logger = logging.getLogger(__name__)


class MigrationError(MaskFileError):
    """Masks that fail their old checksum: the migration stopped and changed nothing."""


@dataclass
class MigrationResult:
    """What migrating one file did."""

    path: Path
    old_versions: dict[str, int | None]  # {"snapshot": 1, "journal": 1}; None where there was none
    masks: int = 0
    dropped: list[str] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)

    @property
    def migrated(self) -> bool:
        return any(v is not None and v < FORMAT_VERSION for v in self.old_versions.values())


def journal_version(path: Path) -> int | None:
    """The format of a journal from its magic (None for a journal whose creation was cut short)."""
    with open(path, "rb") as f:
        head = f.read(len(FILE_MAGIC))
        rest_is_zero = not (head + f.read()).strip(b"\0")
    if head == FILE_MAGIC:
        return FORMAT_VERSION
    if head in OLD_FILE_MAGICS:
        return OLD_FILE_MAGICS[head]
    if FILE_MAGIC.startswith(head) or rest_is_zero:
        return None
    raise NotAMaskFileError(f"{path} is not a supermask mask-file journal; it was left untouched")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _v1_mask(meta: dict, packed: np.ndarray, bn: dict[str, np.ndarray]) -> tuple[TaskMask | None, str | None]:
    """A format-1 mask, checked against its bits checksum: (mask, None) or (None, what is wrong)."""
    mask = mask_from_meta(meta, packed, bn)  # format 1 kept no provenance: it comes out empty
    if bits_checksum(packed) != meta["checksum"]:
        return (
            None,
            f"bits checksum mismatch (recorded {meta['checksum']}, the bits hash to {bits_checksum(packed)})",
        )
    need = (num_weights(mask.layer_shapes) + 7) // 8
    if packed.size != need:
        return None, f"packed has {packed.size} bytes but layer shapes {mask.layer_shapes} need {need}"
    return mask, None


def _read_v1_group(f: h5py.File, group: str) -> tuple[TaskMask | None, str | None]:
    g = f["masks"][group]
    a = g.attrs
    meta = {
        "task_id": _text(a["task_id"]),
        "layer_names": [_text(n) for n in a["layer_names"]],
        "layer_shapes": json.loads(_text(a["layer_shapes"])),
        "layer_density": list(a["layer_density"]),
        "base_fingerprint": _text(a["base_fingerprint"]),
        "metrics": json.loads(_text(a["metrics"])),
        "created": a["created"],
        "checksum": _text(a["checksum"]),
    }
    bn = {name: np.asarray(ds[()]) for name, ds in g["bn"].items()} if "bn" in g else {}
    return _v1_mask(meta, np.asarray(g["packed"][()], dtype=np.uint8), bn)


class _Sources:
    """The live masks of a file being migrated, and where each is read from."""

    def __init__(self, path: Path, wal: Path, versions: dict[str, int | None]) -> None:
        self.path, self.wal, self.versions = path, wal, versions
        self.snap: h5py.File | None = None
        self.buf: mmap.mmap | None = None
        self.where: dict[str, tuple] = {}

    def __enter__(self) -> _Sources:
        if self.versions["snapshot"] is not None:
            self.snap = h5py.File(self.path, "r")
            if self.versions["snapshot"] < FORMAT_VERSION:
                for name, g in self.snap["masks"].items():
                    self.where[_text(g.attrs.get("task_id", name))] = ("v1", name)
            else:
                self.snap.close()
                self.snap = open_snapshot(self.path)
                for tid, e in read_entries(self.snap).items():
                    self.where[tid] = ("v2", e.group)
        if self.versions["journal"] is not None and self.versions["journal"] < FORMAT_VERSION:
            size = self.wal.stat().st_size
            if size > len(FILE_MAGIC):
                with open(self.wal, "rb") as f:
                    self.buf = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
                last = len(FILE_MAGIC)
                for rec, payload in scan_records(self.buf, last, size, self.wal):
                    if rec.kind == KIND_PUT:
                        self.where[decode_put_meta(payload)["task_id"]] = ("wal", rec.offset, rec.length)
                    else:
                        self.where.pop(bytes(payload).decode(), None)
                    last = record_end(rec)
                if last < size:
                    logger.warning(
                        "%s: ignoring a torn tail record at byte %d (a write never acknowledged)",
                        self.wal,
                        last,
                    )
        return self

    def read(self, tid: str) -> tuple[TaskMask | None, str | None]:
        """(mask, None) if it reads back and checks out, else (None, what is wrong)."""
        kind, *loc = self.where[tid]
        try:
            if kind == "v1":
                return _read_v1_group(self.snap, loc[0])
            if kind == "v2":
                mask, stored = read_mask(self.snap, loc[0])
                problem = record_problem(mask, stored)
                return (None, problem) if problem else (mask, None)
            offset, length = loc
            body = offset + HEADER.size
            payload = memoryview(self.buf)[body : body + length]
            try:
                meta = decode_put_meta(payload)
                packed, bn = decode_arrays(payload, meta)
            finally:
                payload.release()
            return _v1_mask(meta, packed, bn)
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
            return None, f"cannot be read ({type(e).__name__}: {e})"

    def __exit__(self, *exc: object) -> None:
        if self.snap is not None:
            self.snap.close()
        if self.buf is not None:
            self.buf.close()


def _lock(wal: Path) -> int | None:
    """An exclusive lock on the journal, as a MaskFile takes, so no store has the file open meanwhile."""
    if not wal.exists() or fcntl is None:
        return None
    fd = os.open(wal, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLockedError(
            f"{wal} is open in another process; close every MaskStore on it before migrating"
        ) from None
    return fd


def migrate_file(path: str | os.PathLike[str], *, drop_corrupt: bool = False) -> MigrationResult:
    """Rewrite one mask file (snapshot and journal) as format 2; a file already current is left as it is."""
    path = Path(path)
    wal = path.with_name(path.name + ".wal")
    versions = {
        "snapshot": format_version(path) if path.exists() else None,
        "journal": journal_version(wal) if wal.exists() else None,
    }
    result = MigrationResult(path, versions)
    if not result.migrated:
        return result
    if versions["journal"] == FORMAT_VERSION and wal.stat().st_size > len(FILE_MAGIC):
        raise MigrationError(
            f"{path} is a format-{versions['snapshot']} snapshot beside a format-{FORMAT_VERSION} journal "
            f"with records ({wal}), which no supermask writes; nothing was changed. Copy both files aside "
            "and restore them from a backup"
        )
    fd = _lock(wal)
    try:
        with _Sources(path, wal, versions) as sources:
            _rewrite(path, sources, result, drop_corrupt)
        atomic_write(wal, FILE_MAGIC)  # only now: the new snapshot holds every record the old journal had
        legacy_tmp = path.with_name(path.name + ".tmp")  # left by a format-1 compaction cut short
        legacy_tmp.unlink(missing_ok=True)
    finally:
        if fd is not None:
            os.close(fd)
    logger.info("migrated %s to format %d: %d masks", path, FORMAT_VERSION, result.masks)
    return result


def _rewrite(path: Path, sources: _Sources, result: MigrationResult, drop_corrupt: bool) -> None:
    """Write the new snapshot from `sources`, check it in full, keep backups if masks are dropped, replace."""
    problems: dict[str, str] = {}

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            root = start_snapshot(f)
            for tid in sorted(sources.where):
                mask, problem = sources.read(tid)
                if mask is None:
                    problems[tid] = problem
                else:
                    write_mask(root, mask)
                    result.masks += 1
        if problems and not drop_corrupt:
            listed = "; ".join(f"{t}: {p}" for t, p in list(problems.items())[:10])
            raise MigrationError(
                f"{len(problems)} masks of {path} do not check out ({listed}); nothing was changed. They were "
                "damaged before the migration: restore the file from a backup, or migrate the others "
                f"with `supermask store migrate {path} --drop-corrupt` (the old files are then kept as "
                f"{path.name}.v1 and {path.name}.wal.v1)"
            )
        _check_written(tmp, result.masks)
        if problems:
            result.dropped = sorted(problems)
            for old in (path, sources.wal):
                if old.exists():
                    backup = old.with_name(old.name + ".v1")
                    shutil.copy2(old, backup)
                    result.backups.append(backup)
            logger.warning(
                "%s: dropped %d damaged masks %s; the old files are kept as %s",
                path,
                len(problems),
                result.dropped[:10],
                result.backups,
            )

    atomic_write(path, write)


def _check_written(tmp: Path, expected: int) -> None:
    """Read a freshly written snapshot back in full; raise if any record does not check out."""
    with h5py.File(tmp, "r") as f:
        entries = read_entries(f)
        bad = {}
        for tid, e in entries.items():
            problem = e.problem or record_problem(*read_mask(f, e.group))
            if problem:
                bad[tid] = problem
    if bad or len(entries) != expected:
        raise MigrationError(
            f"the migrated copy of {tmp.name} did not read back whole ({len(entries)} of {expected} masks; "
            f"{bad}); nothing was changed"
        )


def _store_folder(path: Path) -> Path:
    return path / "store" if (path / "store").is_dir() else path


def migration_targets(path: str | os.PathLike[str]) -> list[Path]:
    """The mask files under a run folder (its store/), a store folder, or a single shard file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run folder, a store folder or a shard file")
    if path.is_file():
        return [path]
    folder = _store_folder(path)
    names = {p.name for p in folder.glob("*.h5")} | {p.name[: -len(".wal")] for p in folder.glob("*.h5.wal")}
    names -= {p.name for p in legacy_translation_files(folder)}
    if not names:
        raise FileNotFoundError(
            f"no mask files (*.h5) under {path}; pass a run folder, a store folder or a shard file"
        )
    return [folder / n for n in sorted(names)]


def migrate_path(
    path: str | os.PathLike[str], *, drop_corrupt: bool = False
) -> Iterator[MigrationResult | TranslationMigration]:
    """Move an earlier version's translation records under `path` into a sharded store (if it has any),
    then migrate_file every mask file under it (see `migration_targets`), one at a time."""
    path = Path(path)
    if path.is_dir() and legacy_translation_files(_store_folder(path)):
        yield migrate_translation_folder(_store_folder(path))
    for target in migration_targets(path):
        yield migrate_file(target, drop_corrupt=drop_corrupt)
