"""Records kept as named arrays beside JSON metadata: trained weights and translation tasks, in a mask file.

A `TaskWeights` (kind "weights") or a `TranslationRecord` (kind "translation") is stored beside masks
under its task id, never as a mask. Each kind says how a record becomes arrays and metadata and back
(`ArrayKind`); the rest is shared. The metadata is the record's own (with its checksum over the whole
record) plus what every record carries for the index: `layer_shapes` and `layer_density` (a weights
record's layers and fraction of nonzeros; none for a translation record), `stored_bytes`,
`bits_checksum` (here over the arrays) and `parts` (a digest per field and per array).

- Weights: the arrays of `TaskWeights.to_arrays()` (each layer dense, as a bitmap of nonzeros plus
  values, or CSR, whichever is smallest; fp32 or fp16) plus its BatchNorm statistics.
- Translation: the record's own arrays (`g_xy/bits`, `g_xy/free/<param>`, `g_yx/<param>`, ...).

Journal payload (`store.journal.encode_payload`): the JSON metadata with an `arrays` list of
[name, dtype, shape], then each array's raw C-order bytes. Snapshot group: the metadata in its `meta`
attribute and one dataset per array, by its name (`layer0/values`, `bn/<stat>`, `g_xy/bits`, ...).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

from supermask.core.records.packing import TaskMask
from supermask.core.records.translation import TranslationRecord
from supermask.core.records.weights import TaskWeights
from supermask.store.journal import decode_payload_arrays, encode_payload
from supermask.store.records import (
    KIND_MASK,
    KIND_TRANSLATION,
    KIND_WEIGHTS,
    canonical_json,
    field_digests,
)

Record = TaskMask | TaskWeights | TranslationRecord


@dataclass(frozen=True)
class ArrayKind:
    """How one kind of record becomes (arrays, metadata) and back."""

    name: str
    record_type: type
    api: str  # the store calls that return records of this kind, for errors
    to_stored: Callable[[object], tuple[dict[str, np.ndarray], dict]]  # metadata without its digests
    rebuild: Callable[[dict[str, np.ndarray], dict], object]  # raises KeyError/ValueError/... if malformed


def _weights_stored(record: TaskWeights) -> tuple[dict[str, np.ndarray], dict]:
    arrays, meta = record.to_arrays("auto")
    return arrays, {**meta, "layer_density": record.layer_density}


def _translation_stored(record: TranslationRecord) -> tuple[dict[str, np.ndarray], dict]:
    meta = {
        **record.meta(),
        "checksum": record.checksum,
        "layer_shapes": [],
        "layer_density": [],
        "stored_bytes": record.nbytes,
    }
    return dict(record.arrays), meta


ARRAY_KINDS = {
    KIND_WEIGHTS: ArrayKind(
        KIND_WEIGHTS,
        TaskWeights,
        "get_weights / get_weights_many",
        _weights_stored,
        lambda arrays, meta: TaskWeights.from_arrays(arrays, meta, verify=False),
    ),
    KIND_TRANSLATION: ArrayKind(
        KIND_TRANSLATION,
        TranslationRecord,
        "TranslationStore.get / get_many",
        _translation_stored,
        lambda arrays, meta: TranslationRecord.from_meta(meta, arrays),
    ),
}
KNOWN_KINDS = (KIND_MASK, *ARRAY_KINDS)


def kind_of(record: object) -> str:
    """The kind a record is stored as (ValueError for anything a store does not hold)."""
    if isinstance(record, TaskMask):
        return KIND_MASK
    for kind in ARRAY_KINDS.values():
        if isinstance(record, kind.record_type):
            return kind.name
    raise ValueError(
        f"a store holds TaskMask, TaskWeights and TranslationRecord records, not {type(record).__name__}"
    )


def _array_digest(name: str, arr: np.ndarray) -> str:
    arr = np.asarray(arr)
    data = f"{arr.dtype.str}{list(arr.shape)}".encode() + np.ascontiguousarray(arr).tobytes()
    return hashlib.blake2b(name.encode() + b"\0" + data, digest_size=8).hexdigest()


def _arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        h.update(_array_digest(name, arrays[name]).encode())
    return h.hexdigest()


def stored_form(record: TaskWeights | TranslationRecord) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, metadata with its digests) of an array record as a store keeps it."""
    arrays, meta = ARRAY_KINDS[kind_of(record)].to_stored(record)
    meta["bits_checksum"] = _arrays_checksum(arrays)
    meta["parts"] = {**field_digests(meta), **{f"array/{k}": _array_digest(k, v) for k, v in arrays.items()}}
    return arrays, json.loads(canonical_json(meta))


def array_record_problem(arrays: dict[str, np.ndarray], meta: dict) -> tuple[object | None, str | None]:
    """(record, None) if stored arrays and metadata read back into a record that matches its checksum,
    else (None, what is wrong, naming the parts that changed)."""
    parts = meta.get("parts") or {}
    digests = field_digests(meta)
    changed = [
        k
        for k in sorted(set(digests) | {k for k in parts if not k.startswith("array/")})
        if digests.get(k) != parts.get(k)
    ]
    changed += sorted(
        k
        for k in {f"array/{n}" for n in arrays} | {k for k in parts if k.startswith("array/")}
        if k[6:] not in arrays or _array_digest(k[6:], arrays[k[6:]]) != parts.get(k)
    )
    try:
        record = ARRAY_KINDS[meta["kind"]].rebuild(arrays, meta)
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


def encode_array_put(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """A journal put payload of an array record."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    head = {**meta, "arrays": [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()]}
    return encode_payload(head, list(arrays.values()))


def decode_array_payload(payload: bytes | memoryview, meta: dict) -> dict[str, np.ndarray]:
    """The arrays that follow an array record's put payload header, by name."""
    specs = [(dtype, shape) for _, dtype, shape in meta["arrays"]]
    values = decode_payload_arrays(payload, specs)
    return {name: v for (name, _, _), v in zip(meta["arrays"], values, strict=True)}


def write_array_group(root: h5py.Group, name: str, record: TaskWeights | TranslationRecord) -> None:
    """Write one array record as a new group `name` under /masks."""
    arrays, meta = stored_form(record)
    g = root.create_group(name)
    for key, value in arrays.items():
        g.create_dataset(key, data=value)
    g.attrs["meta"] = json.dumps(meta, separators=(",", ":"))


def read_array_group(g: h5py.Group) -> dict[str, np.ndarray]:
    """Every dataset of an array record's group, by its path inside the group."""
    arrays: dict[str, np.ndarray] = {}
    g.visititems(
        lambda key, obj: (
            arrays.__setitem__(key, np.asarray(obj[()])) if isinstance(obj, h5py.Dataset) else None
        )
    )
    return arrays
