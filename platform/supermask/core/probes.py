"""Norm, direction, alignment, mask-churn and saturation probes: hooks a training loop leaves on.

A `Probe` looks at what a run trains (scores for a mask search, weights for a trained method) every
`ProbeConfig.every` steps and returns a flat dict of floats, ready for a metrics line:

- `norm` (global L2 norm of every trained non-scalar tensor, concatenated) and `norm/<layer>`;
- `direction` cos(theta_t, theta_t+1), `alignment` cos(theta_t, delta_t) with delta_t = theta_t+1 -
  theta_t, and `step_size` ||delta_t||, where t and t+1 are consecutive probes (with `every` > 1 a
  delta spans `every` optimizer steps);
- `churn` (and `churn/<layer>`): the fraction of mask bits that flipped since the last probe, and
  `density`, the fraction kept (mask searches only);
- saturation: the network as it computes, run on a fixed probe batch with its effective weights
  multiplied by c under no-grad, against the same network unscaled. `saturation_cosine` is the mean
  over hidden states of the per-row cosine (rows: positions, e.g. real tokens), `saturation_output_cosine`
  the same for the outputs, `saturation_agreement` the share of rows whose output argmax agrees.

For a supermask the effective weights are W * M: the probe scales those, never the scores, because
multiplying the scores by c leaves a top-k or threshold mask exactly as it was.

A probe needs only the trained tensors, optionally the current masks (with the frozen weights they
multiply), and a `RunFn`: effective weights -> (hidden states, outputs) on the probe batch.
`module_runner` and `base_runner` build one for any nn.Module or BaseNetwork. Between probes it keeps
one flat float64 copy of the trained tensors and the mask bits; a probe costs a handful of tensor ops
for the norms plus two no-grad forward passes on the probe batch (`probe_overhead` measures it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from supermask.core.fields import check_fields, in_range

log = logging.getLogger(__name__)

RunFn = Callable[[list[torch.Tensor]], "tuple[list[torch.Tensor], torch.Tensor]"]
FIT_FORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "t": lambda t: t,
    "sqrt_t": np.sqrt,
    "t^1/4": lambda t: np.power(t, 0.25),
}


@dataclass(frozen=True)
class ProbeConfig:
    """When and how a run is probed: the cadence, the saturation scale c and the sweep of c."""

    every: int = field(default=10, metadata=in_range(1))  # optimizer steps between probes
    scale: float = field(default=1000.0, metadata=in_range(0.0, lo_open=True))  # c of the saturation probe
    # probes between saturation checks (0: never)
    saturation_every: int = field(default=1, metadata=in_range(0))
    sweep: tuple[float, ...] = tuple(float(c) for c in range(1, 11))  # c of the sweep
    sweep_every: int = field(default=0, metadata=in_range(0))  # probes between sweeps; 0: only Probe.sweep()


def _is_probed(t: torch.Tensor) -> bool:
    """Scalars (one element, e.g. a learned temperature) are left out of the norm."""
    return t.numel() > 1


def _cosine(dot: float, norm_a: float, norm_b: float) -> float:
    if norm_a == 0.0 or norm_b == 0.0:
        return float("nan")
    return max(-1.0, min(1.0, dot / (norm_a * norm_b)))


def _segment_sums(values: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Sums of consecutive segments of a flat tensor, of the given sizes (float64 or int64)."""
    acc = values.to(torch.float64 if values.is_floating_point() else torch.int64).cumsum(0)
    ends = torch.tensor(sizes, device=values.device).cumsum(0) - 1
    at_ends = acc[ends]
    return torch.diff(at_ends, prepend=at_ends.new_zeros(1))


def row_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows (every index but the last) of cos(a_row, b_row) in float64; two zero rows count as 1."""
    a = a.detach().reshape(-1, a.shape[-1]).double()
    b = b.detach().reshape(-1, b.shape[-1]).double()
    if len(a) == 0:
        return float("nan")
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = (a * b).sum(1) / (na * nb)
    cos = torch.where((na == 0) & (nb == 0), torch.ones_like(cos), cos)
    cos = torch.where((na == 0) ^ (nb == 0), torch.zeros_like(cos), cos)
    return float(cos.clamp(-1.0, 1.0).mean())


def argmax_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """The share of rows whose argmax over the last dimension is the same in `a` and `b`."""
    return float((a.argmax(-1) == b.argmax(-1)).double().mean())


@torch.no_grad()
def saturation(run: RunFn, effective: Sequence[torch.Tensor], scale: float) -> dict[str, float]:
    """Compare the network with effective weights scaled by `scale` against it unscaled (no-grad)."""
    hidden, out = run([w.detach() for w in effective])
    hidden_c, out_c = run([w.detach() * scale for w in effective])
    if not all(torch.isfinite(h).all() for h in [*hidden_c, out_c]):
        log.warning("saturation probe at c=%g overflowed float32: cosines are NaN", scale)
    out_cos = row_cosine(out, out_c)
    per_layer = [row_cosine(h, hc) for h, hc in zip(hidden, hidden_c, strict=True)]
    return {
        "saturation_cosine": float(np.mean(per_layer)) if per_layer else out_cos,
        "saturation_output_cosine": out_cos,
        "saturation_agreement": argmax_agreement(out, out_c),
        **{f"saturation_cosine/{i}": c for i, c in enumerate(per_layer)},
    }


class Probe:
    """Probes one run: call `observe` at steps where `due(step)`; every record is kept in `history`.

    `run` maps effective weights to (hidden states, outputs) on a fixed probe batch; without it the
    saturation probe is skipped. `frozen` are the frozen weights that masks multiply (W in W * M);
    `names` label the trained tensors in the per-layer keys.
    """

    def __init__(
        self,
        run: RunFn | None = None,
        *,
        names: Sequence[str] | None = None,
        frozen: Sequence[torch.Tensor] | None = None,
        config: ProbeConfig | None = None,
    ) -> None:
        self.config = config or ProbeConfig()
        check_fields(self.config, "probe.")
        self.run = run
        self.names = None if names is None else list(names)
        self.frozen = None if frozen is None else list(frozen)
        self.history: list[dict[str, float]] = []
        self._prev: torch.Tensor | None = None  # the last probe's trained tensors, flat, float64
        self._prev_masks: torch.Tensor | None = None  # its mask bits, flat
        self._count = 0

    def due(self, step: int) -> bool:
        """Whether `step` is on the cadence (step 0, the state before training, always is)."""
        return step % self.config.every == 0

    def _layer_names(self, n: int) -> list[str]:
        if self.names is None:
            return [str(i) for i in range(n)]
        if len(self.names) != n:
            raise ValueError(
                f"probe has {len(self.names)} names for {n} trained tensors; give one name per tensor"
            )
        return self.names

    @torch.no_grad()
    def observe(
        self,
        step: int,
        trained: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor] | None = None,
        effective: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Probe the run at `step`: `trained` tensors, the current `masks` (0/1) if any, and optionally
        the `effective` weights the network computes with (default: frozen * masks, else `trained`)."""
        names = self._layer_names(len(trained))
        record: dict[str, float] = {"step": float(step)}
        record.update(self._norms(names, trained))
        if masks is not None:
            record.update(self._churn(names, masks))
        if self.run is not None:
            record.update(self._saturation(masks, trained, effective))
        self._count += 1
        self.history.append(record)
        return record

    def _norms(self, names: list[str], trained: Sequence[torch.Tensor]) -> dict[str, float]:
        # One flat float64 copy of everything probed: a handful of ops however many layers there are.
        kept = [(n, t.detach().reshape(-1)) for n, t in zip(names, trained, strict=True) if _is_probed(t)]
        if not kept:
            return {"norm": 0.0}
        flat = torch.cat([t for _, t in kept]).double()
        values = [_segment_sums(flat * flat, [t.numel() for _, t in kept])]
        if self._prev is not None:
            delta = flat - self._prev
            values.append(
                torch.stack(
                    [(self._prev * self._prev).sum(), (self._prev * delta).sum(), (delta * delta).sum()]
                )
            )
        sums = torch.cat(values).tolist()  # one device sync
        layer_sq = sums[: len(kept)]
        out = {f"norm/{n}": math.sqrt(v) for (n, _), v in zip(kept, layer_sq, strict=True)}
        out["norm"] = math.sqrt(sum(layer_sq))
        if self._prev is not None:
            prev_sq, along, delta_sq = sums[len(kept) :]
            prev_norm, step_size = math.sqrt(prev_sq), math.sqrt(delta_sq)
            out["direction"] = _cosine(prev_sq + along, prev_norm, out["norm"])
            out["alignment"] = _cosine(along, prev_norm, step_size)
            out["step_size"] = step_size
        self._prev = flat
        return out

    def _churn(self, names: list[str], masks: Sequence[torch.Tensor]) -> dict[str, float]:
        bits = torch.cat([m.detach().reshape(-1) > 0.5 for m in masks])
        sizes = [m.numel() for m in masks]
        values = [bits.sum().reshape(1)]
        if self._prev_masks is not None:
            values.append(_segment_sums(bits != self._prev_masks, sizes))
        counts = torch.cat([v.to(torch.int64) for v in values]).tolist()
        total = max(len(bits), 1)
        out = {"density": counts[0] / total}
        if self._prev_masks is not None:
            flipped = counts[1:]
            out.update(
                {f"churn/{n}": f / max(size, 1) for n, f, size in zip(names, flipped, sizes, strict=True)}
            )
            out["churn"] = sum(flipped) / total
        self._prev_masks = bits
        return out

    def _effective(self, masks, trained, effective) -> list[torch.Tensor]:
        if effective is not None:
            return list(effective)
        if masks is not None:
            if self.frozen is None:
                raise ValueError(
                    "a probe of masks needs the frozen weights they multiply: Probe(..., frozen=base.weights())"
                )
            return [w * m for w, m in zip(self.frozen, masks, strict=True)]
        return list(trained)

    def _saturation(self, masks, trained, effective) -> dict[str, float]:
        every, sweep_every = self.config.saturation_every, self.config.sweep_every
        out: dict[str, float] = {}
        if every and self._count % every == 0:
            out.update(saturation(self.run, self._effective(masks, trained, effective), self.config.scale))
        if sweep_every and self._count % sweep_every == 0:
            out.update(self.sweep(self._effective(masks, trained, effective)))
        return out

    def sweep(self, effective: Sequence[torch.Tensor]) -> dict[str, float]:
        """Saturation cosine and argmax agreement at every c of `config.sweep`."""
        if self.run is None:
            raise ValueError("the saturation sweep needs a run function: Probe(run=...)")
        out: dict[str, float] = {}
        for c in self.config.sweep:
            s = saturation(self.run, effective, c)
            out[f"sweep_cosine@{c:g}"] = s["saturation_cosine"]
            out[f"sweep_agreement@{c:g}"] = s["saturation_agreement"]
        return out

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one recorded key, over the probes that recorded it."""
        rows = [(r["step"], r[key]) for r in self.history if key in r]
        steps = np.array([s for s, _ in rows], dtype=np.float64)
        return steps, np.array([v for _, v in rows], dtype=np.float64)


def norm_fits(steps: Sequence[float], norms: Sequence[float]) -> dict[str, dict[str, float]]:
    """Least-squares fits norm ~ a + b * g(t) for g = t, sqrt(t), t^(1/4), each with its R^2."""
    t = np.asarray(steps, dtype=np.float64)
    y = np.asarray(norms, dtype=np.float64)
    if len(t) != len(y) or len(t) < 3:
        raise ValueError(
            f"norm fits need at least 3 (step, norm) points of equal count, got {len(t)} and {len(y)}"
        )
    if (t < 0).any():
        raise ValueError("norm fits need steps >= 0")
    out = {}
    ss_tot = float(((y - y.mean()) ** 2).sum())
    for name, g in FIT_FORMS.items():
        x = g(t)
        design = np.stack([np.ones_like(x), x], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
        ss_res = float(((y - design @ np.array([a, b])) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
        out[name] = {"intercept": float(a), "slope": float(b), "r2": float(r2)}
    return out


def _capture(net: nn.Module, hidden: Sequence[str]) -> tuple[list[torch.Tensor], list]:
    modules = dict(net.named_modules())
    unknown = [h for h in hidden if h not in modules]
    if unknown:
        raise ValueError(f"no module(s) {unknown} to probe; modules: {', '.join(n for n in modules if n)}")
    seen: list[torch.Tensor] = []

    def grab(_module, _inputs, output):
        seen.append(output[0] if isinstance(output, tuple) else output)

    return seen, [modules[h].register_forward_hook(grab) for h in hidden]


def module_runner(
    net: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    *,
    fixed: Mapping[str, torch.Tensor] | None = None,
    hidden: Sequence[str] = (),
    keep: torch.Tensor | None = None,
) -> RunFn:
    """A RunFn over `net` on the fixed batch `x`: the given tensors replace parameters `names`.

    `fixed` adds tensors that stay as given (e.g. BatchNorm statistics); `hidden` names the modules
    whose outputs are the hidden states; `keep` (a boolean over the leading dims of `x`, e.g. the
    real tokens) selects the rows compared, in hidden states and in outputs of matching shape.
    """
    names = list(names)

    def select(t: torch.Tensor) -> torch.Tensor:
        if keep is not None and t.shape[: keep.dim()] == keep.shape:
            return t[keep]
        return t

    @torch.no_grad()
    def run(effective: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        if len(effective) != len(names):
            raise ValueError(f"run got {len(effective)} tensors for {len(names)} names")
        replaced = dict(zip(names, effective, strict=True))
        replaced.update(fixed or {})
        was_training = net.training
        seen, handles = _capture(net, hidden)
        try:
            net.eval()  # BatchNorm uses (and never updates) the statistics it is given
            out = functional_call(net, replaced, (x,))
        finally:
            for h in handles:
                h.remove()
            net.train(was_training)
        return [select(h) for h in seen], select(out)

    return run


def base_runner(
    base,
    x: torch.Tensor,
    *,
    bn_state: Mapping[str, torch.Tensor] | None = None,
    hidden: Sequence[str] | None = None,
    keep: torch.Tensor | None = None,
) -> RunFn:
    """A RunFn for a BaseNetwork: effective weights replace its masked layers' weights.

    Hidden states default to the outputs of the masked layers (names as in `base.net`).
    """
    if hidden is None:
        hidden = [n.rsplit(".", 1)[0] for n in base.masked_names]
    return module_runner(base.net, x, base.masked_names, fixed=bn_state, hidden=hidden, keep=keep)


def mask_search_hook(probe: Probe) -> Callable[[Any], dict[str, float]]:
    """A step hook for a mask search: probes the scores and current masks on the probe's cadence.

    `info` needs `.step` and `.method` (a MaskMethod), as core.search's StepInfo has. The state
    before the first step is not seen by a hook: call `probe.observe(0, ...)` before the loop.
    """

    def hook(info: Any) -> dict[str, float]:
        if not probe.due(info.step):
            return {}
        with torch.no_grad():
            masks = info.method()
        return probe.observe(info.step, list(info.method.scores), masks=masks)

    return hook


def probe_overhead(
    train_step: Callable[[], object],
    probe_step: Callable[[int], object],
    *,
    steps: int = 200,
    every: int = 10,
    warmup: int = 5,
) -> dict[str, float]:
    """Time `steps` training steps with a probe every `every` steps, timing each part on its own.

    Both are timed in one loop, so a busy machine slows both alike; `overhead` is the probes' total
    time over the training steps' total. Warm-up steps and one warm-up probe (step 0) are not timed.
    """
    for _ in range(warmup):
        train_step()
    probe_step(0)  # first-call costs (allocation, lazy setup) are not the cadence's
    train_s = probe_s = 0.0
    probes = 0
    for step in range(1, steps + 1):
        started = time.perf_counter()
        train_step()
        train_s += time.perf_counter() - started
        if step % every == 0:
            started = time.perf_counter()
            probe_step(step)
            probe_s += time.perf_counter() - started
            probes += 1
    return {
        "steps": float(steps),
        "every": float(every),
        "step_seconds": train_s / steps,
        "probe_seconds": probe_s / max(probes, 1),
        "overhead": probe_s / train_s if train_s > 0 else float("nan"),
    }
