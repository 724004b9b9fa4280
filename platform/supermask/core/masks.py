"""Mask methods: how a binary mask is produced from learnable scores, with straight-through gradients.

`density` is always the fraction of weights KEPT.

- `topk` (edge-popup): keep the top `density` fraction of |score| in each layer (per-layer budgets
  from a density policy); the gradient passes straight through to every score.
- `threshold` (SupSup's masks): keep weights whose score is >= 0; straight-through gradient.
- `learned_threshold`: a learned per-layer threshold over the scores, with a density controller.
  A weight is kept when |z| > sigmoid(s_l), where z = softsign(score / b_l) lies in (-1, 1) and s_l is
  one learned scalar per layer, so layers find their own budgets. The forward pass is a hard 0/1
  mask over the frozen weights (this is NOT STR, which soft-thresholds trained weights); the
  gradient reaching s_l is borrowed from STR's d relu(|z| - sigmoid(s_l)) / ds_l. A proportional
  controller pulls the global density to `density` during search, and `finalize` shifts every s_l
  by one common offset so that the kept fraction matches the target to within one weight.

`MaskSpec` (method, density, policy, options) is the `mask` section of a task spec.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from supermask.core.fields import check_fields, choices, in_range
from supermask.core.registry import Registry

MASK_METHODS: Registry = Registry("mask method")
DENSITY_POLICIES = ("uniform", "erdos_renyi")


@dataclass(frozen=True)
class MaskSpec:
    """How a task's mask is made from its scores: the `mask` section of a task spec."""

    method: str = "topk"
    # Fraction of weights KEPT. None: the method's default (0.5 for topk and learned_threshold);
    # threshold keeps whatever scores are >= 0 and takes no density.
    density: float | None = field(default=None, metadata=in_range(0.0, 1.0, lo_open=True))
    policy: str = field(default="uniform", metadata=choices(*DENSITY_POLICIES))  # topk's per-layer budgets
    options: dict = field(default_factory=dict, hash=False)  # the method's own options, e.g. init_threshold

    @property
    def target_density(self) -> float | None:
        """The density the method aims for (None for threshold, which has no target)."""
        cls = MASK_METHODS.get(self.method)
        if not cls.takes_density:
            return None
        return cls.default_density if self.density is None else float(self.density)


def layer_densities(shapes: list[tuple[int, ...]], density: float, policy: str = "uniform") -> list[float]:
    """Per-layer kept fractions whose weighted mean is `density`."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1] (the fraction of weights kept), got {density}")
    if policy == "uniform":
        return [float(density)] * len(shapes)
    if policy != "erdos_renyi":
        raise ValueError(f"unknown density policy {policy!r}; known: {', '.join(DENSITY_POLICIES)}")
    # Erdos-Renyi(-kernel) budget: density_l proportional to sum(dims)/prod(dims), capped at 1.
    sizes = np.array([np.prod(s) for s in shapes], dtype=np.float64)
    raw = np.array([sum(s) / np.prod(s) for s in shapes], dtype=np.float64)
    target = density * sizes.sum()
    dense = np.zeros(len(shapes), dtype=bool)
    while True:
        budget = target - sizes[dense].sum()
        eps = budget / (raw[~dense] * sizes[~dense]).sum()
        out = np.where(dense, 1.0, eps * raw)
        if (out <= 1.0).all():
            return [float(d) for d in out]
        dense |= out > 1.0


def kept_count(numel: int, density: float) -> int:
    """How many of `numel` weights a layer of this density keeps (at least one)."""
    return max(1, min(numel, int(round(density * numel))))


class _TopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int) -> torch.Tensor:
        flat = scores.flatten()
        mask = torch.zeros_like(flat)
        mask[torch.topk(flat, k, sorted=False).indices] = 1.0
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _Threshold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        return (scores >= 0).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad


class _SoftThreshold(torch.autograd.Function):
    """Forward: 1[|z| > tau]. Backward: straight through to the raw score, STR's d/dtau to tau."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, tau: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        kept = z.abs() > tau
        ctx.save_for_backward(raw, kept)
        return kept.to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        raw, kept = ctx.saved_tensors
        # d relu(|z| - tau) / d tau = -1 where kept; the raw score gets the gradient straight
        # through (with the sign of |.|), so pruned weights can come back.
        grad_tau = -(grad * kept).sum().reshape(())
        return None, grad_tau, grad * torch.sign(raw)


def _score_bound(shape: tuple[int, ...]) -> float:
    return 1.0 / math.sqrt(int(np.prod(shape[1:])))


def _init_scores(shapes: list[tuple[int, ...]], generator: torch.Generator) -> nn.ParameterList:
    """Scores ~ U(-b, b) with b = 1/sqrt(fan_in), as kaiming_uniform(a=sqrt(5)) draws them."""
    out = []
    for shape in shapes:
        b = _score_bound(shape)
        out.append(nn.Parameter((torch.rand(shape, generator=generator) * 2 - 1) * b))
    return nn.ParameterList(out)


class MaskMethod(nn.Module):
    """Learnable state that yields one mask per layer; subclasses define how."""

    name = "base"
    takes_density = True  # whether `density` means anything to the method
    takes_policy = False  # whether per-layer budgets (MaskSpec.policy) mean anything to it
    default_density = 0.5

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Raise ValueError naming an option value the method cannot use (keys and types are checked already)."""

    def __init__(self, shapes: list[tuple[int, ...]], density: float, seed: int = 0) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.density = float(density)
        generator = torch.Generator().manual_seed(seed)
        self.scores = _init_scores(self.shapes, generator)

    def forward(self) -> list[torch.Tensor]:
        """Float 0/1 masks whose gradient reaches the scores."""
        raise NotImplementedError

    @torch.no_grad()
    def hard_masks(self) -> list[np.ndarray]:
        """The current binary masks as boolean NumPy arrays."""
        return [m.detach().cpu().numpy().astype(bool) for m in self.forward()]

    def after_step(self) -> dict[str, float]:
        """Called after every optimizer step; returns metrics to log."""
        return {}

    def finalize(self) -> dict[str, float]:
        """Called once when the search ends; returns metrics to record."""
        return {}


@MASK_METHODS.register("topk")
class TopKMask(MaskMethod):
    """edge-popup: top `density` of |score| per layer, per-layer budgets from a policy."""

    name = "topk"
    takes_policy = True

    def __init__(self, shapes, density: float, seed: int = 0, policy: str = "uniform") -> None:
        super().__init__(shapes, density, seed)
        self.layer_density = layer_densities(self.shapes, density, policy)
        self.k = [
            kept_count(int(np.prod(s)), d) for s, d in zip(self.shapes, self.layer_density, strict=True)
        ]

    def forward(self) -> list[torch.Tensor]:
        return [_TopK.apply(s.abs(), k) for s, k in zip(self.scores, self.k, strict=True)]


@MASK_METHODS.register("threshold")
class ThresholdMask(MaskMethod):
    """SupSup/Piggyback: keep weights whose score is >= 0 (density is whatever the scores give)."""

    name = "threshold"
    takes_density = False

    def __init__(self, shapes, density: float | None = None, seed: int = 0) -> None:
        super().__init__(shapes, 0.5 if density is None else density, seed)

    def forward(self) -> list[torch.Tensor]:
        return [_Threshold.apply(s) for s in self.scores]


@MASK_METHODS.register("learned_threshold")
class LearnedThresholdMask(MaskMethod):
    """A learned threshold per layer over the scores, steered to a target global density."""

    name = "learned_threshold"

    @classmethod
    def check_options(cls, options: dict) -> None:
        start = options.get("init_threshold")
        if start is not None and not 0.0 < start < 1.0:
            raise ValueError(
                f"mask.options.init_threshold: got {start!r}; must be in (0, 1) (it is sigmoid(s))"
            )
        if options.get("controller_gain", 0.1) <= 0:
            raise ValueError(f"mask.options.controller_gain: got {options['controller_gain']!r}; must be > 0")

    def __init__(
        self,
        shapes,
        density: float,
        seed: int = 0,
        init_threshold: float | None = None,
        controller_gain: float = 0.1,
    ) -> None:
        super().__init__(shapes, density, seed)
        # |z| = |u|/(1+|u|) with u ~ U(-1, 1) keeps `density` of a layer when sigmoid(s) = (1-d)/(2-d).
        self.check_options({"init_threshold": init_threshold, "controller_gain": controller_gain})
        start = (1.0 - density) / (2.0 - density) if init_threshold is None else init_threshold
        self.s = nn.Parameter(torch.full((len(self.shapes),), math.log(start / (1 - start))))
        self.register_buffer("bounds", torch.tensor([_score_bound(s) for s in self.shapes]))
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.controller_gain = controller_gain

    def normalised_scores(self) -> list[torch.Tensor]:
        """softsign(score / b_l): in (-1, 1), so that every threshold sigmoid(s) in (0, 1) is meaningful."""
        return [torch.nn.functional.softsign(x / b) for x, b in zip(self.scores, self.bounds, strict=True)]

    def forward(self) -> list[torch.Tensor]:
        tau = torch.sigmoid(self.s)
        return [
            _SoftThreshold.apply(z, tau[i], x)
            for i, (z, x) in enumerate(zip(self.normalised_scores(), self.scores, strict=True))
        ]

    @torch.no_grad()
    def global_density(self, offset: float = 0.0) -> float:
        tau = torch.sigmoid(self.s + offset)
        kept = sum(int((z.abs() > tau[i]).sum()) for i, z in enumerate(self.normalised_scores()))
        return kept / sum(self.sizes)

    @torch.no_grad()
    def after_step(self) -> dict[str, float]:
        # Proportional control on the log-odds of every threshold: too dense -> raise them all.
        current = self.global_density()
        error = math.log(max(current, 1e-4) / self.density)
        self.s.add_(self.controller_gain * error)
        return {"density": current}

    @torch.no_grad()
    def finalize(self) -> dict[str, float]:
        before = self.global_density()
        lo, hi = -30.0, 30.0  # one common offset on every s_l; density falls as it grows
        for _ in range(60):
            mid = (lo + hi) / 2
            if self.global_density(mid) > self.density:
                lo = mid
            else:
                hi = mid
        best = min((lo, hi), key=lambda o: abs(self.global_density(o) - self.density))
        self.s.add_(best)
        return {"density_before_calibration": before, "calibration_offset": best}


def method_options(name: str) -> dict[str, object]:
    """The options mask method `name` takes in MaskSpec.options, with their defaults."""
    params = inspect.signature(MASK_METHODS.get(name).__init__).parameters
    return {
        k: p.default for k, p in params.items() if k not in ("self", "shapes", "density", "seed", "policy")
    }


def check_mask_spec(spec: MaskSpec) -> None:
    """Raise ValueError naming the mask field that does not fit the method (keys, types, density, policy)."""
    check_fields(spec, "mask.")
    cls = MASK_METHODS.get(spec.method)
    if spec.density is not None and not cls.takes_density:
        raise ValueError(
            f"mask.density: got {spec.density}; method {spec.method!r} keeps every weight whose score is >= 0 "
            "and has no density target: remove mask.density, or use method topk or learned_threshold"
        )
    if spec.policy != "uniform" and not cls.takes_policy:
        raise ValueError(f"mask.policy: got {spec.policy!r}; per-layer budgets apply to method topk only")
    allowed = method_options(spec.method)
    for key, value in spec.options.items():
        if key == "policy":
            raise ValueError("mask.options.policy: set mask.policy instead (one place for one setting)")
        if key not in allowed:
            known = ", ".join(f"{k} (default {v!r})" for k, v in allowed.items()) or "none"
            raise ValueError(
                f"mask.options.{key}: not an option of mask method {spec.method!r}; allowed: {known}"
            )
        default = allowed[key]
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if default is not None and isinstance(default, float) and not numeric:
            raise ValueError(f"mask.options.{key}: got {value!r}; must be a number")
        if value is not None and default is None and not numeric:
            raise ValueError(f"mask.options.{key}: got {value!r}; must be a number or null")
    cls.check_options(spec.options)


def build_mask_method(spec: MaskSpec, shapes: list[tuple[int, ...]], seed: int = 0) -> MaskMethod:
    """The mask method `spec` names, built for these layer shapes with scores drawn from `seed`."""
    check_mask_spec(spec)
    cls = MASK_METHODS.get(spec.method)
    kwargs = dict(spec.options)
    if cls.takes_policy:
        kwargs["policy"] = spec.policy
    density = spec.target_density
    return cls(shapes, density, seed=seed, **kwargs)
