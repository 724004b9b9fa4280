"""Trained-weights records in a mask file: their metadata, journal payload and snapshot group.

A `TaskWeights` is stored beside masks under its task id with `kind: "weights"`, never as a mask.
Its arrays are those of `TaskWeights.to_arrays()` (each layer dense, as a bitmap of nonzeros plus
values, or CSR, whichever is smallest; fp32 or fp16) plus its BatchNorm statistics. The metadata
is the record's own (method, dtype, layer formats, sparsity, stored and dense bytes, checksum over
the whole record) plus what every record carries for the index: `layer_density` (fraction of
nonzeros), `bits_checksum` (here over the value arrays) and `parts` (a digest per field and array).

Journal payload: a little-endian u32 length, the JSON metadata with an `arrays` list of
[name, dtype, shape], then each array's raw C-order bytes. Snapshot group: the metadata in its
`meta` attribute and one dataset per array (`layer0/values`, `layer0/bitmap`, `bn/<stat>`, ...).
"""

from __future__ import annotations

import hashlib
import json
import struct

import h5py
import numpy as np

from supermask.core.records.weights import TaskWeights
from supermask.store.records import KIND_WEIGHTS, canonical_json, field_digests

_LEN = struct.Struct("<I")


def _array_digest(name: str, arr: np.ndarray) -> str:
    arr = np.asarray(arr)
    data = f"{arr.dtype.str}{list(arr.shape)}".encode() + np.ascontiguousarray(arr).tobytes()
    return hashlib.blake2b(name.encode() + b"\0" + data, digest_size=8).hexdigest()


def _arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        h.update(_array_digest(name, arrays[name]).encode())
    return h.hexdigest()


def weights_record(record: TaskWeights) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, metadata) of a TaskWeights as a store keeps it."""
    arrays, meta = record.to_arrays("auto")
    meta["layer_density"] = record.layer_density
    meta["bits_checksum"] = _arrays_checksum(arrays)
    meta["parts"] = {**field_digests(meta), **{f"array/{k}": _array_digest(k, v) for k, v in arrays.items()}}
    return arrays, json.loads(canonical_json(meta))


def weights_problem(arrays: dict[str, np.ndarray], meta: dict) -> tuple[TaskWeights | None, str | None]:
    """(record, None) if stored arrays and metadata read back into a record that matches its checksum,
    else (None, what is wrong, naming the parts that changed)."""
    parts = meta.get("parts") or {}
    changed = [
        k
        for k in sorted(set(field_digests(meta)) | {k for k in parts if not k.startswith("array/")})
        if field_digests(meta).get(k) != parts.get(k)
    ]
    changed += sorted(
        k
        for k in {f"array/{n}" for n in arrays} | {k for k in parts if k.startswith("array/")}
        if k[6:] not in arrays or _array_digest(k[6:], arrays[k[6:]]) != parts.get(k)
    )
    try:
        record = TaskWeights.from_arrays(arrays, meta, verify=False)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        return (
            None,
            f"cannot be rebuilt ({type(e).__name__}: {e}); changed: {', '.join(changed) or 'nothing named'}",
        )
    actual = record.checksum
    if actual != meta.get("checksum") or changed:
        what = (
            f"changed since it was written: {', '.join(changed)}" if changed else "no digest says which part"
        )
        return None, f"record checksum mismatch, {what} (recorded {meta.get('checksum')}, now {actual})"
    return record, None


def encode_weights_put(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """A journal put payload of a weights record."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    head = {**meta, "arrays": [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()]}
    head_bytes = json.dumps(head, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(head_bytes)), head_bytes, *(v.tobytes() for v in arrays.values())])


def decode_weights_arrays(payload: bytes | memoryview, meta: dict) -> dict[str, np.ndarray]:
    """The arrays that follow a weights put payload's header."""
    pos = _LEN.size + _LEN.unpack_from(payload, 0)[0]
    arrays = {}
    for name, dtype, shape in meta["arrays"]:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(payload, dt, count, pos).reshape(tuple(shape)).copy()
        pos += count * dt.itemsize
    if pos != len(payload):
        raise ValueError(f"put payload has {len(payload) - pos} trailing bytes")
    return arrays


def write_weights_group(root: h5py.Group, name: str, record: TaskWeights) -> None:
    """Write one weights record as a new group `name` under /masks."""
    arrays, meta = weights_record(record)
    g = root.create_group(name)
    for key, value in arrays.items():
        g.create_dataset(key, data=value)
    g.attrs["meta"] = json.dumps(meta, separators=(",", ":"))


def read_weights_group(g: h5py.Group) -> dict[str, np.ndarray]:
    """Every dataset of a weights record's group, by its path inside the group."""
    arrays: dict[str, np.ndarray] = {}
    g.visititems(
        lambda key, obj: (
            arrays.__setitem__(key, np.asarray(obj[()])) if isinstance(obj, h5py.Dataset) else None
        )
    )
    return arrays


def is_weights(meta: dict) -> bool:
    return meta.get("kind") == KIND_WEIGHTS
