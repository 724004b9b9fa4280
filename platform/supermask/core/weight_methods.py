"""Weight methods: trained weights beside supermasks, for baselines and for STR's and edge-popup's claims.

A weight method owns a task's learnable tensors, starting from the base's frozen weights, and its
`forward()` returns the per-layer EFFECTIVE weights the base runs with:
`base(x, weights=method(), bn_state=...)`. Its life is `begin(total_steps)`, then `after_step()`
after every optimizer step, then `finalize()`; each returns metrics. Per-task state lives in tensors
(weights, STR's per-layer `s`, pruning masks, the step count), so a stack of K tasks is the same state
with a leading K axis.

- `dense`: the base's weights, trained as they are.
- `str` (Soft Threshold Reparameterization): W_hat = sign(W) * relu(|W| - sigmoid(s_l)), one learned
  scalar s_l per layer; weight decay applies to s too (it is what raises the thresholds), and the
  gradient is what autograd gives through relu, |.| and sign. Without `target_sparsity` every layer
  ends at the sparsity STR learns. With it, every `control_every` steps the controller makes the move
  after which the overall sparsity is that of Zhu & Gupta's cubic ramp from 0 to the target (reached
  at `ramp_end` of training, then held), and `finalize` lands on the target to a few weights. The
  default move (`controller="decay"`) is an extra weight-decay step on s, s_l <- s_l * (1 - x) with
  one x for every layer: STR's own way of raising thresholds, which also pulls the s_l together as
  STR's decay does. `controller="offset"` shifts every s_l by one x instead, keeping their
  differences; those then come from the loss gradient alone, which is a sum over each layer's
  weights, so small layers end far sparser (measured worse; see benchmarks/str_sparsity.py).
- `magnitude`: magnitude pruning as STR's comparison, gradual (Zhu & Gupta's cubic schedule) or one
  shot, with per-layer budgets `uniform`, `erdos_renyi` (as `layer_densities` computes them) or
  `global` (one magnitude threshold over every layer).

`sparsity` is always the fraction of weights that are ZERO (1 - density).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from supermask.core.masks import kept_count, layer_densities
from supermask.core.registry import Registry

WEIGHT_METHODS: Registry = Registry("weight method")
MAGNITUDE_POLICIES = ("uniform", "erdos_renyi", "global")
MAGNITUDE_SCHEDULES = ("gradual", "one_shot")
STR_CONTROLLERS = ("decay", "offset")


@dataclass(frozen=True)
class WeightSpec:
    """Which weight method trains a task, with its own options (e.g. {"target_sparsity": 0.9})."""

    method: str = "dense"
    options: dict = field(default_factory=dict, hash=False)


def cubic_sparsity(step: int, total_steps: int, final: float, begin: float = 0.0, end: float = 0.75) -> float:
    """Zhu & Gupta's schedule: 0 before `begin`, final * (1 - (1 - p)^3) in between, `final` from `end` on.

    `begin` and `end` are fractions of `total_steps`; p is the progress from one to the other.
    """
    t0, t1 = round(begin * total_steps), round(end * total_steps)
    if step <= t0:
        return 0.0 if t1 > t0 else float(final)
    if step >= t1:
        return float(final)
    progress = (step - t0) / (t1 - t0)
    return float(final) * (1.0 - (1.0 - progress) ** 3)


def _check_fraction(name: str, value: float | None, *, open_hi: bool = False) -> None:
    if value is None:
        return
    bad = not 0.0 <= value <= 1.0 or (open_hi and value >= 1.0)
    if bad:
        allowed = "[0, 1)" if open_hi else "[0, 1]"
        raise ValueError(f"weights.options.{name}: got {value!r}; must be in {allowed}")


class WeightMethod(nn.Module):
    """Trainable per-layer weights, initialised from the base's frozen ones; subclasses say how they prune."""

    name = "base"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Raise ValueError naming an option value the method cannot use (names are checked by the builder)."""

    def __init__(self, weights: list[torch.Tensor]) -> None:
        super().__init__()
        self.shapes = [tuple(w.shape) for w in weights]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.weights = nn.ParameterList([nn.Parameter(w.detach().clone().float()) for w in weights])
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.total_steps = 0

    def begin(self, total_steps: int) -> None:
        """Called once before the first step with the number of optimizer steps training will take."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)

    def forward(self) -> list[torch.Tensor]:
        """The effective weights the base runs with, one per masked layer."""
        return list(self.weights)

    def param_groups(self) -> list[dict]:
        """The tensors an optimizer trains, as param groups (a group may carry its own weight_decay)."""
        return [{"params": list(self.weights)}]

    def after_step(self) -> dict[str, float]:
        """Called after every optimizer step; returns metrics to log."""
        self.step += 1
        return {}

    def finalize(self) -> dict[str, float]:
        """Called once when training ends; returns metrics to record."""
        return {"sparsity": self.sparsity()}

    @torch.no_grad()
    def effective_weights(self) -> list[torch.Tensor]:
        """`forward()` without gradients."""
        return [w.detach() for w in self.forward()]

    @torch.no_grad()
    def layer_sparsity(self) -> list[float]:
        """Fraction of each layer's effective weights that are exactly zero."""
        return [float((w == 0).sum()) / n for w, n in zip(self.effective_weights(), self.sizes, strict=True)]

    def sparsity(self) -> float:
        """Fraction of all effective weights that are exactly zero."""
        zeros = sum(s * n for s, n in zip(self.layer_sparsity(), self.sizes, strict=True))
        return float(zeros / sum(self.sizes))


@WEIGHT_METHODS.register("dense")
class DenseWeights(WeightMethod):
    """The base's weights trained as they are (a fine-tuned or per-task network)."""

    name = "dense"


@WEIGHT_METHODS.register("str")
class STRWeights(WeightMethod):
    """STR on weights: W_hat = sign(W) * relu(|W| - sigmoid(s_l)), optionally steered to a target sparsity."""

    name = "str"

    @classmethod
    def check_options(cls, options: dict) -> None:
        target = options.get("target_sparsity")
        if target is not None and not 0.0 <= target < 1.0:
            raise ValueError(
                f"weights.options.target_sparsity: got {target!r}; must be in [0, 1) (the fraction of weights "
                "that are zero), or null for STR's learned budget"
            )
        decay = options.get("s_weight_decay")
        if decay is not None and decay < 0:
            raise ValueError(
                f"weights.options.s_weight_decay: got {decay!r}; must be >= 0, or null (as the weights)"
            )
        _check_fraction("ramp_begin", options.get("ramp_begin"), open_hi=True)
        _check_fraction("ramp_end", options.get("ramp_end"))
        if options.get("ramp_end", 0.75) < options.get("ramp_begin", 0.0):
            raise ValueError("weights.options.ramp_end must be >= ramp_begin")
        if options.get("controller", "decay") not in STR_CONTROLLERS:
            raise ValueError(
                f"weights.options.controller: got {options['controller']!r}; allowed: {', '.join(STR_CONTROLLERS)}"
            )
        if options.get("control_every", 10) < 1:
            raise ValueError(
                f"weights.options.control_every: got {options['control_every']!r}; must be >= 1 (steps)"
            )

    def __init__(
        self,
        weights: list[torch.Tensor],
        init_s: float = -8.0,
        s_weight_decay: float | None = None,
        target_sparsity: float | None = None,
        ramp_begin: float = 0.0,
        ramp_end: float = 0.75,
        controller: str = "decay",
        control_every: int = 10,
    ) -> None:
        super().__init__(weights)
        options = dict(
            target_sparsity=target_sparsity,
            s_weight_decay=s_weight_decay,
            ramp_begin=ramp_begin,
            ramp_end=ramp_end,
            controller=controller,
            control_every=control_every,
        )
        self.check_options(options)
        self.s = nn.Parameter(torch.full((len(self.shapes),), float(init_s)))
        self.s_weight_decay = s_weight_decay
        self.target_sparsity = target_sparsity
        self.ramp_begin, self.ramp_end = float(ramp_begin), float(ramp_end)
        self.controller, self.control_every = controller, int(control_every)

    def thresholds(self) -> torch.Tensor:
        """sigmoid(s_l), one per layer: |W| at or under it is zero."""
        return torch.sigmoid(self.s)

    def forward(self) -> list[torch.Tensor]:
        tau = self.thresholds()
        return [torch.sign(w) * torch.relu(w.abs() - tau[i]) for i, w in enumerate(self.weights)]

    def param_groups(self) -> list[dict]:
        s_group: dict = {"params": [self.s]}
        if self.s_weight_decay is not None:
            s_group["weight_decay"] = self.s_weight_decay
        return [{"params": list(self.weights)}, s_group]

    @torch.no_grad()
    def _zeros_at(self, s: torch.Tensor, magnitudes: list[torch.Tensor] | None = None) -> int:
        """Weights at or under the thresholds sigmoid(s) (counted in `magnitudes`, sorted, when given)."""
        tau = torch.sigmoid(s)
        if magnitudes is None:
            return sum(int((w.abs() <= tau[i]).sum()) for i, w in enumerate(self.weights))
        return sum(
            int(torch.searchsorted(m, tau[i : i + 1].to(m.dtype), right=True))
            for i, m in enumerate(magnitudes)
        )

    def _moved(self, x: float, form: str) -> torch.Tensor:
        """s after a controller move of size x: a decay step s * (1 - x), or a common shift s + x."""
        return self.s.detach() * (1.0 - x) if form == "decay" else self.s.detach() + x

    @torch.no_grad()
    def controller_move(
        self, sparsity: float, form: str, magnitudes: list[torch.Tensor] | None = None
    ) -> tuple[float, int]:
        """(x, zeros): the move of this form (see `_moved`) that best gives overall `sparsity`, and its zeros.

        Bisection in the float32 arithmetic of `forward`, over magnitudes sorted once, between moves
        that make every threshold sigmoid(-60) (none zero) and the most the form can do: 1/2 for a
        decay step (all s_l < 0 needed), 1 for a shift.
        """
        goal = int(round(sparsity * sum(self.sizes)))
        if magnitudes is None:
            magnitudes = self._sorted_magnitudes()
        s = self.s.detach()
        if form == "decay":
            lo, hi = 1.0 - 60.0 / max(float(s.abs().min()), 1e-6), 1.0 - 1e-6
        else:
            lo, hi = -60.0 - float(s.max()), 60.0 - float(s.min())

        def zeros(x: float) -> int:
            return self._zeros_at(self._moved(x, form), magnitudes)

        for _ in range(60):
            mid = (lo + hi) / 2
            if zeros(mid) < goal:
                lo = mid
            else:
                hi = mid
        best = min((hi, lo), key=lambda x: abs(zeros(x) - goal))
        return best, zeros(best)

    @torch.no_grad()
    def _sorted_magnitudes(self) -> list[torch.Tensor]:
        return [w.detach().abs().flatten().sort().values for w in self.weights]

    def scheduled_sparsity(self) -> float | None:
        """The overall sparsity the target asks for at the current step (None without a target)."""
        if self.target_sparsity is None:
            return None
        return cubic_sparsity(
            int(self.step), self.total_steps, self.target_sparsity, self.ramp_begin, self.ramp_end
        )

    @torch.no_grad()
    def _steer(self, sparsity: float) -> float:
        """Move s so that the overall sparsity is `sparsity`; returns the move.

        A decay step needs every s_l < 0 and cannot raise a threshold past 1/2; where the goal needs
        more (weights that large are rare), the move is a shift.
        """
        goal = sparsity * sum(self.sizes)
        magnitudes = self._sorted_magnitudes()
        if self.controller == "decay" and bool((self.s < 0).all()):
            move, zeros = self.controller_move(sparsity, "decay", magnitudes)
            if abs(zeros - goal) <= 1e-3 * sum(self.sizes):
                self.s.copy_(self._moved(move, "decay"))
                return move
        move, _ = self.controller_move(sparsity, "offset", magnitudes)
        self.s.copy_(self._moved(move, "offset"))
        return move

    @torch.no_grad()
    def after_step(self) -> dict[str, float]:
        super().after_step()
        goal = self.scheduled_sparsity()
        metrics = {}
        if goal is not None and goal > 0.0 and int(self.step) % self.control_every == 0:
            metrics["controller_move"] = self._steer(goal)
            metrics["scheduled_sparsity"] = goal
        metrics["sparsity"] = self._zeros_at(self.s) / sum(self.sizes)
        metrics["threshold_mean"] = float(self.thresholds().mean())
        return metrics

    @torch.no_grad()
    def finalize(self) -> dict[str, float]:
        metrics = {"sparsity_before_calibration": self._zeros_at(self.s) / sum(self.sizes)}
        if self.target_sparsity is not None:
            metrics["calibration_move"] = self._steer(self.target_sparsity)
        metrics["sparsity"] = self.sparsity()
        metrics.update({f"s_{i}": float(v) for i, v in enumerate(self.s)})
        return metrics


@WEIGHT_METHODS.register("magnitude")
class MagnitudePruning(WeightMethod):
    """Magnitude pruning to `target_sparsity`, gradual (cubic) or one shot, with per-layer budgets from `policy`."""

    name = "magnitude"

    @classmethod
    def check_options(cls, options: dict) -> None:
        target = options.get("target_sparsity", 0.9)
        if not 0.0 <= target < 1.0:
            raise ValueError(f"weights.options.target_sparsity: got {target!r}; must be in [0, 1)")
        if options.get("policy", "uniform") not in MAGNITUDE_POLICIES:
            raise ValueError(
                f"weights.options.policy: got {options['policy']!r}; allowed: {', '.join(MAGNITUDE_POLICIES)}"
            )
        if options.get("schedule", "gradual") not in MAGNITUDE_SCHEDULES:
            raise ValueError(
                f"weights.options.schedule: got {options['schedule']!r}; "
                f"allowed: {', '.join(MAGNITUDE_SCHEDULES)}"
            )
        _check_fraction("begin", options.get("begin"), open_hi=True)
        _check_fraction("end", options.get("end"))
        if options.get("every", 1) < 1:
            raise ValueError(f"weights.options.every: got {options['every']!r}; must be >= 1 (steps)")

    def __init__(
        self,
        weights: list[torch.Tensor],
        target_sparsity: float = 0.9,
        policy: str = "uniform",
        schedule: str = "gradual",
        begin: float = 0.0,
        end: float | None = None,
        every: int = 10,
    ) -> None:
        super().__init__(weights)
        options = dict(
            target_sparsity=target_sparsity, policy=policy, schedule=schedule, begin=begin, end=end
        )
        self.check_options({**options, "every": every})
        self.target_sparsity = float(target_sparsity)
        self.policy, self.schedule = policy, schedule
        # A one-shot prune defaults to the very end (no fine-tuning); the gradual ramp leaves a quarter to recover.
        self.begin_fraction = float(begin)
        self.end_fraction = float(end if end is not None else (1.0 if schedule == "one_shot" else 0.75))
        self.every = int(every)
        for i, w in enumerate(self.weights):
            self.register_buffer(f"mask_{i}", torch.ones_like(w, dtype=torch.bool))

    def masks(self) -> list[torch.Tensor]:
        """The current boolean keep-masks, one per layer."""
        return [getattr(self, f"mask_{i}") for i in range(len(self.shapes))]

    def forward(self) -> list[torch.Tensor]:
        return [w * m for w, m in zip(self.weights, self.masks(), strict=True)]

    def layer_budgets(self, sparsity: float) -> list[int]:
        """Weights each layer keeps at overall `sparsity` under the policy (global: None, decided by magnitude)."""
        densities = layer_densities(self.shapes, 1.0 - sparsity, self.policy)
        return [kept_count(n, d) for n, d in zip(self.sizes, densities, strict=True)]

    @torch.no_grad()
    def prune(self, sparsity: float) -> None:
        """Keep the largest-magnitude surviving weights so that the layers reach their budgets at `sparsity`."""
        # Ranking |W * mask| makes pruning monotone: a pruned weight never outranks a kept one.
        magnitudes = [(w * m).abs() for w, m in zip(self.weights, self.masks(), strict=True)]
        if self.policy == "global":
            flat = torch.cat([m.flatten() for m in magnitudes])
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[torch.topk(flat, kept_count(flat.numel(), 1.0 - sparsity), sorted=False).indices] = True
            kept = [k.view(s) for k, s in zip(torch.split(keep, self.sizes), self.shapes, strict=True)]
        else:
            kept = []
            for mag, k in zip(magnitudes, self.layer_budgets(sparsity), strict=True):
                keep = torch.zeros(mag.numel(), dtype=torch.bool, device=mag.device)
                keep[torch.topk(mag.flatten(), k, sorted=False).indices] = True
                kept.append(keep.view_as(mag))
        for i, keep in enumerate(kept):
            getattr(self, f"mask_{i}").copy_(keep)

    def _due(self, step: int) -> float | None:
        t0 = round(self.begin_fraction * self.total_steps)
        t1 = round(self.end_fraction * self.total_steps)
        if self.schedule == "one_shot":
            return self.target_sparsity if step == t1 else None
        if t0 <= step <= t1 and ((step - t0) % self.every == 0 or step == t1):
            return cubic_sparsity(
                step, self.total_steps, self.target_sparsity, self.begin_fraction, self.end_fraction
            )
        return None

    @torch.no_grad()
    def after_step(self) -> dict[str, float]:
        super().after_step()
        goal = self._due(int(self.step))
        if goal is not None and goal > 0.0:
            self.prune(goal)
        kept = sum(int(m.sum()) for m in self.masks())
        return {"sparsity": 1.0 - kept / sum(self.sizes)}

    @torch.no_grad()
    def finalize(self) -> dict[str, float]:
        kept = sum(int(m.sum()) for m in self.masks())
        if 1.0 - kept / sum(self.sizes) < self.target_sparsity - 1e-12:
            self.prune(self.target_sparsity)  # one shot at the end, or a ramp that training never reached
        return {"sparsity": self.sparsity()}


def weight_method_options(name: str) -> dict[str, object]:
    """The options weight method `name` takes in WeightSpec.options, with their defaults."""
    params = inspect.signature(WEIGHT_METHODS.get(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "weights")}


def build_weight_method(spec: WeightSpec, weights: list[torch.Tensor]) -> WeightMethod:
    """The weight method `spec` names, its tensors initialised from `weights` (e.g. `base.weights()`)."""
    allowed = weight_method_options(spec.method)
    for key in spec.options:
        if key not in allowed:
            known = ", ".join(f"{k} (default {v!r})" for k, v in allowed.items()) or "none"
            raise ValueError(
                f"weights.options.{key}: not an option of weight method {spec.method!r}; allowed: {known}"
            )
    cls = WEIGHT_METHODS.get(spec.method)
    cls.check_options(spec.options)
    return cls(weights, **spec.options)
