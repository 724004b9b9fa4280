"""A stored record's metadata, what the index keeps of it, and the digests that check it.

Every record carries three digests:

- `checksum`: `TaskMask.checksum`, blake2b over the whole record (bits, BatchNorm arrays, every
  field). It is the authority: every read of a whole record checks it.
- `bits_checksum`: blake2b over the packed bits alone, checked by the reads that need only the bits
  (scoring, mask sums).
- `parts`: a short digest per field and per array. They let a mismatch name what changed, and let
  every field that is not an array (shapes, densities, base, metrics, provenance, ...) be checked
  when a file is opened, without reading any arrays.

Each record also has a `kind`: `"mask"` (a `TaskMask`), `"weights"` (a `TaskWeights`: trained
weights) or `"translation"` (a `TranslationRecord`: a translation task's generators); the last two
are kept as named arrays beside their metadata (see store/array_records.py). A record is only ever
returned as its own kind. An array record's "bits" checksum is over its arrays, and its digested
fields include its kind's own (a weights record's method, dtype, storage formats and sizes; a
translation record's method, settings, mask spec and layers).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np

from supermask.core.records.packing import TaskMask

FORMAT_VERSION = 2  # of mask files, snapshot and journal together (1: a checksum of the bits only)
KIND_MASK = "mask"
KIND_WEIGHTS = "weights"
KIND_TRANSLATION = "translation"


def _plain(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def canonical_json(value: object) -> str:
    """The one JSON text of a value (sorted keys, no spaces) that the digests are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)


def _same(value: object) -> object:
    return value


# Each metadata field as it is digested, whatever types it was written or read back with (tuples, numpy, ...).
_NORMALISE = {
    "task_id": str,
    "kind": str,
    "layer_names": lambda v: [str(n) for n in v],
    "layer_shapes": lambda v: [[int(d) for d in s] for s in v],
    "layer_density": lambda v: [float(d) for d in v],
    "base_fingerprint": str,
    "metrics": _same,
    "created": float,
    "provenance": _same,
    # records kept as named arrays (trained weights, translation)
    "method": str,
    "stored_bytes": int,
    # weights records only
    "dtype": str,
    "layer_formats": lambda v: [str(f) for f in v],
    "dense_bytes": int,
    # translation records only
    "settings": _same,
    "mask": _same,
    "layers": _same,
}
_INDEXED = ("layer_shapes", "layer_density", "base_fingerprint", "metrics", "created", "provenance")
MASK_FIELDS = ("task_id", "kind", "layer_names", *_INDEXED)
WEIGHTS_FIELDS = (*MASK_FIELDS, "method", "dtype", "layer_formats", "stored_bytes", "dense_bytes")
TRANSLATION_FIELDS = ("task_id", "kind", *_INDEXED, "method", "stored_bytes", "settings", "mask", "layers")
_FIELDS = {KIND_WEIGHTS: WEIGHTS_FIELDS, KIND_TRANSLATION: TRANSLATION_FIELDS}
INDEX_EXTRA = {  # what the index keeps of each kind's own metadata (describe() shows it)
    KIND_WEIGHTS: ("method", "dtype", "sparsity", "stored_bytes", "dense_bytes", "layer_formats"),
    KIND_TRANSLATION: ("method", "stored_bytes"),
}


def record_fields(meta: dict) -> tuple[str, ...]:
    """The metadata fields a record of this kind carries (and digests)."""
    return _FIELDS.get(meta.get("kind"), MASK_FIELDS)


def _digest(name: str, data: bytes) -> str:
    return hashlib.blake2b(name.encode() + b"\0" + data, digest_size=8).hexdigest()


def _array_digest(name: str, arr: np.ndarray) -> str:
    arr = np.asarray(arr)
    head = f"{arr.dtype.str}{list(arr.shape)}".encode()
    return _digest(name, head + np.ascontiguousarray(arr).tobytes())


def field_digests(meta: dict, fields: tuple[str, ...] | None = None) -> dict[str, str]:
    """Digest of each metadata field (all, or `fields`) of a record."""
    names = fields or record_fields(meta)
    return {k: _digest(k, canonical_json(_NORMALISE[k](meta[k])).encode()) for k in names}


def part_digests(mask: TaskMask, bits: str | None = None) -> dict[str, str]:
    """Digest of every part of a mask's record: each field, the packed bits, each BatchNorm array.

    The bits' digest is their bits checksum (`bits`, when the caller has it already).
    """
    parts = field_digests(mask_meta_fields(mask))
    parts["packed"] = bits or mask.bits_checksum
    for name, arr in mask.bn_stats.items():
        parts[f"bn/{name}"] = _array_digest(f"bn/{name}", arr)
    return parts


def changed_parts(mask: TaskMask, recorded: dict) -> list[str]:
    """The parts of a mask's record whose digest differs from the one recorded when it was written."""
    now = part_digests(mask)
    names = sorted(set(now) | set(recorded), key=lambda k: (k.startswith("bn/"), k))
    return [k for k in names if now.get(k) != recorded.get(k)]


def changed_fields(meta: dict, recorded: dict) -> list[str]:
    """The fields (not arrays) of a record's stored metadata that differ from their recorded digests."""
    now = field_digests(meta)
    return [k for k in now if now[k] != recorded.get(k)]


def mask_meta_fields(mask: TaskMask) -> dict:
    """A mask's fields (no arrays) as plain JSON-ready values, with its kind."""
    fields = mask.fields()
    return {"task_id": fields.pop("task_id"), "kind": KIND_MASK, **fields}


def mask_meta(mask: TaskMask, checksum: str | None = None) -> dict:
    """Everything stored about a mask except its arrays: its fields, digests and density.

    `checksum` is mask.checksum when the caller has it already.
    """
    bits = mask.bits_checksum
    return {
        **mask_meta_fields(mask),
        "checksum": checksum or mask.checksum,
        "bits_checksum": bits,
        "parts": part_digests(mask, bits),
        "density": mask.density,
    }


def mask_from_meta(meta: dict, packed: np.ndarray, bn_stats: dict[str, np.ndarray]) -> TaskMask:
    """The TaskMask a stored record describes."""
    return TaskMask(
        task_id=str(meta["task_id"]),
        packed=packed,
        layer_names=[str(n) for n in meta["layer_names"]],
        layer_shapes=[tuple(int(d) for d in s) for s in meta["layer_shapes"]],
        layer_density=[float(d) for d in meta["layer_density"]],
        base_fingerprint=str(meta["base_fingerprint"]),
        bn_stats=bn_stats,
        metrics=meta["metrics"],
        created=float(meta["created"]),
        provenance=meta.get("provenance") or {},  # format 1 kept none
    )


def record_problem(mask: TaskMask, stored: dict) -> str | None:
    """What is wrong with a record read back whole (None if nothing): its checksums against `stored`."""
    actual = mask.checksum
    if actual == stored.get("checksum"):
        return None
    parts = stored.get("parts")
    changed = changed_parts(mask, parts) if isinstance(parts, dict) else []
    what = (
        f"changed since it was written: {', '.join(changed)}"
        if changed
        else "its per-field digests do not say which part changed"
    )
    return f"record checksum mismatch, {what} (recorded {stored.get('checksum')}, now {actual})"


@dataclass(frozen=True)
class RecordInfo:
    """What the index keeps of a record without reading its arrays."""

    kind: str
    checksum: str
    bits_checksum: str
    fingerprint: str
    layer_shapes: tuple[tuple[int, ...], ...]
    layer_density: tuple[float, ...]
    nbytes: int
    created: float
    provenance: dict
    extra: dict = field(default_factory=dict)  # a weights record's method, dtype, sparsity and sizes

    @classmethod
    def from_meta(cls, meta: dict, nbytes: int | None = None) -> RecordInfo:
        """From a record's stored metadata (a snapshot's `meta` attribute or a journal header); `nbytes`
        is a mask's packed size (a weights record says its own stored size)."""
        keys = INDEX_EXTRA.get(meta["kind"], ())
        extra = {k: meta[k] for k in keys}
        if keys:
            nbytes = meta["stored_bytes"]
        return cls(
            kind=str(meta["kind"]),
            checksum=str(meta["checksum"]),
            bits_checksum=str(meta["bits_checksum"]),
            fingerprint=str(meta["base_fingerprint"]),
            layer_shapes=tuple(tuple(int(d) for d in s) for s in meta["layer_shapes"]),
            layer_density=tuple(float(d) for d in meta["layer_density"]),
            nbytes=int(nbytes),
            created=float(meta["created"]),
            provenance=meta["provenance"],
            extra=extra,
        )

    @property
    def density(self) -> float | None:
        """Fraction of all masked weights kept (as TaskMask.density); None for a record without layers."""
        if not self.layer_shapes:
            return None
        sizes = [math.prod(s) for s in self.layer_shapes]
        kept = sum(d * n for d, n in zip(self.layer_density, sizes, strict=True))
        return float(kept / max(sum(sizes), 1))

    def describe(self) -> dict:
        """The metadata `describe()` reports for one record (a weights record adds method, dtype, sparsity,
        stored and dense bytes and its layers' storage formats; its mask_bytes is None)."""
        return {
            "kind": self.kind,
            "base_fingerprint": self.fingerprint,
            "provenance": json.loads(canonical_json(self.provenance)),  # a copy the caller may change
            "density": self.density,
            "layer_density": list(self.layer_density),
            "mask_bytes": self.nbytes if self.kind == KIND_MASK else None,
            "stored_bytes": self.nbytes,
            "created": self.created,
            "checksum": self.checksum,
            **json.loads(canonical_json(self.extra)),
        }


DESCRIBE_KEYS = (
    "kind",
    "base_fingerprint",
    "provenance",
    "density",
    "layer_density",
    "mask_bytes",
    "stored_bytes",
    "created",
    "checksum",
)


def describe_unreadable(problem: str | None) -> dict:
    """What `describe()` reports for a record whose metadata cannot be used: None values and the problem."""
    return {**dict.fromkeys(DESCRIBE_KEYS), "problem": problem}


def provenance_key(info: RecordInfo | None) -> str:
    """How a record's provenance is counted: its hash; "none" for masks made by hand, "damaged" if unusable."""
    if info is None:
        return "damaged"
    return str(info.provenance.get("hash") or "none")
