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
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from supermask.core.fields import check_fields, choices, in_range
from supermask.core.registry import Registry
from supermask.core.selection import topk_rows

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
    """Forward: the top-k of each task's row (an exact selection, see core/selection.py). Backward: straight through."""

    @staticmethod
    def forward(ctx, magnitudes: torch.Tensor, k: int) -> torch.Tensor:
        rows = magnitudes.shape[0]
        kept = topk_rows(magnitudes.reshape(rows, -1), k)
        return kept.view_as(magnitudes).to(magnitudes.dtype)

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
    """Forward: 1[|z| > tau] per task. Backward: straight through to the raw score, STR's d/dtau to tau."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, tau: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        kept = z.abs() > _per_task(tau, z)
        ctx.save_for_backward(raw, kept)
        return kept.to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        raw, kept = ctx.saved_tensors
        # d relu(|z| - tau) / d tau = -1 where kept; the raw score gets the gradient straight
        # through (with the sign of |.|), so pruned weights can come back.
        grad_tau = -(grad * kept).flatten(1).sum(1)
        return None, grad_tau, grad * torch.sign(raw)


def _per_task(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (K,) tensor shaped to broadcast against a (K, *layer shape) one."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _score_bound(shape: tuple[int, ...]) -> float:
    return 1.0 / math.sqrt(int(np.prod(shape[1:])))


def init_scores(shapes: list[tuple[int, ...]], seeds: Sequence[int]) -> nn.ParameterList:
    """Scores (K, *shape) per layer, task k's ~ U(-b, b) (b = 1/sqrt(fan_in)) from its own seed.

    Each task draws from its own generator, layer after layer, so a task's scores are the same
    whatever block of tasks it is stacked with.
    """
    per_task = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        per_task.append(
            [(torch.rand(shape, generator=generator) * 2 - 1) * _score_bound(shape) for shape in shapes]
        )
    return nn.ParameterList(nn.Parameter(torch.stack(layer)) for layer in zip(*per_task, strict=True))


class MaskMethod(nn.Module):
    """Learnable state that yields masks for a stack of K tasks; subclasses define how.

    Every tensor has a leading task axis: scores are (K, *layer shape) per layer, and `forward`
    returns per-layer float 0/1 masks of the same shapes whose gradient reaches the scores. Task k
    of a stack behaves exactly as it would alone (elementwise optimizers keep that true).
    """

    name = "base"
    produces = (
        "masks"  # what forward() returns: "masks" over the frozen weights ("weights": the weights themselves)
    )
    takes_density = True  # whether `density` means anything to the method
    takes_policy = False  # whether per-layer budgets (MaskSpec.policy) mean anything to it
    default_density = 0.5

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Raise ValueError naming an option value the method cannot use (keys and types are checked already)."""

    def __init__(self, shapes: list[tuple[int, ...]], density: float, seeds: Sequence[int] = (0,)) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.density = float(density)
        self.num_tasks = len(seeds)
        self.scores = init_scores(self.shapes, seeds)

    def forward(self) -> list[torch.Tensor]:
        """Float 0/1 masks (K, *shape) per layer whose gradient reaches the scores."""
        raise NotImplementedError

    @torch.no_grad()
    def hard_masks(self) -> list[torch.Tensor]:
        """The current binary masks, (K, *shape) bool per layer, on the method's device."""
        return [m.bool() for m in self.forward()]

    def after_step(self) -> dict[str, torch.Tensor]:
        """Called after every optimizer step; returns (K,) metrics, left on the device."""
        return {}

    def finalize(self) -> dict[str, list[float]]:
        """Called once when the search ends; returns per-task metrics to record."""
        return {}


@MASK_METHODS.register("topk")
class TopKMask(MaskMethod):
    """edge-popup: top `density` of |score| per layer, per-layer budgets from a policy."""

    name = "topk"
    takes_policy = True

    def __init__(self, shapes, density: float, seeds: Sequence[int] = (0,), policy: str = "uniform") -> None:
        super().__init__(shapes, density, seeds)
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

    def __init__(self, shapes, density: float | None = None, seeds: Sequence[int] = (0,)) -> None:
        super().__init__(shapes, 0.5 if density is None else density, seeds)

    def forward(self) -> list[torch.Tensor]:
        return [_Threshold.apply(s) for s in self.scores]


@MASK_METHODS.register("learned_threshold")
class LearnedThresholdMask(MaskMethod):
    """A learned threshold per layer and task over the scores, steered to a target global density."""

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
        seeds: Sequence[int] = (0,),
        init_threshold: float | None = None,
        controller_gain: float = 0.1,
    ) -> None:
        super().__init__(shapes, density, seeds)
        self.check_options({"init_threshold": init_threshold, "controller_gain": controller_gain})
        # |z| = |u|/(1+|u|) with u ~ U(-1, 1) keeps `density` of a layer when sigmoid(s) = (1-d)/(2-d).
        start = (1.0 - density) / (2.0 - density) if init_threshold is None else init_threshold
        self.s = nn.Parameter(torch.full((self.num_tasks, len(self.shapes)), math.log(start / (1 - start))))
        self.register_buffer("bounds", torch.tensor([_score_bound(s) for s in self.shapes]))
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.controller_gain = controller_gain

    def normalised_scores(self) -> list[torch.Tensor]:
        """softsign(score / b_l): in (-1, 1), so that every threshold sigmoid(s) in (0, 1) is meaningful."""
        return [torch.nn.functional.softsign(x / b) for x, b in zip(self.scores, self.bounds, strict=True)]

    def forward(self) -> list[torch.Tensor]:
        tau = torch.sigmoid(self.s)
        return [
            _SoftThreshold.apply(z, tau[:, i], x)
            for i, (z, x) in enumerate(zip(self.normalised_scores(), self.scores, strict=True))
        ]

    @torch.no_grad()
    def global_density(self, offset: torch.Tensor | float = 0.0) -> torch.Tensor:
        """(K,) fraction of weights each task keeps, with every threshold's s shifted by `offset` (per task)."""
        offset = torch.as_tensor(offset, dtype=self.s.dtype, device=self.s.device).expand(self.num_tasks)
        tau = torch.sigmoid(self.s + offset.unsqueeze(1))
        kept = sum(
            (z.abs() > _per_task(tau[:, i], z)).flatten(1).sum(1)
            for i, z in enumerate(self.normalised_scores())
        )
        return kept / sum(self.sizes)

    @torch.no_grad()
    def after_step(self) -> dict[str, torch.Tensor]:
        # Proportional control on the log-odds of every threshold: too dense -> raise them all.
        current = self.global_density()
        error = torch.log(current.clamp(min=1e-4) / self.density)
        self.s.add_(self.controller_gain * error.unsqueeze(1))
        return {"density": current}

    @torch.no_grad()
    def finalize(self) -> dict[str, list[float]]:
        before = self.global_density()
        lo = torch.full_like(
            before, -30.0
        )  # one common offset on a task's every s_l; density falls as it grows
        hi = torch.full_like(before, 30.0)
        for _ in range(60):
            mid = (lo + hi) / 2
            denser = self.global_density(mid) > self.density
            lo, hi = torch.where(denser, mid, lo), torch.where(denser, hi, mid)
        errors = torch.stack([(self.global_density(o) - self.density).abs() for o in (lo, hi)])
        best = torch.where(errors[0] <= errors[1], lo, hi)
        self.s.add_(best.unsqueeze(1))
        return {"density_before_calibration": before.tolist(), "calibration_offset": best.tolist()}


def method_options(name: str) -> dict[str, object]:
    """The options mask method `name` takes in MaskSpec.options, with their defaults."""
    params = inspect.signature(MASK_METHODS.get(name).__init__).parameters
    return {
        k: p.default for k, p in params.items() if k not in ("self", "shapes", "density", "seeds", "policy")
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


def build_mask_method(
    spec: MaskSpec, shapes: list[tuple[int, ...]], seeds: int | Sequence[int] = 0
) -> MaskMethod:
    """The mask method `spec` names for these layer shapes: one task per seed, scores drawn from it."""
    check_mask_spec(spec)
    cls = MASK_METHODS.get(spec.method)
    kwargs = dict(spec.options)
    if cls.takes_policy:
        kwargs["policy"] = spec.policy
    seeds = [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
    return cls(shapes, spec.target_density, seeds=seeds, **kwargs)
