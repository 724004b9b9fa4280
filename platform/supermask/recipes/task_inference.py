"""Scenarios GNs and GNu (no Ray here): infer each test batch's mask, then classify with it.

GNs (shared labels): a sample is right when the class predicted under the inferred mask is right.
GNu (unshared labels): the answer is (task, class), right only when both are. The GG accuracy (the
true task's mask) is measured in the same pass, so the cost of not knowing the task is visible.
"""

from __future__ import annotations

import time
from collections import Counter

import torch

from supermask.config.spec import GN_SCENARIOS
from supermask.core.bases.networks import BaseNetwork
from supermask.core.evaluate import predictions
from supermask.core.inference.mask_bank import MaskBank
from supermask.core.inference.one_shot import InferenceConfig, infer_groups, inference_groups, mean_masks
from supermask.recipes.recipe import Workbench
from supermask.recipes.results import InferenceOutcome, JobResult, TaskOutcome


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
    inferred: list[str] | None = None,
) -> InferenceOutcome:
    """Infer the task of (x, y)'s batches (or samples) among the bank's masks and classify with the inferred masks.

    `mask_id` is the id of the task's own mask in the bank (default: `task_id`; None when there is none);
    `inferred` gives each group's task when it was inferred already (with other tasks' groups, in one pass).
    """
    if mask_id == "":
        mask_id = task_id
    started = time.perf_counter()
    fingerprint = fingerprint or base.fingerprint
    groups, spans = inference_groups(x, config, batch_size)
    if inferred is None:
        inferred = infer_groups(base, groups, bank, config, num_classes, fingerprint=fingerprint, mean=mean)
    per_sample = [""] * len(x)
    for tid, span in zip(inferred, spans, strict=True):
        per_sample[span] = [tid] * (span.stop - span.start)
    pred = torch.empty(len(x), dtype=torch.long, device=x.device)
    counts = Counter(per_sample)
    for tid in counts:
        idx = torch.tensor([i for i, t in enumerate(per_sample) if t == tid], device=x.device)
        pred[idx] = predictions(base, bank.get(tid, fingerprint=fingerprint), x[idx], num_classes)[0]
    class_right = pred == y
    gg_correct = 0
    if mask_id is None:  # no mask is the task's own (NNs): only the class counts
        task_right = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    else:
        task_right = torch.tensor([t == mask_id for t in per_sample], dtype=torch.bool, device=x.device)
        own = predictions(base, bank.get(mask_id, fingerprint=fingerprint), x, num_classes)[0]
        gg_correct = int((own == y).sum())
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


TASKS_PER_PASS = 64  # tasks whose test groups are inferred together: one pass over the masks serves them all


def evaluate_gn_tasks(
    bench: Workbench, ts: list[int], bank: MaskBank, mean=None, tasks_per_pass: int = TASKS_PER_PASS
) -> list[InferenceOutcome]:
    """Scenario GNs or GNu (the recipe's) on tasks `ts`' test splits, inferring among every mask in `bank`.

    The test groups of `tasks_per_pass` tasks are inferred in one call, so the masks are read once for
    all of them (the queries go out in chunks of `inference.query_bytes`); each task's test data is
    gathered on the device from the stream's stacked view.
    """
    recipe = bench.recipe
    if recipe.scenario not in GN_SCENARIOS:
        raise ValueError(f"task inference evaluates {' or '.join(GN_SCENARIOS)}, not {recipe.scenario!r}")
    config = recipe.inference
    if mean is None:
        mean, _ = mean_masks(bank, bench.base.fingerprint, device=bench.device)
    out = []
    for i in range(0, len(ts), tasks_per_pass):
        part = [int(t) for t in ts[i : i + tasks_per_pass]]
        started = time.perf_counter()
        batches = bench.stream.stacked(part, "test", bench.device)
        xs, ys = batches.take(torch.arange(batches.size, device=bench.device).expand(len(part), -1))
        groups = [inference_groups(x, config, config.batch_size)[0] for x in xs]
        inferred = infer_groups(
            bench.base, [g for gs in groups for g in gs], bank, config, recipe.num_classes, mean=mean
        )
        shared = (time.perf_counter() - started) / len(part)
        start = 0
        for k, t in enumerate(part):
            outcome = evaluate_inference(
                bench.base,
                bank,
                xs[k],
                ys[k],
                bench.stream.task_id(t),
                config,
                num_classes=recipe.num_classes,
                batch_size=config.batch_size,
                unshared=recipe.scenario == "GNu",
                index=t,
                inferred=inferred[start : start + len(groups[k])],
            )
            outcome.seconds += shared
            start += len(groups[k])
            out.append(outcome)
    return out


def fill_gn_outcomes(
    outcomes: dict[int, TaskOutcome], inferred: list[InferenceOutcome], result: JobResult
) -> None:
    """Copy GN outcomes (in task order) into a job's TaskOutcomes and its JobResult."""
    for o in inferred:
        task = outcomes[o.index]
        task.accuracy, task.gg_accuracy = o.accuracy, o.gg_accuracy
        task.task_inference_accuracy, task.inferred = o.task_inference_accuracy, o.inferred
    samples = sum(o.samples for o in inferred)
    result.task_inference_accuracy = sum(o.task_correct for o in inferred) / samples if samples else None
    result.inference_seconds = sum(o.seconds for o in inferred)
    result.inferences = sum(o.inferences for o in inferred)
