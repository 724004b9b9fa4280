"""The HDF5 snapshot of a mask file: its layout, atomic writing, and reading with plain h5py.

Layout, format version 2 (readable by anyone with h5py and json):

    /                     attrs: format="supermask-maskfile", format_version=2
    /masks/<task id>/     (trained weights or a translation task: see store/array_records.py)
                          attrs: meta, a JSON object with every field of the record:
                                 task_id, kind ("mask"), layer_names, layer_shapes,
                                 layer_density, density, base_fingerprint, metrics,
                                 provenance, created, checksum (TaskMask.checksum: the
                                 whole record), bits_checksum (the packed bits alone),
                                 parts (a short digest per field and per array)
        packed            uint8, np.packbits of all layers' masks concatenated
        bn/<stat name>    one dataset per BatchNorm statistic, dtype as learned

e.g. `json.loads(h5py.File(p)["masks/t2"].attrs["meta"])["provenance"]`. One attribute per
record, not one per field: reading a snapshot's index (on every shard start) costs one
attribute read per record. The group of the task ids "." and ".." (which HDF5 cannot or
should not name) is "%2E" / "%2E%2E"; meta["task_id"] is always the real id. Version 1
files (an attribute per field, a checksum over the bits only) are refused with the
command that migrates them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from supermask.core.files import atomic_write
from supermask.core.records.packing import TaskMask
from supermask.store.array_records import Record, write_array_group
from supermask.store.errors import NotAMaskFileError, OldFormatError
from supermask.store.records import FORMAT_VERSION, RecordInfo, changed_fields, mask_from_meta, mask_meta

FORMAT = "supermask-maskfile"
_EXPECTED = f"an HDF5 supermask mask file (root attribute format={FORMAT!r})"


def group_name(task_id: str) -> str:
    """The HDF5 group name under /masks of a task id."""
    return task_id.replace(".", "%2E") if task_id in (".", "..") else task_id


@dataclass(frozen=True)
class SnapshotEntry:
    """What the index keeps about a record in the snapshot; `problem` is set if its metadata is bad."""

    group: str
    info: RecordInfo | None = None
    problem: str | None = None


def legacy_translation_meta(f: h5py.File) -> dict | None:
    """The metadata of an earlier supermask's translation record file (one per task), else None."""
    if "format" in f.attrs or "meta" not in f.attrs:
        return None
    try:
        meta = json.loads(f.attrs["meta"])
    except (TypeError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("kind") == "translation" else None


def format_version(path: Path) -> int:
    """The format_version of a supermask snapshot (NotAMaskFileError for anything else)."""
    if not h5py.is_hdf5(path):
        raise NotAMaskFileError(
            f"{path} is not an HDF5 file; expected {_EXPECTED}. It was left untouched: "
            "move it aside or choose another path"
        )
    try:
        with h5py.File(path, "r") as f:
            fmt, version, has_masks = f.attrs.get("format"), f.attrs.get("format_version"), "masks" in f
            legacy = legacy_translation_meta(f) is not None
    except OSError as e:
        raise NotAMaskFileError(f"{path} cannot be opened as HDF5 ({e}); expected {_EXPECTED}") from e
    if legacy:
        raise OldFormatError(
            f"{path} is a translation record file of an earlier supermask (one file per task); this version "
            f"keeps translation records in a sharded store. Nothing was changed. Run `supermask store migrate "
            f"{path.parent}` to check every record of that folder and move it into the store"
        )
    if fmt != FORMAT or not has_masks or version is None:
        raise NotAMaskFileError(
            f"{path} is an HDF5 file but not a supermask mask file (format attribute {fmt!r}); expected "
            f"{_EXPECTED}. It was left untouched: move it aside or choose another path"
        )
    return int(version)


def open_snapshot(path: Path) -> h5py.File:
    """Open a snapshot read-only, refusing anything that is not a current supermask mask file."""
    version = format_version(path)
    if version < FORMAT_VERSION:
        raise OldFormatError.of(path, version, FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise NotAMaskFileError(
            f"{path} has mask-file format_version {version}; this supermask reads {FORMAT_VERSION}: "
            "upgrade supermask to read it"
        )
    return h5py.File(path, "r")


def _meta(g: h5py.Group) -> dict:
    value = g.attrs["meta"]
    return json.loads(value.decode() if isinstance(value, bytes) else value)


def read_entries(f: h5py.File) -> dict[str, SnapshotEntry]:
    """task id -> SnapshotEntry for every record of an open snapshot, its fields checked by their digests."""
    out: dict[str, SnapshotEntry] = {}
    for name, g in f["masks"].items():
        task_id = "." if name == "%2E" else ".." if name == "%2E%2E" else name
        try:
            meta = _meta(g)
            changed = changed_fields(meta, meta["parts"])
            if meta["task_id"] != task_id:
                changed.append(f"task_id (it says {meta['task_id']!r})")
            info = RecordInfo.from_meta(meta, g["packed"].shape[0] if "packed" in g else None)
        except (KeyError, ValueError, TypeError, AttributeError, OSError) as e:
            out[task_id] = SnapshotEntry(name, problem=f"unreadable metadata ({type(e).__name__}: {e})")
            continue
        if changed:
            problem = f"metadata changed since it was written: {', '.join(changed)}"
            out[task_id] = SnapshotEntry(name, problem=problem)
        else:
            out[task_id] = SnapshotEntry(name, info)
    return out


def read_mask(f: h5py.File, group: str) -> tuple[TaskMask, dict]:
    """(TaskMask, its stored digests {checksum, bits_checksum, parts}) for one mask record."""
    g = f["masks"][group]
    meta = _meta(g)
    bn = {name: np.asarray(ds[()]) for name, ds in g["bn"].items()} if "bn" in g else {}
    mask = mask_from_meta(meta, np.asarray(g["packed"][()], dtype=np.uint8), bn)
    return mask, {k: meta.get(k) for k in ("checksum", "bits_checksum", "parts")}


def read_packed(f: h5py.File, group: str) -> np.ndarray:
    """Only the packed bits of one record."""
    return np.asarray(f["masks"][group]["packed"][()], dtype=np.uint8)


def write_mask(root: h5py.Group, mask: Record) -> None:
    """Write one mask record (or an array record, see store/array_records.py) as a new group under /masks."""
    if not isinstance(mask, TaskMask):
        write_array_group(root, group_name(mask.task_id), mask)
        return
    g = root.create_group(group_name(mask.task_id))
    g.create_dataset("packed", data=np.ascontiguousarray(mask.packed, dtype=np.uint8))
    if mask.bn_stats:
        bn = g.create_group("bn")
        for name, arr in mask.bn_stats.items():
            bn.create_dataset(name, data=np.asarray(arr))
    g.attrs["meta"] = json.dumps(mask_meta(mask), separators=(",", ":"))


def start_snapshot(f: h5py.File) -> h5py.Group:
    """Write the root attributes of a new, empty snapshot file; returns its /masks group."""
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    return f.create_group("masks")


def write_snapshot(
    path: Path, masks: Iterable[Record] = (), copies: Iterable[tuple[h5py.File, str]] = ()
) -> int:
    """Atomically (re)write `path` with these records; returns how many.

    `copies` are (snapshot, group) pairs copied whole by HDF5, an order of magnitude
    faster than reading and rewriting them; `masks` are written from memory.
    """
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with h5py.File(tmp, "w") as f:
            root = start_snapshot(f)
            for src, group in copies:
                src["masks"].copy(src["masks"][group], root, name=group)
                count += 1
            for mask in masks:
                write_mask(root, mask)
                count += 1

    atomic_write(path, write)
    return count
