"""A dense associative memory (modern Hopfield network) over neuron patterns kept as packed bits.

The stored patterns X (k patterns, z = 2m - 1 over all masked layers concatenated, D = sum of the
layer sizes) are kept bit-packed: k * D / 8 bytes, exactly what an exact mask store would spend.
What this adds to the bits is a retrieval rule with attractors:

- energy E(s) = -(1/beta) log sum_mu exp(beta <x_mu, s>), a smooth max of the overlaps;
- retrieval s <- sign(X^T softmax(beta X s)), iterated to a fixed point.

One softmax over the whole concatenated pattern makes the layers agree on one stored task (the
classical reservoir keeps one matrix per layer, which can settle on different tasks per layer).
With beta = 1/sqrt(D) (the default) two random patterns' overlaps differ by about 1 in the softmax
while a start near a stored pattern is about sqrt(D) ahead of the rest, so retrieval is soft from the
mean start and sharp near an attractor.

This memory is NOT constant-size: it grows by D bits per stored task, like the exact store. Per
byte it can only match packed bits (it is packed bits); its advantage is over the d x d matrix,
which costs d^2 numbers per layer whatever k is.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from supermask.core.hopfield.reservoir import RecallResult

STATE_VERSION = 1


class DenseMemory:
    """Stored neuron patterns as packed bits with softmax (modern Hopfield) retrieval and energy."""

    def __init__(self, dims: list[int], beta: float | None = None) -> None:
        if not dims or any(int(d) < 1 for d in dims):
            raise ValueError(f"a dense memory needs one positive size per masked layer, got dims {dims}")
        self.dims = [int(d) for d in dims]
        self.size = sum(self.dims)
        self.beta = 1.0 / math.sqrt(self.size) if beta is None else float(beta)
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self._packed: list[np.ndarray] = []  # one (ceil(size/8),) uint8 row per stored task
        self._sum = np.zeros(self.size, dtype=np.int64)
        self._torch_cache: tuple[object, torch.Tensor] | None = None

    @property
    def count(self) -> int:
        return len(self._packed)

    def _flat(self, patterns: list[np.ndarray]) -> np.ndarray:
        if len(patterns) != len(self.dims):
            raise ValueError(f"got {len(patterns)} patterns for a memory of {len(self.dims)} layers")
        for i, (p, d) in enumerate(zip(patterns, self.dims, strict=True)):
            if np.shape(p) != (d,):
                raise ValueError(f"layer {i}: pattern of shape {np.shape(p)}, the memory holds ({d},)")
        return np.concatenate([np.asarray(p, dtype=bool) for p in patterns])

    def _split(self, flat: np.ndarray) -> list[np.ndarray]:
        return list(np.split(flat, np.cumsum(self.dims)[:-1]))

    def store(self, patterns: list[np.ndarray]) -> None:
        """Add one task's neuron patterns (one boolean (d,) vector per layer)."""
        flat = self._flat(patterns)
        self._packed.append(np.packbits(flat))
        self._sum += np.where(flat, 1, -1)
        self._torch_cache = None

    def states(self, rows: slice | None = None) -> np.ndarray:
        """Stored patterns as a (k, D) float32 matrix of +-1 (rows: a slice of the tasks)."""
        chosen = self._packed[rows] if rows is not None else self._packed
        if not chosen:
            return np.zeros((0, self.size), dtype=np.float32)
        bits = np.unpackbits(np.stack(chosen), axis=1, count=self.size)
        return bits.astype(np.float32) * 2 - 1

    def patterns(self, index: int) -> list[np.ndarray]:
        """The exact stored patterns of task `index` (in storing order)."""
        return self._split(np.unpackbits(self._packed[index], count=self.size).astype(bool))

    def mean_state(self) -> list[np.ndarray]:
        """Mean of the stored z per layer (float32); zeros when nothing is stored."""
        mean = self._sum / max(self.count, 1)
        return [m.astype(np.float32) for m in self._split(mean)]

    def _torch_states(self, device) -> torch.Tensor:
        key = (str(device), self.count)
        if self._torch_cache is None or self._torch_cache[0] != key:
            self._torch_cache = (key, torch.from_numpy(self.states()).to(device))
        return self._torch_cache[1]

    def torch_energy(self, states: list[torch.Tensor]) -> torch.Tensor:
        """Differentiable E(s) = -(1/beta) logsumexp(beta X s) over the concatenated layer states."""
        if self.count == 0:
            raise ValueError("the dense memory is empty: store a pattern before asking for its energy")
        s = torch.cat(list(states))
        overlaps = self._torch_states(s.device) @ s
        return -torch.logsumexp(self.beta * overlaps, dim=0) / self.beta

    def energy(self, patterns: list[np.ndarray]) -> float:
        """E of boolean patterns."""
        s = torch.from_numpy(np.where(self._flat(patterns), 1.0, -1.0).astype(np.float32))
        return float(self.torch_energy(self._split_t(s)))

    def _split_t(self, s: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(s, self.dims))

    def recall(self, start: list[np.ndarray], max_steps: int = 100) -> RecallResult:
        """Softmax retrieval from boolean start patterns (one state over every layer: the same steps for each)."""
        s = np.where(self._flat(start), 1.0, -1.0).astype(np.float32)[None]
        out, steps, converged = dense_descent(self.states(), s, self.beta, max_steps)
        n = len(self.dims)
        return RecallResult(self._split(out[0] > 0), [int(steps[0])] * n, [bool(converged[0])] * n)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored state: packed patterns plus the running sum."""
        return sum(p.nbytes for p in self._packed) + self._sum.nbytes

    def state_dict(self) -> dict:
        """The memory as plain data: {"meta": JSON-able dict, "arrays": name -> NumPy array}."""
        packed = np.stack(self._packed) if self._packed else np.zeros((0, (self.size + 7) // 8), np.uint8)
        meta = {"version": STATE_VERSION, "kind": "dense_memory", "dims": self.dims, "beta": self.beta}
        return {"meta": meta, "arrays": {"packed": packed, "sum": self._sum}}

    @classmethod
    def from_state(cls, state: dict) -> DenseMemory:
        """Rebuild from `state_dict()` output; the running sum is checked against the patterns."""
        meta, arrays = state["meta"], state["arrays"]
        if meta.get("kind") != "dense_memory" or meta.get("version") != STATE_VERSION:
            raise ValueError(f"not a version-{STATE_VERSION} dense memory state: {meta!r}")
        out = cls(meta["dims"], meta["beta"])
        packed = np.asarray(arrays["packed"], dtype=np.uint8)
        out._packed = [row.copy() for row in packed]
        if out.count:
            recount = (out.states() > 0).sum(0).astype(np.int64) * 2 - out.count
            if not np.array_equal(recount, np.asarray(arrays["sum"])):
                raise ValueError("dense memory state: running sum does not match the stored patterns")
        out._sum = np.array(arrays["sum"], dtype=np.int64, copy=True)
        return out


def dense_descent(
    stored: np.ndarray, states: np.ndarray, beta: float, max_steps: int = 100, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterate s <- sign(X^T softmax(beta X s)) for a batch of +-1 states (n, D) against X (k, D).

    `stored` may be a (k, D) float32 +-1 matrix or a (k, ceil(D/8)) uint8 packed one (unpacked `chunk`
    rows at a time). Ties keep the current sign. Returns (states, changing steps, converged).
    """
    packed = stored.dtype == np.uint8
    size = states.shape[1]

    def rows(lo: int, hi: int) -> np.ndarray:
        if not packed:
            return stored[lo:hi]
        return np.unpackbits(stored[lo:hi], axis=1, count=size).astype(np.float32) * 2 - 1

    k = stored.shape[0]
    s = np.array(states, dtype=np.float32, copy=True)
    steps = np.zeros(s.shape[0], dtype=np.int64)
    converged = np.zeros(s.shape[0], dtype=bool)
    for _ in range(max_steps):
        logits = np.concatenate([s @ rows(lo, lo + chunk).T for lo in range(0, k, chunk)], axis=1) * beta
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        field = sum(weights[:, lo : lo + chunk] @ rows(lo, lo + chunk) for lo in range(0, k, chunk))
        new = np.where(field > 0, 1.0, np.where(field < 0, -1.0, s)).astype(np.float32)
        changed = (new != s).any(axis=1)  # a fixed point stays fixed, so only the last step matters
        steps += changed
        s, converged = new, ~changed
        if converged.all():
            break
    return s, steps, converged
