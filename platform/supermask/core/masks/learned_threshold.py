"""Learned thresholds over the scores (method `learned_threshold`), steered to a target global density.

A weight is kept when |z| > sigmoid(s_l), where z = softsign(score / b_l) lies in (-1, 1) and s_l is
one learned scalar per layer and task, so layers find their own budgets. The forward pass is a hard
0/1 mask over the frozen weights (this is not STR, which soft-thresholds trained weights: see
core/weights/str.py); the gradient reaching s_l is STR's d relu(|z| - sigmoid(s_l)) / ds_l. A
proportional controller pulls the global density to `density` during search, and `finalize`
shifts every s_l by one common offset so that the kept fraction matches the target to within one
weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from supermask.core.masks.methods import MASK_METHODS, MaskMethod, score_bound


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
        self.register_buffer("bounds", torch.tensor([score_bound(s) for s in self.shapes]))
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
