"""SupSup's masks (method `threshold`, as in Piggyback): keep every weight whose score is >= 0.

There is no density target: a task keeps whatever its scores give. The gradient passes straight
through the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from supermask.core.masks.methods import MASK_METHODS, MaskMethod
from supermask.core.masks.straight_through import threshold_bits


@MASK_METHODS.register("threshold")
class ThresholdMask(MaskMethod):
    """SupSup/Piggyback: keep weights whose score is >= 0 (density is whatever the scores give)."""

    name = "threshold"
    takes_density = False

    def __init__(self, shapes, density: float | None = None, seeds: Sequence[int] = (0,)) -> None:
        super().__init__(shapes, 0.5 if density is None else density, seeds)

    def forward(self) -> list[torch.Tensor]:
        return [threshold_bits(s) for s in self.scores]
