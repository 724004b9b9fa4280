"""The record a task's trained weights are kept as: values (fp32 or fp16), sparsity, BN statistics, metrics.

A `TaskWeights` is never a mask: its metadata says `kind: "weights"`, reading it back checks that,
and asking it for masks or packed bits is an error. Stores call `require_kind(meta, "mask")` before
they read a mask, so a weights record is refused there too.

Layers are kept in whichever of three formats is smallest (`format="auto"`): dense values; a bitmap
of the nonzeros plus their values (pays once under half the bits of the values are nonzero); or CSR
over (rows, prod(other dims)) with uint16 column indices where they fit (pays at high sparsity).
Everything converts to plain NumPy arrays and JSON metadata (no pickle).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: the store's actors never need it
    import torch

RECORD_KINDS = ("mask", "weights")
WEIGHTS_KIND = "weights"
FORMATS = ("dense", "bitmap", "csr")
VALUE_DTYPES = ("float32", "float16")
RECORD_VERSION = 1


def require_kind(meta: dict, expected: str) -> None:
    """Raise ValueError unless a stored record's metadata says it is of kind `expected` ("mask" or "weights")."""
    if expected not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {expected!r}; known: {', '.join(RECORD_KINDS)}")
    kind = meta.get("kind", "mask")  # records written before kinds existed are masks
    if kind != expected:
        task = meta.get("task_id", "?")
        raise ValueError(
            f"record of task {task!r} holds {kind}, not a {expected}; read it with "
            + (
                "TaskWeights.from_arrays and evaluate it with its weights"
                if kind == WEIGHTS_KIND
                else "the mask store"
            )
        )


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    rows = int(shape[0]) if shape else 1
    return rows, int(np.prod(shape[1:])) if len(shape) > 1 else 1


def _index_dtype(limit: int) -> np.dtype:
    return np.dtype(np.uint16) if limit <= 2**16 else np.dtype(np.uint32)


def encoded_bytes(values: np.ndarray, fmt: str) -> int:
    """Bytes one layer takes in format `fmt` (values at their dtype, indices as small as they fit)."""
    n, item = values.size, values.dtype.itemsize
    nnz = int(np.count_nonzero(values))
    if fmt == "dense":
        return n * item
    if fmt == "bitmap":
        return (n + 7) // 8 + nnz * item
    if fmt == "csr":
        rows, cols = _matrix_shape(values.shape)
        return (rows + 1) * _index_dtype(nnz).itemsize + nnz * (_index_dtype(cols).itemsize + item)
    raise ValueError(f"unknown weights format {fmt!r}; known: {', '.join(FORMATS)}")


def best_format(values: np.ndarray) -> str:
    """The smallest of the formats for this layer (dense on ties)."""
    return min(FORMATS, key=lambda f: (encoded_bytes(values, f), FORMATS.index(f)))


def encode_layer(values: np.ndarray, fmt: str) -> dict[str, np.ndarray]:
    """One layer's arrays in format `fmt`."""
    if fmt == "dense":
        return {"values": np.ascontiguousarray(values)}
    flat = values.ravel()
    if fmt == "bitmap":
        nonzero = flat != 0
        return {"bitmap": np.packbits(nonzero), "values": flat[nonzero]}
    if fmt == "csr":
        rows, cols = _matrix_shape(values.shape)
        matrix = flat.reshape(rows, cols)
        r, c = np.nonzero(matrix)
        nnz = len(c)
        indptr = np.zeros(rows + 1, dtype=_index_dtype(nnz))
        np.cumsum(np.bincount(r, minlength=rows), out=indptr[1:])
        return {"indptr": indptr, "indices": c.astype(_index_dtype(cols)), "values": matrix[r, c]}
    raise ValueError(f"unknown weights format {fmt!r}; known: {', '.join(FORMATS)}")


def decode_layer(arrays: dict[str, np.ndarray], fmt: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Inverse of `encode_layer`."""
    values = np.asarray(arrays["values"], dtype=dtype)
    if fmt == "dense":
        return values.reshape(shape)
    n = int(np.prod(shape))
    if fmt == "bitmap":
        out = np.zeros(n, dtype=dtype)
        out[np.unpackbits(arrays["bitmap"], count=n).astype(bool)] = values
        return out.reshape(shape)
    if fmt == "csr":
        rows, cols = _matrix_shape(shape)
        out = np.zeros((rows, cols), dtype=dtype)
        row_of = np.repeat(np.arange(rows), np.diff(arrays["indptr"].astype(np.int64)))
        out[row_of, arrays["indices"].astype(np.int64)] = values
        return out.reshape(shape)
    raise ValueError(f"unknown weights format {fmt!r}; known: {', '.join(FORMATS)}")


@dataclass
class TaskWeights:
    """One task's trained effective weights, with their sparsity, BN statistics, base and metrics."""

    task_id: str
    method: str  # the weight method that trained them: dense, str, magnitude
    layer_names: list[str]
    layer_shapes: list[tuple[int, ...]]
    values: list[np.ndarray]  # per layer, float32 or float16, effective weights (zeros where pruned)
    base_fingerprint: str  # the base they started from (its architecture, init and seed)
    bn_stats: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # JSON-serialisable
    created: float = 0.0
    provenance: dict = field(default_factory=dict)

    kind = WEIGHTS_KIND

    def __post_init__(self) -> None:
        # -0.0 (sign(W) * 0, or a masked negative weight) is stored as 0.0, so every format round-trips bytes.
        self.values = [np.asarray(v) + np.asarray(v).dtype.type(0) for v in self.values]
        dtypes = {np.asarray(v).dtype.name for v in self.values}
        if not dtypes <= set(VALUE_DTYPES):
            raise ValueError(f"weights must be float32 or float16, got {sorted(dtypes)}")
        shapes = [tuple(np.shape(v)) for v in self.values]
        if shapes != [tuple(s) for s in self.layer_shapes]:
            raise ValueError(f"weights have shapes {shapes} but layer_shapes are {self.layer_shapes}")

    @property
    def dtype(self) -> str:
        return self.values[0].dtype.name if self.values else "float32"

    @property
    def num_weights(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.layer_shapes))

    @property
    def layer_sparsity(self) -> list[float]:
        """Fraction of each layer's stored values that are zero."""
        return [float(1.0 - np.count_nonzero(v) / max(v.size, 1)) for v in self.values]

    @property
    def sparsity(self) -> float:
        return float(1.0 - sum(int(np.count_nonzero(v)) for v in self.values) / max(self.num_weights, 1))

    @property
    def layer_density(self) -> list[float]:
        """Fraction of each layer's weights that are nonzero (kept), as masks count density."""
        return [1.0 - s for s in self.layer_sparsity]

    @property
    def density(self) -> float:
        """Fraction of all weights that are nonzero (1 - sparsity)."""
        return 1.0 - self.sparsity

    @property
    def dense_bytes(self) -> int:
        """Bytes of the values kept dense."""
        return int(sum(v.nbytes for v in self.values))

    def layer_formats(self, fmt: str = "auto") -> list[str]:
        """The format each layer is stored in: `fmt` for every layer, or the smallest for each ("auto")."""
        if fmt == "auto":
            return [best_format(v) for v in self.values]
        if fmt not in FORMATS:
            raise ValueError(f"unknown weights format {fmt!r}; known: auto, {', '.join(FORMATS)}")
        return [fmt] * len(self.values)

    def stored_bytes(self, fmt: str = "auto") -> int:
        """Bytes of the weight arrays in format `fmt` (BN statistics and metadata not counted)."""
        return int(
            sum(encoded_bytes(v, f) for v, f in zip(self.values, self.layer_formats(fmt), strict=True))
        )

    @property
    def checksum(self) -> str:
        """blake2b over every field and the dense values, so it is the same whatever format stores them."""
        h = hashlib.blake2b(digest_size=16)
        h.update(
            json.dumps(self._meta_fields(), sort_keys=True, separators=(",", ":"), default=_plain).encode()
        )
        for v in self.values:
            h.update(np.ascontiguousarray(v).tobytes())
        for _, v in sorted(self.bn_stats.items()):
            h.update(np.ascontiguousarray(v).tobytes())
        return h.hexdigest()

    def _meta_fields(self) -> dict:
        return {
            "kind": self.kind,
            "task_id": self.task_id,
            "method": self.method,
            "dtype": self.dtype,
            "layer_names": list(self.layer_names),
            "layer_shapes": [[int(d) for d in s] for s in self.layer_shapes],
            "base_fingerprint": self.base_fingerprint,
            "bn": [[k, np.asarray(v).dtype.str, list(np.shape(v))] for k, v in sorted(self.bn_stats.items())],
            "metrics": self.metrics,
            "created": float(self.created),
            "provenance": self.provenance,
        }

    def to_arrays(self, fmt: str = "auto") -> tuple[dict[str, np.ndarray], dict]:
        """(named NumPy arrays, JSON-serialisable metadata): what a store writes."""
        formats = self.layer_formats(fmt)
        arrays: dict[str, np.ndarray] = {}
        for i, (v, f) in enumerate(zip(self.values, formats, strict=True)):
            arrays.update({f"layer{i}/{k}": a for k, a in encode_layer(v, f).items()})
        arrays.update({f"bn/{k}": np.asarray(v) for k, v in self.bn_stats.items()})
        meta = {
            **self._meta_fields(),
            "version": RECORD_VERSION,
            "layer_formats": formats,
            "layer_sparsity": self.layer_sparsity,
            "sparsity": self.sparsity,
            "stored_bytes": self.stored_bytes(fmt),
            "dense_bytes": self.dense_bytes,
            "checksum": self.checksum,
        }
        return arrays, json.loads(json.dumps(meta, default=_plain))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict, *, verify: bool = True) -> TaskWeights:
        """Inverse of `to_arrays`; refuses a record of another kind and (with `verify`) one whose checksum
        does not match (a store checks it itself, to say which part changed)."""
        require_kind(meta, WEIGHTS_KIND)
        if meta.get("version") != RECORD_VERSION:
            raise ValueError(
                f"weights record version {meta.get('version')!r}; this code reads {RECORD_VERSION}"
            )
        shapes = [tuple(s) for s in meta["layer_shapes"]]
        values = []
        for i, (shape, fmt) in enumerate(zip(shapes, meta["layer_formats"], strict=True)):
            prefix = f"layer{i}/"
            layer = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            values.append(decode_layer(layer, fmt, shape, meta["dtype"]))
        record = cls(
            task_id=meta["task_id"],
            method=meta["method"],
            layer_names=list(meta["layer_names"]),
            layer_shapes=shapes,
            values=values,
            base_fingerprint=meta["base_fingerprint"],
            bn_stats={k[3:]: np.asarray(v) for k, v in arrays.items() if k.startswith("bn/")},
            metrics=meta["metrics"],
            created=meta["created"],
            provenance=meta["provenance"],
        )
        if verify and record.checksum != meta["checksum"]:
            raise ValueError(f"weights record of task {record.task_id!r} is corrupt (checksum mismatch)")
        return record

    def tensors(self, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """The weights as float32 tensors, ready for `base(x, weights=...)`."""
        import torch

        return [torch.from_numpy(v.astype(np.float32)).to(device) for v in self.values]

    def bn_tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        import torch

        return {
            k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(device) for k, v in self.bn_stats.items()
        }

    @property
    def packed(self) -> np.ndarray:
        raise TypeError(self._not_a_mask())

    def masks(self) -> list[np.ndarray]:
        raise TypeError(self._not_a_mask())

    def _not_a_mask(self) -> str:
        return (
            f"task {self.task_id!r} holds trained weights ({self.method}), not a mask; "
            "run the base with weights=record.tensors() instead of masks"
        )


def task_weights(
    task_id: str,
    method: str,
    base,
    weights: list[torch.Tensor],
    bn_state: dict[str, torch.Tensor] | None = None,
    *,
    dtype: str = "float32",
    metrics: dict | None = None,
    created: float = 0.0,
    provenance: dict | None = None,
) -> TaskWeights:
    """A record of effective `weights` trained on `base` (a BaseNetwork), in float32 or float16."""
    if dtype not in VALUE_DTYPES:
        raise ValueError(f"weights dtype {dtype!r}; allowed: {', '.join(VALUE_DTYPES)}")
    return TaskWeights(
        task_id=task_id,
        method=method,
        layer_names=list(base.masked_names),
        layer_shapes=[tuple(s) for s in base.layer_shapes],
        values=[w.detach().float().cpu().numpy().astype(dtype) for w in weights],
        base_fingerprint=base.fingerprint,
        bn_stats={k: v.detach().cpu().numpy().astype(np.float32) for k, v in (bn_state or {}).items()},
        metrics=dict(metrics or {}),
        created=created,
        provenance=dict(provenance or {}),
    )


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
