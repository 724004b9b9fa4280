"""edge-popup's masks (method `topk`): the top `density` fraction of |score| in every layer.

Per-layer budgets come from a density policy (`uniform` or `erdos_renyi`, see `layer_densities`);
the selection is exact (core/masks/selection.py) and the gradient passes straight through to every
score, so weights outside the top-k can enter it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from supermask.core.masks.methods import MASK_METHODS, MaskMethod, kept_count, layer_densities
from supermask.core.masks.selection import topk_rows
from supermask.core.masks.straight_through import straight_through


def _top_k(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 (as magnitudes' dtype) marking the k largest of each task's row."""
    rows = magnitudes.shape[0]
    return topk_rows(magnitudes.reshape(rows, -1), k).view_as(magnitudes).to(magnitudes.dtype)


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
        return [
            straight_through(s.abs(), lambda m, k=k: _top_k(m, k))
            for s, k in zip(self.scores, self.k, strict=True)
        ]
