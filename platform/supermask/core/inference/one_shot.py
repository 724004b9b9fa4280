"""Task inference: which stored mask fits some images, from one gradient over a superposition of masks.

With coefficients alpha over k masks the superposed network uses the weights W_l * sum_i alpha_i M_l^i.
At uniform alpha (the mean mask) one forward and one backward pass of an objective gives G_l, its
gradient with respect to each layer's effective weight W_l * Mbar_l, and then

    -dH/dalpha_i = sum_l <-G_l * W_l, M_l^i>

so every mask is scored by an inner product with one base-sized query D_l = -G_l * W_l, computed where
the masks live (`MaskBank.query_scores`: packed masks unpacked a chunk at a time, never all as floats).
`one_shot` picks the argmax; `binary` keeps the better half, renormalises alpha over it (the mean of
the survivors) and repeats until one mask is left, ceil(log2 k) rounds.

Objectives (per image, averaged over the images of a group):
- H: entropy of the softmax over ALL outputs, superfluous ones included, as SupSup computes it.
- G: logsumexp over all outputs with the gradient flowing only through the superfluous outputs (those
  past the real classes): the mask that keeps them quiet wins. Needs num_outputs > num_classes.

BatchNorm: the superposed pass normalises with the batch statistics of the group's own images (no
task's stored statistics are read or changed); the chosen task's statistics classify afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import functional_call

from supermask.core.bases.networks import BaseNetwork
from supermask.core.fields import check_fields, choices, in_range
from supermask.core.inference.mask_bank import MaskBank
from supermask.core.records.packing import query_matrix

OBJECTIVES = ("H", "G")
METHODS = ("one_shot", "binary")
MODES = ("per_batch", "per_sample")


def entropy(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """H per image: entropy of the softmax over every output."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def superfluous_logsumexp(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """G per image: logsumexp over every output, the gradient reaching only the superfluous ones."""
    if logits.shape[1] <= num_classes:
        raise ValueError(
            f"objective G needs superfluous outputs, but the base has {logits.shape[1]} outputs for "
            f"{num_classes} classes; set base.num_outputs above the classes (SupSup uses 500) or use H"
        )
    real = torch.arange(logits.shape[1], device=logits.device) < num_classes
    return torch.where(real, logits.detach(), logits).logsumexp(1)


OBJECTIVE_FUNCTIONS = {"H": entropy, "G": superfluous_logsumexp}


@dataclass(frozen=True)
class InferenceConfig:
    """How a task is inferred: the `inference` section of a task spec."""

    method: str = field(default="one_shot", metadata=choices(*METHODS))
    objective: str = field(default="H", metadata=choices(*OBJECTIVES))
    # per_batch: one task per test batch, inferred from its first batch_images images; per_sample: one per image
    mode: str = field(default="per_batch", metadata=choices(*MODES))
    batch_images: int = field(default=1, metadata=in_range(1))
    batch_size: int = field(default=128, metadata=in_range(1))  # test images per batch
    chunk: int = field(default=64, metadata=in_range(1))  # packed masks unpacked at a time where they live
    query_bytes: int = field(
        default=64 * 2**20, metadata=in_range(1)
    )  # float32 queries sent to the masks at once

    def __post_init__(self) -> None:
        check_fields(self, "inference.")


def has_batchnorm(base: BaseNetwork) -> bool:
    """Whether the base normalises with BatchNorm (whose statistics are per task)."""
    return bool(base.bn_names)


def mean_masks(
    bank: MaskBank, fingerprint: str | None, ids: Sequence[str] | None = None, device: str = "cpu"
) -> tuple[list[torch.Tensor], int]:
    """The mean of the bank's masks (or of `ids`) per layer, float32, and how many masks it averages."""
    sums, count = bank.mask_sum(fingerprint=fingerprint, ids=ids)
    if count == 0:
        raise ValueError("there are no masks to infer a task from; learn (or store) some tasks first")
    return [torch.as_tensor(s).to(device=device, dtype=torch.float32) / count for s in sums], count


class Superposition:
    """The base at the mean of some masks: computes, per group of images, the query -G_l * W_l."""

    def __init__(self, base: BaseNetwork, mean: list[torch.Tensor], objective: str, num_classes: int) -> None:
        self.base, self.objective, self.num_classes = base, objective, num_classes
        self.weights = base.weights()
        # One leaf per layer, shared by every group: autograd.grad never accumulates into it.
        self.effective = [
            (w * m).detach().requires_grad_(True) for w, m in zip(self.weights, mean, strict=True)
        ]
        self.batchnorm = has_batchnorm(base)

    def direction(self, images: torch.Tensor, out: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """-G_l * W_l per layer (written into `out` when given): its inner product with mask i is -dH/dalpha_i."""
        replaced: dict[str, torch.Tensor] = dict(zip(self.base.masked_names, self.effective, strict=True))
        was_training = self.base.training
        if self.batchnorm:
            replaced.update(self.base.fresh_bn_state(images.device))  # throwaway running buffers
            self.base.train(True)  # batch statistics of the group's own images
        try:
            with torch.enable_grad():
                logits = functional_call(self.base.net, replaced, (images,))
                value = OBJECTIVE_FUNCTIONS[self.objective](logits, self.num_classes).mean()
                grads = torch.autograd.grad(value, self.effective)
        except ValueError as e:
            if "Expected more than 1 value per channel" in str(e):
                raise ValueError(
                    "this base has BatchNorm, whose batch statistics need more than one image per group: "
                    "use mode per_batch with batch_images >= 2"
                ) from e
            raise
        finally:
            if self.batchnorm:
                self.base.train(was_training)
        if out is None:
            return [-(g * w) for g, w in zip(grads, self.weights, strict=True)]
        for o, g, w in zip(out, grads, self.weights, strict=True):
            torch.mul(g, w, out=o)
            o.neg_()
        return out


def superposed_scores(
    base: BaseNetwork,
    groups: Sequence[torch.Tensor],
    bank: MaskBank,
    config: InferenceConfig,
    num_classes: int,
    mean: list[torch.Tensor],
    *,
    fingerprint: str | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[list[str], np.ndarray]:
    """(ids, (k, len(groups)) scores -dH/dalpha_i) of every mask (or `ids`) for each group, at `mean`."""
    superposition = Superposition(base, mean, config.objective, num_classes)
    shapes = [tuple(w.shape) for w in superposition.weights]
    per_call = max(1, config.query_bytes // (4 * sum(int(w.numel()) for w in superposition.weights)))
    on_device = getattr(bank, "accepts_tensors", False)  # queries stay where they are computed
    out_ids: list[str] = []
    columns = []
    for start in range(0, len(groups), per_call):
        part = groups[start : start + per_call]
        if on_device:
            flat, views = _device_queries(len(part), shapes, mean[0].device)
        else:
            flat, views = query_matrix(len(part), shapes)
            views = [torch.from_numpy(v) for v in views]
        for q, images in enumerate(part):
            out = [v[q] for v in views]
            if images.device == out[0].device:
                superposition.direction(images, out)
            else:
                for o, d in zip(out, superposition.direction(images), strict=True):
                    o.copy_(d.to(o.device))
        got_ids, scores = bank.query_scores(flat, config.chunk, fingerprint=fingerprint, ids=ids)
        if out_ids and got_ids != out_ids:
            raise RuntimeError("the bank changed while it was being scored; infer again")
        out_ids = got_ids
        columns.append(scores)
    return out_ids, np.concatenate(columns, axis=1) if columns else np.zeros((0, 0))


def _device_queries(
    count: int, shapes: list[tuple[int, ...]], device
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A zeroed (count, weights) query tensor on `device`, and per-layer (count, *shape) views into it."""
    sizes = [int(np.prod(s)) for s in shapes]
    flat = torch.zeros(count, sum(sizes), device=device)
    return flat, [v.view(count, *s) for v, s in zip(torch.split(flat, sizes, dim=1), shapes, strict=True)]


def _best(ids: list[str], scores: np.ndarray, keep: int) -> list[str]:
    """The `keep` ids with the highest scores (ties to the smaller id)."""
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    return [ids[i] for i in order[:keep]]


def infer_groups(
    base: BaseNetwork,
    groups: Sequence[torch.Tensor],
    bank: MaskBank,
    config: InferenceConfig,
    num_classes: int,
    *,
    fingerprint: str | None = None,
    mean: list[torch.Tensor] | None = None,
) -> list[str]:
    """The task id inferred for each group of images (each group is assumed to come from one task)."""
    if not groups:
        return []
    device = str(groups[0].device)
    if mean is None:
        mean, _ = mean_masks(bank, fingerprint, device=device)
    ids, scores = superposed_scores(base, groups, bank, config, num_classes, mean, fingerprint=fingerprint)
    if config.method == "one_shot" or len(ids) <= 1:
        return [_best(ids, scores[:, q], 1)[0] for q in range(len(groups))]
    out = []
    for q, images in enumerate(groups):
        alive = _best(ids, scores[:, q], math.ceil(len(ids) / 2))
        while len(alive) > 1:
            survivors_mean, _ = mean_masks(bank, fingerprint, alive, device)
            got, s = superposed_scores(
                base, [images], bank, config, num_classes, survivors_mean, fingerprint=fingerprint, ids=alive
            )
            alive = _best(got, s[:, 0], math.ceil(len(alive) / 2))
        out.append(alive[0])
    return out


def inference_groups(
    x: torch.Tensor, config: InferenceConfig, batch_size: int
) -> tuple[list[torch.Tensor], list[slice]]:
    """Cut test inputs into the image groups a task is inferred from, and the samples each group's task covers.

    per_batch: batches of `batch_size`, each inferred from its first `batch_images` images; per_sample:
    every image alone.
    """
    if config.mode == "per_sample":
        return [x[i : i + 1] for i in range(len(x))], [slice(i, i + 1) for i in range(len(x))]
    spans = [slice(s, min(s + batch_size, len(x))) for s in range(0, len(x), batch_size)]
    return [x[s][: config.batch_images] for s in spans], spans
