"""What every mask method shares: its spec, its registry, the stacked base class, and the checks.

`density` is always the fraction of weights KEPT. The methods (each in its own module, registered
in `MASK_METHODS` when the `supermask.core.masks` package is imported):

- `topk` (edge-popup, masks/edge_popup.py): the top `density` fraction of |score| in each layer;
- `threshold` (SupSup, masks/supsup.py): every weight whose score is >= 0;
- `learned_threshold` (masks/learned_threshold.py): a learned threshold per layer, steered to a
  target global density;
- `neuron` (HopSupSup, masks/neuron.py): one bit per hidden neuron.

`MaskSpec` (method, density, policy, options) is the `mask` section of a task spec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from supermask.core.fields import check_fields, check_options, choices, constructor_options, in_range
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


def score_bound(shape: tuple[int, ...]) -> float:
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
            [(torch.rand(shape, generator=generator) * 2 - 1) * score_bound(shape) for shape in shapes]
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


def method_options(name: str) -> dict[str, object]:
    """The options mask method `name` takes in MaskSpec.options, with their defaults."""
    return constructor_options(MASK_METHODS.get(name).__init__, ("shapes", "density", "seeds", "policy"))


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
    if "policy" in spec.options:
        raise ValueError("mask.options.policy: set mask.policy instead (one place for one setting)")
    check_options("mask.options", f"mask method {spec.method!r}", spec.options, method_options(spec.method))
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
