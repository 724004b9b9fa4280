"""Bit packing of binary masks: one bit per weight, and the record a learned task is kept as."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


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


def checksum(packed: np.ndarray) -> str:
    """blake2b-128 hex digest of packed mask bytes."""
    return hashlib.blake2b(np.ascontiguousarray(packed, dtype=np.uint8).tobytes(), digest_size=16).hexdigest()


@dataclass
class TaskMask:
    """Everything kept for one learned task: packed mask bits, BN statistics, provenance and metrics."""

    task_id: str
    packed: np.ndarray  # uint8, ceil(total weights / 8) bytes
    layer_names: list[str]
    layer_shapes: list[tuple[int, ...]]
    layer_density: list[float]
    base_fingerprint: str
    bn_stats: dict[str, np.ndarray] = field(default_factory=dict)  # "<bn module>.running_mean" -> float32
    metrics: dict = field(default_factory=dict)  # JSON-serialisable
    created: float = 0.0  # unix seconds

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
    def checksum(self) -> str:
        return checksum(self.packed)

    def masks(self) -> list[np.ndarray]:
        """Per-layer boolean masks."""
        return unpack_masks(self.packed, self.layer_shapes)
