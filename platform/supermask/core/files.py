"""Durable file writes: after a crash a file is the old one or the new one, never a mixture."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so that a rename inside it survives a crash."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """Where `atomic_write` writes before renaming (hidden, beside `path`, one per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files of `path` that a write cut short by a crash left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def atomic_write(path: str | os.PathLike[str], write: bytes | Callable[[Path], object]) -> None:
    """Replace `path` whole: write a temporary file beside it, fsync it, rename it over `path`, fsync the folder.

    `write` is the bytes, or a function that writes the file at the temporary path it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        if callable(write):
            write(tmp)
        else:
            tmp.write_bytes(bytes(write))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
