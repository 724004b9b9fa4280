"""The straight-through estimator: a hard selection forward, the incoming gradient passed on unchanged.

Every mask method that makes 0/1 masks from real-valued scores (edge-popup's top-k, SupSup's
threshold, neuron masks) trains its scores through this one function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, select: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return select(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def straight_through(x: torch.Tensor, select: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`select(x)` (a 0/1 tensor shaped like x) in the forward pass; d/dx taken as the identity."""
    return _StraightThrough.apply(x, select)


def threshold_bits(scores: torch.Tensor) -> torch.Tensor:
    """Float 0/1 mask 1[score >= 0] with a straight-through gradient to the scores."""
    return straight_through(scores, lambda s: (s >= 0).to(s.dtype))
