"""The HDF5 snapshot of a mask file: its layout, atomic writing, and reading with plain h5py.

Layout (readable by anyone with h5py):

    /                     attrs: format="supermask-maskfile", format_version=1
    /masks/<task id>/     attrs: task_id, layer_names, layer_shapes (JSON), layer_density,
                                 base_fingerprint, metrics (JSON), created, checksum, density,
                                 format_version
        packed            uint8, np.packbits of all layers' masks concatenated
        bn/<stat name>    one dataset per BatchNorm statistic, dtype as learned

The group of the task ids "." and ".." (which HDF5 cannot or should not name) is
"%2E" / "%2E%2E"; the `task_id` attribute is always the real id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from supermask.core.packing import TaskMask
from supermask.store.errors import NotAMaskFileError

FORMAT = "supermask-maskfile"
FORMAT_VERSION = 1
_EXPECTED = f"an HDF5 supermask mask file (root attribute format={FORMAT!r})"


def group_name(task_id: str) -> str:
    """The HDF5 group name under /masks of a task id."""
    return task_id.replace(".", "%2E") if task_id in (".", "..") else task_id


@dataclass(frozen=True)
class SnapshotEntry:
    """What the index keeps about a mask in the snapshot; `problem` is set if its metadata is unreadable."""

    group: str
    checksum: str = ""
    fingerprint: str = ""
    layer_shapes: tuple[tuple[int, ...], ...] = ()
    nbytes: int = 0
    problem: str | None = None


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_snapshot(path: Path) -> h5py.File:
    """Open a snapshot read-only, refusing anything that is not a supermask mask file."""
    if not h5py.is_hdf5(path):
        raise NotAMaskFileError(
            f"{path} is not an HDF5 file; expected {_EXPECTED}. It was left untouched: "
            "move it aside or choose another path"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise NotAMaskFileError(f"{path} cannot be opened as HDF5 ({e}); expected {_EXPECTED}") from e
    fmt = f.attrs.get("format")
    version = f.attrs.get("format_version")
    if fmt != FORMAT or "masks" not in f:
        f.close()
        raise NotAMaskFileError(
            f"{path} is an HDF5 file but not a supermask mask file (format attribute {fmt!r}); expected "
            f"{_EXPECTED}. It was left untouched: move it aside or choose another path"
        )
    if version is None or int(version) > FORMAT_VERSION:
        f.close()
        raise NotAMaskFileError(
            f"{path} has mask-file format_version {version}; this supermask reads up to {FORMAT_VERSION}: "
            "upgrade supermask to read it"
        )
    return f


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_entries(f: h5py.File) -> dict[str, SnapshotEntry]:
    """task id -> SnapshotEntry for every mask group in an open snapshot."""
    out: dict[str, SnapshotEntry] = {}
    for name, g in f["masks"].items():
        try:
            a = g.attrs
            out[_text(a["task_id"])] = SnapshotEntry(
                group=name,
                checksum=_text(a["checksum"]),
                fingerprint=_text(a["base_fingerprint"]),
                layer_shapes=tuple(tuple(s) for s in json.loads(_text(a["layer_shapes"]))),
                nbytes=int(g["packed"].shape[0]),
            )
        except (KeyError, ValueError, TypeError, OSError) as e:
            task_id = _text(g.attrs.get("task_id", name))
            out[task_id] = SnapshotEntry(
                group=name, problem=f"unreadable metadata in group /masks/{name}: {e}"
            )
    return out


def read_mask(f: h5py.File, group: str) -> tuple[TaskMask, str]:
    """(TaskMask, the checksum recorded when it was written) for one group."""
    g = f["masks"][group]
    a = g.attrs
    bn = {name: ds[()] for name, ds in g["bn"].items()} if "bn" in g else {}
    mask = TaskMask(
        task_id=_text(a["task_id"]),
        packed=np.asarray(g["packed"][()], dtype=np.uint8),
        layer_names=[_text(n) for n in a["layer_names"]],
        layer_shapes=[tuple(s) for s in json.loads(_text(a["layer_shapes"]))],
        layer_density=[float(d) for d in a["layer_density"]],
        base_fingerprint=_text(a["base_fingerprint"]),
        bn_stats={k: np.asarray(v) for k, v in bn.items()},
        metrics=json.loads(_text(a["metrics"])),
        created=float(a["created"]),
    )
    return mask, _text(a["checksum"])


def _write_mask(root: h5py.Group, mask: TaskMask) -> None:
    g = root.create_group(group_name(mask.task_id))
    g.create_dataset("packed", data=np.ascontiguousarray(mask.packed, dtype=np.uint8))
    if mask.bn_stats:
        bn = g.create_group("bn")
        for name, arr in mask.bn_stats.items():
            bn.create_dataset(name, data=np.asarray(arr))
    a = g.attrs
    a["task_id"] = mask.task_id
    a["layer_names"] = np.array(list(mask.layer_names), dtype=h5py.string_dtype())
    a["layer_shapes"] = json.dumps([list(s) for s in mask.layer_shapes])
    a["layer_density"] = np.asarray(mask.layer_density, dtype=np.float64)
    a["base_fingerprint"] = mask.base_fingerprint
    a["metrics"] = json.dumps(mask.metrics)
    a["created"] = float(mask.created)
    a["checksum"] = mask.checksum
    a["density"] = mask.density
    a["format_version"] = FORMAT_VERSION


def write_snapshot(
    path: Path, masks: Iterable[TaskMask] = (), copies: Iterable[tuple[h5py.File, str]] = ()
) -> int:
    """Atomically (re)write `path`: PATH.tmp, fsync, rename, fsync dir. Returns the number of masks.

    `copies` are (snapshot, group) pairs copied whole by HDF5, an order of magnitude
    faster than reading and rewriting them; `masks` are written from memory.
    """
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            root = f.create_group("masks")
            for src, group in copies:
                src["masks"].copy(src["masks"][group], root, name=group)
                count += 1
            for mask in masks:
                _write_mask(root, mask)
                count += 1
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
    return count
