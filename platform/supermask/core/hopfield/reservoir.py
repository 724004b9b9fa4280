"""A Hopfield reservoir: neuron masks stored as attractors of one d x d matrix Psi per masked layer.

A neuron pattern m in {0, 1}^d is stored as z = 2m - 1 in {-1, +1}^d by one of three rules:

- `hebbian` (SupSup's paper text): Psi += z z^T / d;
- `storkey` (SupSup's code): h = Psi z; Psi += (z z^T - I - z h^T - h z^T) / d;
- `projection` (the incremental pseudo-inverse rule, not in the source): e = z - Psi z;
  Psi += e e^T / (e^T e). Psi stays the orthogonal projection onto the span of the stored patterns,
  so every stored pattern (up to d linearly independent ones, correlated or not) is a fixed point
  with the lowest energy a +-1 state can have, -d/2. Storkey does not guarantee this for correlated
  patterns: SplitMNIST's learned second-layer patterns overlap by 0.5-0.6 and the first ones stored
  stop being fixed points. A pattern already in the span (e ~ 0) leaves Psi as it is.

Energy: E(z) = -1/2 z^T Psi z. On {-1, +1}^d the diagonal of Psi only adds the constant
-1/2 trace(Psi) to E, so the sign dynamics here use the off-diagonal field h_i = sum_{j != i}
Psi_ij z_j: asynchronous flips then never raise E. (Recovery by gradient, `core.hopfield.recovery`, uses the
whole matrix, as the source does.)

Storage (`dtype`): the diagonal is always kept in fp32 (d numbers); the off-diagonal part in

- `fp32`: updated in place in fp32;
- `fp16`: each update is computed in fp32 from the stored matrix and rounded back to fp16
  (round to nearest; relative error <= 2^-11 per entry per update);
- `int8`: off-diagonal = scale * Q with Q in [-127, 127] and one scale per matrix. The scale starts
  at 1/d (one Hebbian count) and only grows, to the smallest value that fits when an entry would
  overflow (for Hebbian, a whole number of counts). An update is computed in fp32 from the
  dequantised matrix and rounded to the nearest step. Hebbian is therefore exact (Q holds the
  integer sums of z_i z_j) while every off-diagonal |sum| <= 127, which random patterns keep to
  k of several hundred; afterwards, and for every Storkey update, an entry loses up to scale/2
  per update.

A running sum of the stored z (int64, d per layer) gives the mean pattern in constant memory.
`state_dict` / `from_state` move a reservoir as plain NumPy arrays and JSON-able metadata.

Storing, replaying and the sign dynamics run on NumPy alone (a reservoir actor restarted after a
crash rebuilds its matrices without importing torch); only the differentiable energy used by
recovery (`torch_matrices`, `torch_energy`) imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

RULES = ("hebbian", "storkey", "projection")
DTYPES = ("fp32", "fp16", "int8")
_STORAGE = {"fp32": np.float32, "fp16": np.float16, "int8": np.int8}
STATE_VERSION = 1


def to_state(pattern: np.ndarray) -> np.ndarray:
    """z = 2m - 1 in {-1, +1} (float32) from a boolean (or 0/1) pattern m."""
    return np.where(np.asarray(pattern, dtype=bool), 1.0, -1.0).astype(np.float32)


def hebbian_increment(psi: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The Hebbian change z z^T / d, written literally in float64 (`Reservoir.store` does it in place)."""
    z = np.asarray(z, dtype=np.float64)
    return np.outer(z, z) / z.shape[0]


def storkey_increment(psi: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The Storkey change (z z^T - I - z h^T - h z^T) / d with h = Psi z, written literally in float64."""
    z = np.asarray(z, dtype=np.float64)
    d = z.shape[0]
    h = np.asarray(psi, dtype=np.float64) @ z
    return (np.outer(z, z) - np.eye(d) - np.outer(z, h) - np.outer(h, z)) / d


def projection_increment(psi: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The projection change e e^T / (e^T e) with e = z - Psi z, written literally in float64."""
    z = np.asarray(z, dtype=np.float64)
    e = z - np.asarray(psi, dtype=np.float64) @ z
    return np.outer(e, e) / float(e @ e)


def estimated_capacity(d: int, rule: str) -> int:
    """Capacity estimate for random patterns: 0.14 d (Hebbian), d / sqrt(2 ln d) (Storkey), d / 2 (projection).

    Under the projection rule any d linearly independent patterns are fixed points, but their basins
    of attraction shrink as k / d grows; d / 2 is a rough estimate, not measured here.
    """
    if rule == "hebbian":
        return int(0.14 * d)
    if rule == "storkey":
        return int(d / math.sqrt(2.0 * math.log(d)))
    if rule == "projection":
        return d // 2
    raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")


def sync_descent(
    off: np.ndarray, states: np.ndarray, max_steps: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synchronous sign updates z <- sign(off z) for a batch of states (n, d), ties keeping their sign.

    `off` is Psi with a zero diagonal. Returns (final states, sweeps that changed a state, converged):
    a state that returns to where it was two sweeps ago (a 2-cycle) or runs out of steps is not converged.
    """
    s = np.array(states, dtype=np.float32, copy=True)
    n = s.shape[0]
    steps = np.zeros(n, dtype=np.int64)
    converged = np.zeros(n, dtype=bool)
    active = np.ones(n, dtype=bool)
    previous = np.full_like(s, np.nan)
    for _ in range(max_steps):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        cur = s[idx]
        field = cur @ off.T
        new = np.where(field > 0, 1.0, np.where(field < 0, -1.0, cur)).astype(np.float32)
        changed = (new != cur).any(axis=1)
        cycled = changed & (new == previous[idx]).all(axis=1)
        steps[idx[changed]] += 1
        converged[idx[~changed]] = True
        active[idx[~changed | cycled]] = False
        previous[idx] = cur
        s[idx] = new
    return s, steps, converged


def async_descent(
    off: np.ndarray, state: np.ndarray, max_sweeps: int = 100, seed: int = 0
) -> tuple[np.ndarray, int, bool]:
    """Asynchronous sign updates in a seeded random order per sweep; each flip lowers the energy.

    Returns (final state, sweeps that flipped a unit, converged: a whole sweep without a flip).
    """
    rng = np.random.default_rng(seed)
    s = np.array(state, dtype=np.float32, copy=True)
    field = off @ s
    sweeps = 0
    for _ in range(max_sweeps):
        flipped = False
        for i in rng.permutation(s.shape[0]):
            h = field[i]
            new = 1.0 if h > 0 else (-1.0 if h < 0 else s[i])
            if new != s[i]:
                field += (new - s[i]) * off[:, i]
                s[i] = new
                flipped = True
        if not flipped:
            return s, sweeps, True
        sweeps += 1
    return s, sweeps, False


@dataclass
class RecallResult:
    """What sign descent from a start reached: per-layer boolean patterns, sweeps and whether it settled."""

    patterns: list[np.ndarray]
    steps: list[int]
    converged: list[bool]


class Reservoir:
    """One Hopfield matrix per masked layer storing neuron patterns as attractors, in fixed memory."""

    def __init__(self, dims: list[int], rule: str = "storkey", dtype: str = "fp32") -> None:
        if rule not in RULES:
            raise ValueError(f"unknown reservoir rule {rule!r}; known: {', '.join(RULES)}")
        if dtype not in DTYPES:
            raise ValueError(f"unknown reservoir dtype {dtype!r}; known: {', '.join(DTYPES)}")
        if not dims or any(int(d) < 2 for d in dims):
            raise ValueError(f"a reservoir needs one size >= 2 per masked layer, got dims {dims}")
        self.dims = [int(d) for d in dims]
        self.rule, self.dtype = rule, dtype
        self.count = 0
        self._off = [np.zeros((d, d), dtype=_STORAGE[dtype]) for d in self.dims]
        self._diag = [np.zeros(d, dtype=np.float32) for d in self.dims]
        self._scale = [1.0 / d if dtype == "int8" else 1.0 for d in self.dims]
        self._sum = [np.zeros(d, dtype=np.int64) for d in self.dims]
        self._torch_cache: tuple[object, list[torch.Tensor]] | None = None
        self._attractor_cache: tuple[tuple, list[list[np.ndarray]]] | None = None

    def _check(self, patterns: list[np.ndarray]) -> list[np.ndarray]:
        if len(patterns) != len(self.dims):
            raise ValueError(f"got {len(patterns)} patterns for a reservoir of {len(self.dims)} layers")
        out = []
        for i, (p, d) in enumerate(zip(patterns, self.dims, strict=True)):
            p = np.asarray(p)
            if p.shape != (d,):
                raise ValueError(f"layer {i}: pattern of shape {p.shape}, the reservoir holds ({d},)")
            out.append(p.astype(bool))
        return out

    def matrix(self, layer: int) -> np.ndarray:
        """Psi of one layer as float32 (dequantised, with its diagonal)."""
        psi = self._off[layer].astype(np.float32) * np.float32(self._scale[layer])
        psi[np.diag_indices_from(psi)] = self._diag[layer]
        return psi

    def off_diagonal(self, layer: int) -> np.ndarray:
        """Psi of one layer without its diagonal, as a new float32 array: the couplings the sign dynamics use."""
        off = self._off[layer].astype(np.float32)
        if self.dtype == "int8":
            off *= np.float32(self._scale[layer])
        return off

    def store(self, patterns: list[np.ndarray]) -> None:
        """Add one task's neuron patterns (one boolean (d,) vector per layer) as an attractor."""
        for layer, p in enumerate(self._check(patterns)):
            z = to_state(p)
            d = self.dims[layer]
            # fp32 is updated in place; fp16/int8 are dequantised, updated in fp32 and stored back.
            off = self._off[layer] if self.dtype == "fp32" else self.off_diagonal(layer)
            diag = self._diag[layer]
            if self.rule == "hebbian":
                _rank_one(off, z, 1.0 / d)
                diag += np.float32(1.0 / d)
            elif self.rule == "storkey":
                # z z^T - z h^T - h z^T = u u^T - h h^T with u = z - h: two rank-one updates of symmetric form.
                h = off @ z + diag * z
                u = z - h
                _rank_one(off, u, 1.0 / d)
                _rank_one(off, h, -1.0 / d)
                diag += (u * u - h * h - 1.0) / np.float32(d)
            else:
                e = z - (off @ z + diag * z)
                norm = float(e.astype(np.float64) @ e.astype(np.float64))
                if norm > 1e-6 * d:  # otherwise z is already in the span, hence a fixed point
                    _rank_one(off, e, 1.0 / norm)
                    diag += e * e / np.float32(norm)
            np.fill_diagonal(off, 0.0)
            if self.dtype != "fp32":
                self._put(layer, off)
            self._sum[layer] += z.astype(np.int64)
        self.count += 1
        self._torch_cache = None
        self._attractor_cache = None

    def _put(self, layer: int, off: np.ndarray) -> None:
        """Keep a float32 off-diagonal matrix in this reservoir's storage dtype (see the module docstring)."""
        if self.dtype == "fp16":
            self._off[layer] = off.astype(np.float16)  # round to nearest
            return
        d = self.dims[layer]
        need = float(np.abs(off).max()) / 127.0
        scale = self._scale[layer]
        if need > scale:
            # Hebbian sums are integers in units of 1/d: a whole number of counts keeps them on the grid.
            scale = math.ceil(need * d - 1e-6) / d if self.rule == "hebbian" else need
            self._scale[layer] = scale
        # Round half to even; the clamp only guards float error at the edge.
        off *= np.float32(1.0 / scale)
        np.rint(off, out=off)
        np.clip(off, -127, 127, out=off)
        self._off[layer] = off.astype(np.int8)

    def mean_state(self) -> list[np.ndarray]:
        """Mean of the stored z per layer (float32 in [-1, 1]); zeros when nothing is stored."""
        if self.count == 0:
            return [np.zeros(d, dtype=np.float32) for d in self.dims]
        return [(s / self.count).astype(np.float32) for s in self._sum]

    def energy(self, patterns: list[np.ndarray]) -> float:
        """E = sum over layers of -1/2 z^T Psi z for boolean patterns."""
        total = 0.0
        for layer, p in enumerate(self._check(patterns)):
            z = to_state(p).astype(np.float64)
            total += -0.5 * float(z @ self.matrix(layer).astype(np.float64) @ z)
        return total

    def torch_matrices(self, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Psi of every layer as float32 tensors on `device` (cached until the next store)."""
        import torch

        key = (str(device), self.count)
        if self._torch_cache is None or self._torch_cache[0] != key:
            self._torch_cache = (
                key,
                [torch.from_numpy(self.matrix(i)).to(device) for i in range(len(self.dims))],
            )
        return self._torch_cache[1]

    def torch_energy(self, states: list[torch.Tensor]) -> torch.Tensor:
        """Differentiable sum over layers of -1/2 s^T Psi s for real or +-1 states (one (d,) tensor per layer)."""
        mats = self.torch_matrices(states[0].device)
        return sum(-0.5 * (s @ (psi @ s)) for s, psi in zip(states, mats, strict=True))

    def is_fixed_point(self, patterns: list[np.ndarray]) -> bool:
        """Whether no unit of any layer would flip: sign(off-diagonal field) agrees with z (ties keep)."""
        for layer, p in enumerate(self._check(patterns)):
            z = to_state(p)
            field = self.off_diagonal(layer) @ z
            if ((field * z) < 0).any():
                return False
        return True

    def recall(
        self, start: list[np.ndarray], mode: str = "sync", max_steps: int = 100, seed: int = 0
    ) -> RecallResult:
        """Sign descent on the energy from boolean start patterns, per layer (sync or async)."""
        if mode not in ("sync", "async"):
            raise ValueError(f"unknown recall mode {mode!r}; known: sync, async")
        patterns, steps, converged = [], [], []
        for layer, p in enumerate(self._check(start)):
            off = self.off_diagonal(layer)
            if mode == "sync":
                s, n, ok = sync_descent(off, to_state(p)[None], max_steps)
                s, n, ok = s[0], int(n[0]), bool(ok[0])
            else:
                s, n, ok = async_descent(off, to_state(p), max_steps, seed + layer)
            patterns.append(s > 0)
            steps.append(n)
            converged.append(ok)
        return RecallResult(patterns, steps, converged)

    def attractors(self, starts: int = 256, seed: int = 0, max_steps: int = 100) -> list[list[np.ndarray]]:
        """Per layer, the stored-looking fixed points the sign dynamics reach from `starts` random states.

        Found from the matrices alone (cached until the next store): the distinct fixed points reached,
        without those whose overlap with the sum of the stored patterns is negative (-z is a fixed
        point whenever z is; a stored pattern overlaps the sum by d plus its overlaps with the
        others), the `count` of lowest energy first. Under the projection rule the stored patterns are
        exactly the states of energy -d/2, the lowest there is; under Hebbian and Storkey this is
        only a ranking. Random starts may miss a pattern whose basin is small.
        """
        key = (self.count, starts, seed, max_steps)
        if self._attractor_cache is not None and self._attractor_cache[0] == key:
            return self._attractor_cache[1]
        rng = np.random.default_rng(seed)
        out = []
        for layer, d in enumerate(self.dims):
            if self.count == 0:
                out.append([])
                continue
            start = np.where(rng.random((starts, d)) < 0.5, 1.0, -1.0).astype(np.float32)
            off = self.off_diagonal(layer)
            final, _, converged = sync_descent(off, start, max_steps)
            found = np.unique(final[converged], axis=0)
            found = found[found @ self._sum[layer].astype(np.float32) > 0]
            energy = -0.5 * np.einsum("nd,nd->n", found @ off, found) - 0.5 * float(self._diag[layer].sum())
            out.append([found[i] > 0 for i in np.argsort(energy, kind="stable")[: self.count]])
        self._attractor_cache = (key, out)
        return out

    def capacity(self) -> int:
        """Estimated number of random patterns the reservoir holds: the smallest layer's estimate."""
        return min(estimated_capacity(d, self.rule) for d in self.dims)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored state: matrices, diagonals, running sums, scales and the count."""
        arrays = self._off + self._diag + self._sum
        return sum(a.nbytes for a in arrays) + 8 * len(self.dims) + 8

    def packed_bits_equivalent(self) -> int:
        """How many neuron masks packed bits (sum(dims) bits each) would hold in this reservoir's bytes."""
        return self.nbytes * 8 // sum(self.dims)

    def state_dict(self) -> dict:
        """The reservoir as plain data: {"meta": JSON-able dict, "arrays": name -> NumPy array}."""
        meta = {
            "version": STATE_VERSION,
            "kind": "hopfield_reservoir",
            "rule": self.rule,
            "dtype": self.dtype,
            "dims": list(self.dims),
            "count": int(self.count),
            "scales": [float(s) for s in self._scale],
        }
        arrays = {}
        for i in range(len(self.dims)):
            arrays[f"off_{i}"] = self._off[i]
            arrays[f"diag_{i}"] = self._diag[i]
            arrays[f"sum_{i}"] = self._sum[i]
        meta["checksum"] = _checksum(meta, arrays)
        return {"meta": meta, "arrays": arrays}

    @classmethod
    def from_state(cls, state: dict) -> Reservoir:
        """Rebuild a reservoir from `state_dict()` output; a damaged or mismatched state is refused."""
        meta, arrays = dict(state["meta"]), state["arrays"]
        if meta.get("kind") != "hopfield_reservoir" or meta.get("version") != STATE_VERSION:
            raise ValueError(
                f"not a version-{STATE_VERSION} reservoir state (kind {meta.get('kind')!r}, "
                f"version {meta.get('version')!r})"
            )
        expected = meta.pop("checksum", None)
        if expected != _checksum(meta, arrays):
            raise ValueError(
                "reservoir state fails its checksum: the arrays or metadata were changed or damaged"
            )
        out = cls(meta["dims"], meta["rule"], meta["dtype"])
        out.count = int(meta["count"])
        out._scale = [float(s) for s in meta["scales"]]
        for i, d in enumerate(out.dims):
            parts = {
                "off": (arrays[f"off_{i}"], (d, d), _STORAGE[out.dtype]),
                "diag": (arrays[f"diag_{i}"], (d,), np.float32),
                "sum": (arrays[f"sum_{i}"], (d,), np.int64),
            }
            for name, (arr, shape, dt) in parts.items():
                arr = np.asarray(arr)
                if arr.shape != shape or arr.dtype != dt:
                    raise ValueError(
                        f"reservoir array {name}_{i}: got {arr.dtype}{arr.shape}, expected {np.dtype(dt)}{shape}"
                    )
            out._off[i] = np.array(arrays[f"off_{i}"], copy=True)
            out._diag[i] = np.array(arrays[f"diag_{i}"], copy=True)
            out._sum[i] = np.array(arrays[f"sum_{i}"], copy=True)
        return out

    def __repr__(self) -> str:
        return (
            f"Reservoir(dims={self.dims}, rule={self.rule!r}, dtype={self.dtype!r}, count={self.count}, "
            f"capacity~{self.capacity()}, bytes={self.nbytes})"
        )


def _rank_one(a: np.ndarray, v: np.ndarray, alpha: float) -> None:
    """a += alpha * v v^T in place, in row blocks (no d x d temporary)."""
    v = v.astype(a.dtype, copy=False)
    step = 256
    for lo in range(0, a.shape[0], step):
        a[lo : lo + step] += (alpha * v[lo : lo + step])[:, None] * v[None, :]


def _checksum(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode())
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()
