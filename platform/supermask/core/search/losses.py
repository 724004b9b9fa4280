"""Per-task losses and accuracy of a stack of K tasks, for one label per example or one per position.

Labels are (K, B) (one class per example) or (K, B, T) (one per position, e.g. next-token prediction)
with IGNORE_INDEX where a position has no target (padding). A task's loss is the mean cross-entropy
over its labelled positions, and its accuracy counts those positions only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # a position without a target (cross_entropy's default ignore_index)


def stacked_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K,) mean cross-entropy of each task over its labelled examples or positions."""
    if y.dim() == 2:  # one label per example: the plain mean, as it always was
        flat = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        return flat.view(y.shape).mean(1)
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none", ignore_index=IGNORE_INDEX
    )
    return flat.view(y.shape).flatten(1).sum(1) / labelled(y).clamp(min=1)


def labelled(y: torch.Tensor) -> torch.Tensor:
    """(K,) how many examples or positions of each task have a label."""
    if y.dim() == 2:
        return torch.full((y.shape[0],), y.shape[1], dtype=torch.float32, device=y.device)
    return (y != IGNORE_INDEX).flatten(1).sum(1).float()


def stacked_correct(logits: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """(K,) labelled examples or positions whose argmax (over the first `num_classes` outputs) is right."""
    real = logits[..., :num_classes] if num_classes else logits
    right = (real.argmax(-1) == y) & (y != IGNORE_INDEX)
    return right.flatten(1).sum(1).float()
