"""Using a stored mask (or trained weights) on its base: the compatibility check, tensors, predictions, accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from supermask.core.bases.networks import BaseNetwork
from supermask.core.bases.stacked import stacked_forward
from supermask.core.records.packing import TaskMask
from supermask.core.records.weights import TaskWeights
from supermask.core.search.batches import TaskBatches, index_chunks
from supermask.core.search.losses import IGNORE_INDEX, labelled, stacked_correct


def check_compatible(base: BaseNetwork, mask: TaskMask | TaskWeights) -> None:
    """Raise ValueError if `mask` (or trained weights) was learned on another base than `base` (weights, spec or BatchNorm)."""
    if mask.base_fingerprint != base.fingerprint:
        raise ValueError(
            f"mask {mask.task_id!r} was learned on base {mask.base_fingerprint}, but this base is "
            f"{base.fingerprint} ({base.spec.arch}, seed {base.spec.seed}, init {base.spec.init}, batchnorm "
            f"{base.spec.batchnorm}, {base.spec.num_outputs} outputs); rebuild the base with the spec the "
            "mask was learned on"
        )
    if sorted(mask.bn_stats) != sorted(base.bn_names):
        raise ValueError(
            f"mask {mask.task_id!r} carries BatchNorm statistics {sorted(mask.bn_stats) or 'none'}, but the base "
            f"normalises with {sorted(base.bn_names) or 'none'}; the mask belongs to another base"
        )


def mask_tensors(mask: TaskMask, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """A stored mask as float32 0/1 tensors, one per layer."""
    return [torch.from_numpy(m.astype(np.float32)).to(device) for m in mask.masks()]


def bn_tensors(mask: TaskMask | TaskWeights, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A stored mask's BatchNorm statistics as float32 tensors."""
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(device) for k, v in mask.bn_stats.items()}


@dataclass(frozen=True)
class Accuracy:
    """Test accuracy two ways: argmax over the task's real classes, and over every output.

    They differ only on a base with superfluous outputs; the official SupSup code scores the second.
    """

    real_classes: float
    all_outputs: float


@torch.no_grad()
def predictions(
    base: BaseNetwork,
    mask: TaskMask | TaskWeights,
    x: torch.Tensor,
    num_classes: int | None = None,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax over the real classes, argmax over every output) for x under one task's mask (or trained
    weights) and BN statistics."""
    check_compatible(base, mask)
    base.eval()
    device = x.device if device is None else device
    # A mask multiplies the frozen weights; trained weights replace them.
    use = (
        {"weights": mask.tensors(device)}
        if isinstance(mask, TaskWeights)
        else {"masks": mask_tensors(mask, device)}
    )
    bn = bn_tensors(mask, device)
    real, every = [], []
    for start in range(0, len(x), batch_size):
        logits = base(x[start : start + batch_size].to(device), bn_state=bn, **use)
        real.append((logits[..., :num_classes] if num_classes else logits).argmax(-1))
        every.append(logits.argmax(-1))
    if not real:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(real), torch.cat(every)


def evaluate_mask(
    base: BaseNetwork,
    mask: TaskMask | TaskWeights,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int | None = None,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> Accuracy:
    """Accuracy of `base` under `mask` or trained weights (and its BN statistics) on (x, y)."""
    real, every = predictions(base, mask, x, num_classes, batch_size=batch_size, device=device)
    y = y.to(real.device)
    keep = y != IGNORE_INDEX  # every example, or the labelled positions of token sequences
    n = max(int(keep.sum()), 1)
    return Accuracy(float(((real == y) & keep).sum()) / n, float(((every == y) & keep).sum()) / n)


@torch.no_grad()
def stacked_accuracy(
    base: BaseNetwork,
    masks: list[torch.Tensor] | None,
    bn_state: dict[str, torch.Tensor],
    batches: TaskBatches,
    num_classes: int | None = None,
    *,
    chunk: int = 1000,
    weights: list[torch.Tensor] | None = None,
) -> list[Accuracy]:
    """Each of K tasks' accuracy under its own masks (or trained `weights`), (K, *shape) per layer, and BN
    statistics, in one pass per chunk."""
    base.eval()
    use = {"masks": [m.float() for m in masks]} if weights is None else {"weights": list(weights)}
    device = next(iter(use.values()))[0].device
    real = torch.zeros(batches.num_tasks, device=device)
    every = torch.zeros(batches.num_tasks, device=device)
    seen = torch.zeros(batches.num_tasks, device=device)
    for index in index_chunks(batches, chunk, device):
        x, y = batches.take(index)
        logits = stacked_forward(base, x, bn_state=bn_state, **use)
        real += stacked_correct(logits, y, num_classes)
        every += stacked_correct(logits, y)
        seen += labelled(y)  # examples, or labelled positions of token sequences
    n = seen.clamp(min=1)
    return [Accuracy(r, a) for r, a in zip((real / n).tolist(), (every / n).tolist(), strict=True)]
