"""Scenarios GNs and GNu for one task (no Ray here): infer each test batch's mask, then classify with it.

GNs (shared labels): a sample is right when the class predicted under the inferred mask is right.
GNu (unshared labels): the answer is (task, class), right only when both are. The GG accuracy (the
true task's mask) is measured in the same pass, so the cost of not knowing the task is visible.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from supermask.core.inference import InferenceConfig, infer_groups, inference_groups, mean_masks
from supermask.core.mask_bank import MaskBank
from supermask.core.nets import BaseNetwork
from supermask.core.packing import TaskMask
from supermask.core.search import bn_tensors, check_compatible, mask_tensors
from supermask.learn import make_base, make_stream
from supermask.spec import Spec

GN_SCENARIOS = ("GNs", "GNu")


@dataclass
class InferenceOutcome:
    """Task inference and classification counts of one task's test samples."""

    index: int
    task_id: str
    samples: int = 0
    task_correct: int = 0  # samples whose inferred task is their own
    correct: int = 0  # samples right in the scenario (GNs: class; GNu: task and class)
    gg_correct: int = 0  # samples right with their own task's mask
    inferences: int = 0  # groups whose task was inferred
    inferred: dict[str, int] = field(default_factory=dict)  # inferred task id -> samples
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.samples, 1)

    @property
    def task_inference_accuracy(self) -> float:
        return self.task_correct / max(self.samples, 1)

    @property
    def gg_accuracy(self) -> float:
        return self.gg_correct / max(self.samples, 1)


def make_inference_config(spec: Spec) -> InferenceConfig:
    """The task-inference settings of a spec."""
    i = spec.inference
    return InferenceConfig(
        method=i.method, objective=i.objective, mode=i.mode, batch_images=i.batch_images, chunk=i.chunk
    )


@torch.no_grad()
def predict(
    base: BaseNetwork, mask: TaskMask, x: torch.Tensor, num_classes: int, batch_size: int = 1000
) -> torch.Tensor:
    """Classes predicted for x under one task's mask and BN statistics (among the real classes)."""
    check_compatible(base, mask)
    base.eval()
    device = x.device
    masks, bn = mask_tensors(mask, device), bn_tensors(mask, device)
    out = [
        base(x[s : s + batch_size], masks, bn)[:, :num_classes].argmax(1)
        for s in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=device)


def evaluate_inference(
    base: BaseNetwork,
    bank: MaskBank,
    x: torch.Tensor,
    y: torch.Tensor,
    task_id: str,
    config: InferenceConfig,
    *,
    num_classes: int,
    batch_size: int,
    unshared: bool,
    index: int = 0,
    fingerprint: str | None = None,
    mean: list[torch.Tensor] | None = None,
    mask_id: str | None = "",
) -> InferenceOutcome:
    """Infer the task of (x, y)'s batches (or samples) among the bank's masks and classify with the inferred masks.

    `mask_id` is the id of the task's own mask in the bank (default: `task_id`; None when there is none).
    """
    if mask_id == "":
        mask_id = task_id
    started = time.perf_counter()
    fingerprint = fingerprint or base.fingerprint
    groups, spans = inference_groups(x, config, batch_size)
    inferred = infer_groups(base, groups, bank, config, num_classes, fingerprint=fingerprint, mean=mean)
    per_sample = [""] * len(x)
    for tid, span in zip(inferred, spans, strict=True):
        per_sample[span] = [tid] * (span.stop - span.start)
    pred = torch.empty(len(x), dtype=torch.long, device=x.device)
    counts = Counter(per_sample)
    for tid in counts:
        idx = torch.tensor([i for i, t in enumerate(per_sample) if t == tid], device=x.device)
        pred[idx] = predict(base, bank.get(tid, fingerprint=fingerprint), x[idx], num_classes)
    class_right = pred == y
    gg_correct = 0
    if mask_id is None:  # no mask is the task's own (NNs): only the class counts
        task_right = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    else:
        task_right = torch.tensor([t == mask_id for t in per_sample], dtype=torch.bool, device=x.device)
        gg_correct = int(
            (predict(base, bank.get(mask_id, fingerprint=fingerprint), x, num_classes) == y).sum()
        )
    right = class_right & task_right if unshared else class_right
    return InferenceOutcome(
        index=index,
        task_id=task_id,
        samples=len(x),
        task_correct=int(task_right.sum()),
        correct=int(right.sum()),
        gg_correct=gg_correct,
        inferences=len(groups),
        inferred=dict(counts.most_common()),
        seconds=time.perf_counter() - started,
    )


def evaluate_gn_task(spec: Spec, t: int, bank: MaskBank, device: str = "cpu") -> InferenceOutcome:
    """Scenario GNs or GNu (the spec's) on task t's test split, inferring among every mask in `bank`."""
    if spec.run.scenario not in GN_SCENARIOS:
        raise ValueError(f"task inference evaluates {' or '.join(GN_SCENARIOS)}, not {spec.run.scenario!r}")
    stream = make_stream(spec)
    task = stream.task(t)
    base = make_base(spec, stream, device)
    config = make_inference_config(spec)
    mean, _ = mean_masks(bank, base.fingerprint, device=device)
    return evaluate_inference(
        base,
        bank,
        task.test_x.to(device),
        task.test_y.to(device),
        task.task_id,
        config,
        num_classes=stream.num_classes,
        batch_size=spec.inference.batch_size,
        unshared=spec.run.scenario == "GNu",
        index=t,
        mean=mean,
    )
