"""Norm, direction, alignment, mask-churn and saturation probes of K stacked tasks: cheap enough to leave on.

A `Probe` looks at what a run trains (scores for a mask search, weights for a trained method), as
tensors with a leading task axis (K, *shape), every `ProbeConfig.every` steps, and returns one flat
record of floats per task:

- `norm` (L2 norm of every trained non-scalar tensor of the task, concatenated) and `norm/<layer>`;
- `direction` cos(theta_t, theta_t+1), `alignment` cos(theta_t, delta_t) with delta_t = theta_t+1 -
  theta_t, and `step_size` ||delta_t||, where t and t+1 are consecutive probes (with `every` > 1 a
  delta spans `every` optimizer steps);
- `churn` (and `churn/<layer>`): the fraction of mask bits that flipped since the last probe, and
  `density`, the fraction kept (mask searches only);
- saturation: the network as it computes, run on a fixed probe batch with its effective weights
  multiplied by c under no-grad, against the same network unscaled. `saturation_cosine` is the mean
  over hidden states of the per-row cosine (rows: examples, or real tokens), `saturation_output_cosine`
  the same for the outputs, `saturation_agreement` the share of rows whose output argmax agrees.

For a supermask the effective weights are W * M: the probe scales those, never the scores, because
multiplying the scores by c leaves a top-k or threshold mask exactly as it was.

Every number of a probe, for all K tasks, is computed on the device and read in one transfer; before
it, one check reads whether the scaled pass overflowed float32 (to run it again in float64 if it did).
Between probes a probe keeps one float32 copy of the trained tensors and, by reference, the masks it
was given (a mask method's forward() makes new ones; nothing may change them in place).
`core/probes/runner.py`'s `stacked_runner` makes the run function of any nn.Module; `probe_overhead`
times probes against training steps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from supermask.core.fields import check_fields, in_range

log = logging.getLogger(__name__)

# effective weights, (K, *shape) each -> (hidden states (K, rows..., d) each, outputs (K, rows..., C))
RunFn = Callable[[list[torch.Tensor]], "tuple[list[torch.Tensor], torch.Tensor]"]
FIT_FORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "t": lambda t: t,
    "sqrt_t": np.sqrt,
    "t^1/4": lambda t: np.power(t, 0.25),
}


@dataclass(frozen=True)
class ProbeConfig:
    """When and how a run is probed: the `probes` section of a task spec (`every: 0` turns probes off)."""

    every: int = field(default=25, metadata=in_range(0))  # optimizer steps between probes; 0: no probes
    scale: float = field(default=1000.0, metadata=in_range(0.0, lo_open=True))  # c of the saturation probe
    saturation_every: int = field(
        default=1, metadata=in_range(0)
    )  # probes between saturation checks; 0: never
    batch: int = field(default=32, metadata=in_range(1))  # probe examples per task (fixed for the run)
    sweep_every: int = field(default=0, metadata=in_range(0))  # probes between sweeps of c; 0: never
    sweep_scales: tuple[float, ...] = tuple(float(c) for c in range(1, 11))  # the c of a sweep

    def __post_init__(self) -> None:
        scales = self.sweep_scales
        ok = isinstance(scales, list | tuple) and all(
            isinstance(c, int | float) and not isinstance(c, bool) and c > 0 for c in scales
        )
        if not ok or not scales:
            raise ValueError(f"probes.sweep_scales: got {scales!r}; must be a non-empty list of numbers > 0")
        object.__setattr__(self, "sweep_scales", tuple(float(c) for c in scales))

    @property
    def enabled(self) -> bool:
        return self.every > 0


def _per_task_cosine(dot: torch.Tensor, norm_a: torch.Tensor, norm_b: torch.Tensor) -> torch.Tensor:
    """dot / (|a| |b|) per task, NaN where either is 0."""
    cos = (dot / (norm_a * norm_b)).clamp(-1.0, 1.0)
    return torch.where((norm_a == 0) | (norm_b == 0), torch.full_like(cos, float("nan")), cos)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(K,) float64 dot products of the rows of two (K, n) tensors.

    On a CPU one BLAS dot per row: about twice as fast as the batched product `vecdot` makes of it.
    """
    if a.device.type == "cpu":
        return torch.stack([torch.dot(x, y) for x, y in zip(a, b, strict=True)]).double()
    return torch.linalg.vecdot(a, b).double()


def _count(masks: torch.Tensor) -> torch.Tensor:
    """(K,) float64 count of the ones in each row of (K, n) 0/1 masks (float32 sums are exact below 2^24)."""
    if masks.shape[1] < 2**24:
        return masks.sum(1).double()
    return masks.sum(1, dtype=torch.float64)


def _rows_weight(t: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """(K, rows) float weights of the rows of `t` (every index but the first and the last) that count."""
    rows = t.shape[1:-1]
    if keep is not None and tuple(keep.shape[1:]) == tuple(rows):
        return keep.reshape(len(t), -1).double()
    return torch.ones(len(t), int(np.prod(rows)), dtype=torch.float64, device=t.device)


def row_cosines(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) mean over each task's rows (kept ones only) of cos(a_row, b_row), in float64.

    `a` and `b` are (K, rows..., d); two zero rows count as 1, one zero row as 0.
    """
    w = _rows_weight(a, keep)
    a = a.detach().reshape(len(a), -1, a.shape[-1]).double()
    b = b.detach().reshape(len(b), -1, b.shape[-1]).double()
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    cos = ((a * b).sum(-1) / (na * nb)).clamp(-1.0, 1.0)
    cos = torch.where((na == 0) & (nb == 0), torch.ones_like(cos), cos)
    cos = torch.where((na == 0) ^ (nb == 0), torch.zeros_like(cos), cos)
    return (cos * w).sum(1) / w.sum(1)


def argmax_agreements(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(K,) share of each task's (kept) rows whose argmax over the last dimension is the same in a and b."""
    w = _rows_weight(a, keep)
    same = (a.argmax(-1) == b.argmax(-1)).reshape(len(a), -1).double()
    return (same * w).sum(1) / w.sum(1)


def _finite_rows(hidden: Sequence[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """(K,) bool: whether every hidden state and output of each task is finite."""
    return torch.stack([t.reshape(len(t), -1).isfinite().all(1) for t in [*hidden, out]]).all(0)


@torch.no_grad()
def saturation(
    run: RunFn,
    effective: Sequence[torch.Tensor],
    scale: float,
    keep: torch.Tensor | None = None,
    labels: Sequence[str] | None = None,
    *,
    owned: bool = False,
) -> dict[str, torch.Tensor]:
    """(K,) saturation numbers: the network with effective weights scaled by `scale` against it unscaled.

    `labels` name the hidden states in the per-layer keys (default: their index). With `owned` the
    `effective` tensors are the caller's to spend: they are scaled in place after the unscaled pass.

    A task whose scaled pass overflows float32 (inf or NaN anywhere) is run again in float64 when `run`
    takes a dtype (`stacked_runner`'s does); `saturation_float64` is 1 for it. If it overflows float64
    too, or `run` has no float64 pass, its cosines and agreement are left out (NaN) and
    `saturation_overflow` is 1: an overflow is reported as such, never as a cosine.
    """
    hidden, out = run([w.detach() for w in effective])
    scaled = [w.mul_(scale) if owned else w.detach() * scale for w in effective]
    hidden_c, out_c = run(scaled)
    finite = _finite_rows(hidden_c, out_c)
    extra: dict[str, torch.Tensor] = {}
    if not bool(finite.all()):  # rare: the scaled pass again in float64
        overflowed = ~finite
        if getattr(run, "takes_dtype", False):
            exact = (
                [w.double() for w in scaled] if owned else [w.detach().double() * scale for w in effective]
            )
            hidden64, out64 = run(exact, dtype=torch.float64)
            hidden_c = [
                torch.where(_rows(finite, h), h.double(), h64)
                for h, h64 in zip(hidden_c, hidden64, strict=True)
            ]
            out_c = torch.where(_rows(finite, out_c), out_c.double(), out64)
            finite = _finite_rows(hidden_c, out_c)
            extra["saturation_float64"] = overflowed.double()
        extra["saturation_overflow"] = (~finite).double()
        log.warning(
            "saturation probe at c=%g overflowed float32 in %d of %d task(s): %s (an overflow is reported "
            "as saturation_overflow = 1, not as a cosine)",
            scale, int(overflowed.sum()), len(finite),
            f"recomputed in float64, where {int((~finite).sum())} overflowed too"
            if "saturation_float64" in extra else "the run has no float64 pass",
        )  # fmt: skip
    out_cos = row_cosines(out, out_c, keep)
    per_layer = [row_cosines(h, hc, keep) for h, hc in zip(hidden, hidden_c, strict=True)]
    values = {
        "saturation_cosine": torch.stack(per_layer).mean(0) if per_layer else out_cos,
        "saturation_output_cosine": out_cos,
        "saturation_agreement": argmax_agreements(out, out_c, keep),
        **{f"saturation_cosine/{labels[i] if labels else i}": c for i, c in enumerate(per_layer)},
    }
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=finite.device)
    return {**{k: torch.where(finite, v.double(), nan) for k, v in values.items()}, **extra}


def _rows(finite: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """`finite` (K,) shaped to broadcast over a (K, ...) tensor."""
    return finite.reshape(-1, *[1] * (t.dim() - 1))


class Probe:
    """Probes the K tasks of one run: call `observe` at steps where `due(step)`; `history[k]` keeps task k's records.

    `run` maps effective weights to (hidden states, outputs) on a fixed probe batch; without it the
    saturation probe is skipped. `frozen` are the frozen weights that masks multiply (W in W * M);
    `names` label the trained tensors in the per-layer keys and `hidden` the hidden states; `keep`
    (K, rows...) marks the rows of hidden states and outputs that count (e.g. real tokens).
    """

    def __init__(
        self,
        run: RunFn | None = None,
        *,
        names: Sequence[str] | None = None,
        frozen: Sequence[torch.Tensor] | None = None,
        keep: torch.Tensor | None = None,
        hidden: Sequence[str] | None = None,
        config: ProbeConfig | None = None,
    ) -> None:
        self.config = config or ProbeConfig()
        check_fields(self.config, "probes.")
        self.run, self.keep = run, keep
        self.hidden = None if hidden is None else list(hidden)
        self.names = None if names is None else list(names)
        self.frozen = None if frozen is None else list(frozen)
        self.history: list[list[dict[str, float]]] = []
        self._prev: list[torch.Tensor] | None = None  # the last probe's trained tensors, (K, n) per layer
        self._prev_sq: torch.Tensor | None = None  # their squared norms, (K,) float64
        self._prev_masks: list[torch.Tensor] | None = None  # its masks, (K, n) float 0/1 per layer
        self._prev_kept: list[torch.Tensor] = []  # their kept counts per layer, (K,) float64
        self._count = 0

    def due(self, step: int) -> bool:
        """Whether `step` is on the cadence (step 0, the state before training, always is)."""
        return self.config.every > 0 and step % self.config.every == 0

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
        extra: Mapping[str, torch.Tensor] | None = None,
    ) -> list[dict[str, float]]:
        """Probe every task at `step`: `trained` tensors and current `masks` (0/1, kept by reference until
        the next probe) if any, each (K, *shape),
        optionally the `effective` weights the network computes with (default: frozen * masks, else
        `trained`) and `extra` (K,) values to record alongside. Returns one record per task."""
        names = self._layer_names(len(trained))
        values: dict[str, torch.Tensor] = {}
        values.update(self._norms(names, trained))
        if masks is not None:
            values.update(self._churn(names, masks))
        if self.run is not None:
            values.update(self._saturation(masks, trained, effective))
        for key, v in (extra or {}).items():
            values[key] = v.detach().reshape(-1).double()
        keys = list(values)
        table = torch.stack([values[k].to(torch.float64) for k in keys], 1).cpu().tolist()  # one sync
        records = [
            {"step": float(step), **{k: v for k, v in zip(keys, row, strict=True) if not math.isnan(v)}}
            for row in table
        ]
        self._count += 1
        if not self.history:
            self.history = [[] for _ in records]
        for k, record in enumerate(records):
            self.history[k].append(record)
        return records

    def _norms(self, names: list[str], trained: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        # Per layer, a few fused passes in float32 (batched dot products accumulate carefully), the
        # per-task sums then combined in float64; the last probe's tensors are kept in float32 buffers.
        kept = [(n, t.detach().flatten(1)) for n, t in zip(names, trained, strict=True) if t[0].numel() > 1]
        if not kept:  # scalars (one element per task, e.g. a temperature) are left out of the norm
            return {"norm": torch.zeros(len(trained[0]), dtype=torch.float64, device=trained[0].device)}
        have_prev = self._prev is not None and [p.shape for p in self._prev] == [t.shape for _, t in kept]
        out: dict[str, torch.Tensor] = {}
        sq, along, delta_sq = [], [], []
        for i, (name, t) in enumerate(kept):
            sq.append(_dot(t, t))
            out[f"norm/{name}"] = sq[-1].sqrt()
            if have_prev:
                delta = torch.sub(t, self._prev[i], out=self._prev[i])  # in the last probe's buffer
                delta_sq.append(_dot(delta, delta))
                along.append(_dot(t, delta) - delta_sq[-1])  # <theta_t, delta> = <theta_t+1 - delta, delta>
                self._prev[i].copy_(t)
        total = torch.stack(sq).sum(0)
        out["norm"] = total.sqrt()
        if have_prev:
            prev_sq = self._prev_sq
            a, d = torch.stack(along).sum(0), torch.stack(delta_sq).sum(0)
            # |theta_t+1|^2 = |theta_t|^2 + 2 <theta_t, delta> + |delta|^2, so cos(theta_t, theta_t+1) comes
            # from three sums whose rounding cancels instead of from two nearly equal norms.
            out["direction"] = _per_task_cosine(
                prev_sq + a, prev_sq.sqrt(), (prev_sq + 2 * a + d).clamp(min=0).sqrt()
            )
            out["alignment"] = _per_task_cosine(a, prev_sq.sqrt(), d.sqrt())
            out["step_size"] = d.sqrt()
        else:
            self._prev = [t.clone() for _, t in kept]
        self._prev_sq = total
        return out

    def _churn(self, names: list[str], masks: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        # For 0/1 masks, flipped = |m| + |m_prev| - 2 <m, m_prev>: exact in float32 below 2^24 per layer and task.
        # The masks are kept by reference, not copied: `observe` is given masks nothing changes in place.
        layers = [m.detach().flatten(1).float() for m in masks]
        have_prev = self._prev_masks is not None and [p.shape for p in self._prev_masks] == [
            m.shape for m in layers
        ]
        kept = [_count(m) for m in layers]
        out = {"density": torch.stack(kept).sum(0) / sum(m.shape[1] for m in layers)}
        if have_prev:
            flips = []
            for i, (name, m) in enumerate(zip(names, layers, strict=True)):
                flipped = kept[i] + self._prev_kept[i] - 2 * _dot(m, self._prev_masks[i])
                out[f"churn/{name}"] = flipped / m.shape[1]
                flips.append(flipped)
            out["churn"] = torch.stack(flips).sum(0) / sum(m.shape[1] for m in layers)
        self._prev_masks, self._prev_kept = layers, kept
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

    def _saturation(self, masks, trained, effective) -> dict[str, torch.Tensor]:
        every, sweep_every = self.config.saturation_every, self.config.sweep_every
        out: dict[str, torch.Tensor] = {}
        if every and self._count % every == 0:
            weights = self._effective(masks, trained, effective)
            owned = effective is None and masks is not None  # W * M made here: scaled in place
            out.update(saturation(self.run, weights, self.config.scale, self.keep, self.hidden, owned=owned))
        if sweep_every and self._count % sweep_every == 0:
            out.update(self.sweep(self._effective(masks, trained, effective)))
        return out

    def sweep(self, effective: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(K,) saturation cosine and argmax agreement at every c of `config.sweep_scales`."""
        if self.run is None:
            raise ValueError("the saturation sweep needs a run function: Probe(run=...)")
        out: dict[str, torch.Tensor] = {}
        for c in self.config.sweep_scales:
            s = saturation(self.run, effective, c, self.keep)
            out[f"sweep_cosine@{c:g}"] = s["saturation_cosine"]
            out[f"sweep_agreement@{c:g}"] = s["saturation_agreement"]
        return out

    def series(self, key: str, task: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one recorded key of one task, over the probes that recorded it."""
        rows = [(r["step"], r[key]) for r in (self.history[task] if self.history else []) if key in r]
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
