"""Bit packing of binary masks: one bit per weight, and the record a learned task is kept as."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController


def pack_masks(masks: list[np.ndarray]) -> np.ndarray:
    """Pack per-layer boolean masks into one uint8 array of ceil(total / 8) bytes."""
    flat = np.concatenate([np.asarray(m, dtype=bool).ravel() for m in masks]) if masks else np.zeros(0, bool)
    return np.packbits(flat)


def unpack_masks(packed: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Inverse of `pack_masks`: per-layer boolean arrays with the given shapes."""
    sizes = [int(np.prod(s)) for s in shapes]
    total = sum(sizes)
    expected = (total + 7) // 8
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.size != expected:
        raise ValueError(
            f"packed mask has {packed.size} bytes but layer shapes {shapes} need {expected}; "
            "the mask was packed for a different base network"
        )
    flat = np.unpackbits(packed, count=total).astype(bool)
    out, start = [], 0
    for size, shape in zip(sizes, shapes, strict=True):
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out


def bits_checksum(packed: np.ndarray) -> str:
    """blake2b-128 hex digest of packed mask bytes."""
    return hashlib.blake2b(np.ascontiguousarray(packed, dtype=np.uint8).tobytes(), digest_size=16).hexdigest()


@dataclass
class TaskMask:
    """Everything kept for one learned task: packed mask bits, BN statistics, provenance and metrics.

    `provenance` is {"hash": ..., "fields": {...}}: what produced the mask (stream, data, base, mask
    method, search settings), so a rerun with other settings is caught; empty for masks made by hand.
    """

    task_id: str
    packed: np.ndarray  # uint8, ceil(total weights / 8) bytes
    layer_names: list[str]
    layer_shapes: list[tuple[int, ...]]
    layer_density: list[float]
    base_fingerprint: str
    bn_stats: dict[str, np.ndarray] = field(default_factory=dict)  # "<bn module>.running_mean" -> float32
    metrics: dict = field(default_factory=dict)  # JSON-serialisable
    created: float = 0.0  # unix seconds
    provenance: dict = field(default_factory=dict)  # JSON-serialisable

    @property
    def num_weights(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.layer_shapes))

    @property
    def density(self) -> float:
        """Fraction of all masked weights that are kept."""
        kept = sum(d * int(np.prod(s)) for d, s in zip(self.layer_density, self.layer_shapes, strict=True))
        return float(kept / max(self.num_weights, 1))

    @property
    def mask_bytes(self) -> int:
        return int(self.packed.nbytes)

    @property
    def bits_checksum(self) -> str:
        """blake2b of the packed bits alone (what scoring reads)."""
        return bits_checksum(self.packed)

    def fields(self) -> dict:
        """Every field but the arrays, as plain JSON-ready values (what a store keeps as metadata)."""
        return {
            "task_id": self.task_id,
            "layer_names": [str(n) for n in self.layer_names],
            "layer_shapes": [[int(d) for d in s] for s in self.layer_shapes],
            "layer_density": [float(d) for d in self.layer_density],
            "base_fingerprint": self.base_fingerprint,
            "metrics": self.metrics,
            "created": float(self.created),
            "provenance": self.provenance,
        }

    @property
    def checksum(self) -> str:
        """blake2b over the whole record: bits, BN statistics (names, dtypes, shapes, bytes), every field."""
        meta = {
            **self.fields(),
            "bn": [[k, np.asarray(v).dtype.str, list(np.shape(v))] for k, v in sorted(self.bn_stats.items())],
        }
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps(meta, sort_keys=True, separators=(",", ":"), default=_plain).encode())
        h.update(np.ascontiguousarray(self.packed, dtype=np.uint8).tobytes())
        for _, v in sorted(self.bn_stats.items()):
            h.update(np.ascontiguousarray(v).tobytes())
        return h.hexdigest()

    def masks(self) -> list[np.ndarray]:
        """Per-layer boolean masks."""
        return unpack_masks(self.packed, self.layer_shapes)


def _plain(value):
    """NumPy scalars and arrays in metrics, as JSON would store them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


PACKED_DOT_BLOCK_BYTES = 2**20  # float32 bits unpacked per step of packed_dot: small enough for the cache
PACKED_SUM_WORKING_BYTES = 64 * 2**20  # unpacked bits per step of packed_sum


def packed_dot(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """<query, bits of row i> for packed masks `rows` (k, nbytes): (k,) for one flat query, (k, Q) for (Q, 8*nbytes).

    Queries are float32 of length 8 * nbytes (zero past the last weight, as the pad bits are). The
    bits are unpacked a block of bytes at a time, so the working memory is a few MB whatever k is.
    """
    k, nbytes = rows.shape
    if queries.shape[-1] != 8 * nbytes:
        raise ValueError(
            f"queries have length {queries.shape[-1]}; packed masks of {nbytes} bytes need {8 * nbytes}"
        )
    block = max(1, PACKED_DOT_BLOCK_BYTES // (max(k, 1) * 8 * 4))
    acc = np.zeros((k, *queries.shape[:-1]), np.float64)
    # One BLAS thread: the products are small, and multithreaded OpenBLAS spinning on cores that Ray
    # workers already use is slower by 10-50x.
    with _blas_controller().limit(limits=1, user_api="blas"):
        for b0 in range(0, nbytes, block):
            bits = np.unpackbits(rows[:, b0 : b0 + block], axis=1).astype(np.float32)
            acc += np.dot(bits, queries[..., 8 * b0 : 8 * b0 + bits.shape[1]].T)
    return acc


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def query_matrix(num_queries: int, shapes: list[tuple[int, ...]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """A zeroed float32 (Q, 8 * packed bytes) query matrix for `packed_dot`, and per-layer views (Q, *shape) into it."""
    sizes = [int(np.prod(s)) for s in shapes]
    # The pad bits past the last weight are zero, so the pad columns can stay zero.
    flat = np.zeros((num_queries, (sum(sizes) + 7) // 8 * 8), np.float32)
    views, start = [], 0
    for size, shape in zip(sizes, shapes, strict=True):
        views.append(flat[:, start : start + size].reshape(num_queries, *shape))
        start += size
    return flat, views


def query_count(queries: list[np.ndarray] | np.ndarray) -> int:
    """Q, for per-layer queries (Q, *shape) or a flat (Q, 8 * packed bytes) query matrix."""
    if isinstance(queries, np.ndarray):
        return int(queries.shape[0])
    return int(np.shape(queries[0])[0]) if len(queries) else 0


def flatten_queries(queries: list[np.ndarray] | np.ndarray, shapes: list[tuple[int, ...]]) -> np.ndarray:
    """Per-layer query tensors (Q, *layer shape) as one float32 (Q, 8 * packed bytes) matrix for `packed_dot`.

    A matrix that already has that layout (e.g. from `query_matrix`) is used as it is.
    """
    shapes = [tuple(int(d) for d in s) for s in shapes]
    padded = (int(sum(np.prod(s) for s in shapes)) + 7) // 8 * 8
    if isinstance(queries, np.ndarray) and queries.ndim == 2 and queries.shape[1] == padded:
        return np.ascontiguousarray(queries, dtype=np.float32)
    got = [tuple(np.shape(q)) for q in queries]
    if len(got) != len(shapes) or any(g[1:] != s for g, s in zip(got, shapes, strict=False)):
        raise ValueError(
            f"queries have shapes {got} but the masks' layer shapes are {shapes} (with a leading query axis)"
        )
    num = {g[0] for g in got}
    if len(num) != 1:
        raise ValueError(f"every layer needs the same number of queries, got {sorted(num)}")
    flat, views = query_matrix(num.pop(), shapes)
    for view, query in zip(views, queries, strict=True):
        view[...] = query
    return flat


def packed_sum(rows: np.ndarray, total: int) -> np.ndarray:
    """int32 count, per weight, of the packed masks `rows` (k, nbytes) that keep it."""
    out = np.zeros(total, np.int32)
    step = max(1, PACKED_SUM_WORKING_BYTES // max(8 * rows.shape[1], 1))
    for i in range(0, rows.shape[0], step):
        out += np.unpackbits(rows[i : i + step], axis=1, count=total).sum(0, dtype=np.int32)
    return out


def chunked_packed_sum(ids: list[str], rows_of, total: int, chunk: int) -> np.ndarray:
    """packed_sum over the masks `ids`, reading `chunk` of them at a time through `rows_of(ids)`."""
    flat = np.zeros(total, np.int32)
    for i in range(0, len(ids), max(1, chunk)):
        flat += packed_sum(rows_of(ids[i : i + chunk]), total)
    return flat


def chunked_packed_dot(ids: list[str], rows_of, queries: np.ndarray, chunk: int) -> np.ndarray:
    """(k, Q) packed_dot of the masks `ids` with flat `queries`, `chunk` masks at a time via `rows_of(ids)`."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    out = np.zeros((len(ids), queries.shape[0]), np.float64)
    for i in range(0, len(ids), chunk):
        out[i : i + chunk] = packed_dot(rows_of(ids[i : i + chunk]), queries)
    return out


class RunningSum:
    """Per weight, how many of the masks added (less those removed) keep it: the mean mask's numerator."""

    def __init__(self, shapes: list[tuple[int, ...]]) -> None:
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.counts = np.zeros(int(sum(np.prod(s) for s in self.shapes)), np.int32)

    def add(self, packed: np.ndarray) -> None:
        """Count one packed mask in."""
        self.counts += packed_sum(np.asarray(packed, np.uint8)[None], self.counts.size)

    def remove(self, packed: np.ndarray) -> None:
        """Count one packed mask out."""
        self.counts -= packed_sum(np.asarray(packed, np.uint8)[None], self.counts.size)

    def layers(self) -> list[np.ndarray]:
        """The counts as per-layer int32 arrays (copies)."""
        return split_layers(self.counts, self.shapes)


def split_layers(flat: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """A flat per-weight array cut into per-layer arrays of these shapes (copies)."""
    out, start = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(flat[start : start + n].reshape(s).copy())
        start += n
    return out
