"""Mask search for one task: learn scores over a frozen base, return the packed mask.

The loop is deliberately plain (nanoGPT-style): shuffle, forward with the current masks, backward
to the scores, step, and hand every step to the hooks (progress, probes, checkpoints).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from supermask.core.masks import MaskMethod, build_mask_method
from supermask.core.nets import BaseNetwork
from supermask.core.packing import TaskMask, pack_masks

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("cosine", "constant")


@dataclass
class SearchConfig:
    """How one task's mask is searched for."""

    method: str = "topk"
    density: float = 0.5
    method_options: dict = field(default_factory=dict)  # e.g. {"policy": "erdos_renyi"}
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    epochs: int | None = 1
    iterations: int | None = None  # overrides epochs when set
    batch_size: int = 128
    seed: int = 0
    log_every: int = 10  # steps between recorded loss/accuracy points


@dataclass
class StepInfo:
    """What a hook sees after each optimizer step."""

    step: int
    total_steps: int
    loss: float
    accuracy: float
    lr: float
    method: MaskMethod
    base: BaseNetwork


StepHook = Callable[[StepInfo], "dict[str, float] | None"]


def _optimizer(config: SearchConfig, params) -> torch.optim.Optimizer:
    name = config.optimizer
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def total_steps(config: SearchConfig, num_train: int) -> int:
    """Optimizer steps the search takes: `iterations`, or epochs over `num_train` samples."""
    if config.iterations is not None:
        return int(config.iterations)
    return int(config.epochs or 1) * math.ceil(num_train / config.batch_size)


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """Yield index batches from seeded per-epoch shuffles until `steps` batches are out."""
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if done == steps:
                return
            yield perm[start : start + batch_size]
            done += 1


def search_mask(
    base: BaseNetwork,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: SearchConfig,
    *,
    task_id: str = "task",
    num_classes: int | None = None,
    hooks: list[StepHook] = (),
    device: torch.device | str = "cpu",
) -> TaskMask:
    """Learn a mask for one task on `base` and return it packed with its BN statistics and metrics."""
    if train_x.shape[1:] != torch.Size(base.spec.input_shape):
        raise ValueError(
            f"task {task_id}: inputs have shape {tuple(train_x.shape[1:])} but the base expects "
            f"{tuple(base.spec.input_shape)}; set base.input_shape to match the stream"
        )
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; known: {', '.join(SCHEDULES)}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    method = build_mask_method(
        config.method, base.layer_shapes, config.density, seed=config.seed, **config.method_options
    ).to(device)
    bn_state = base.fresh_bn_state(device)
    optimizer = _optimizer(config, method.parameters())
    steps = total_steps(config, len(train_x))
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        if config.schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    )
    generator = torch.Generator().manual_seed(config.seed)
    base.train()
    curve: dict[str, list] = {"step": [], "loss": [], "accuracy": []}
    extra: dict[str, list] = {}
    run_loss = run_correct = run_seen = 0.0
    for step, idx in enumerate(_batches(len(train_x), config.batch_size, steps, generator), start=1):
        x, y = train_x[idx].to(device), train_y[idx].to(device)
        logits = base(x, method(), bn_state)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step_metrics = method.after_step()
        with torch.no_grad():
            pred = (logits[:, :num_classes] if num_classes else logits).argmax(1)
            run_correct += float((pred == y).sum())
        run_loss += float(loss.detach()) * len(y)
        run_seen += len(y)
        info = StepInfo(
            step,
            steps,
            float(loss.detach()),
            float((pred == y).float().mean()),
            schedule.get_last_lr()[0],
            method,
            base,
        )
        for hook in hooks:
            step_metrics.update(hook(info) or {})
        if step % config.log_every == 0 or step == steps:
            curve["step"].append(step)
            curve["loss"].append(run_loss / run_seen)
            curve["accuracy"].append(run_correct / run_seen)
            for k, v in step_metrics.items():
                extra.setdefault(k, []).append(float(v))
            run_loss = run_correct = run_seen = 0.0
    final = method.finalize()
    base.eval()
    hard = method.hard_masks()
    seconds = time.perf_counter() - started
    metrics = {
        "steps": steps,
        "seconds": seconds,
        "samples_per_second": steps * config.batch_size / max(seconds, 1e-9),
        "train_curve": curve,
        "train_accuracy": curve["accuracy"][-1] if curve["accuracy"] else None,
        **{f"curve_{k}": v for k, v in extra.items()},
        **final,
    }
    return TaskMask(
        task_id=task_id,
        packed=pack_masks(hard),
        layer_names=list(base.masked_names),
        layer_shapes=[tuple(s) for s in base.layer_shapes],
        layer_density=[float(m.mean()) for m in hard],
        base_fingerprint=base.fingerprint,
        bn_stats={k: v.detach().cpu().numpy().astype(np.float32) for k, v in bn_state.items()},
        metrics=metrics,
        created=time.time(),
    )


def mask_tensors(mask: TaskMask, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """A stored mask as float32 0/1 tensors, one per layer."""
    return [torch.from_numpy(m.astype(np.float32)).to(device) for m in mask.masks()]


def bn_tensors(mask: TaskMask, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(device) for k, v in mask.bn_stats.items()}


def check_compatible(base: BaseNetwork, mask: TaskMask) -> None:
    """Raise if `mask` was learned on another base than `base`."""
    if mask.base_fingerprint != base.fingerprint:
        raise ValueError(
            f"mask {mask.task_id!r} was learned on base {mask.base_fingerprint}, but this base is "
            f"{base.fingerprint} ({base.spec.arch}, seed {base.spec.seed}, init {base.spec.init}); "
            "rebuild the base with the spec the mask was learned on"
        )


@torch.no_grad()
def evaluate_mask(
    base: BaseNetwork,
    mask: TaskMask,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int | None = None,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> float:
    """Accuracy of `base` under `mask` (and its BN statistics) on (x, y), predicting among the real classes."""
    check_compatible(base, mask)
    base.eval()
    masks, bn = mask_tensors(mask, device), bn_tensors(mask, device)
    correct = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        logits = base(xb, masks, bn)
        pred = (logits[:, :num_classes] if num_classes else logits).argmax(1)
        correct += int((pred == yb).sum())
    return correct / max(len(x), 1)
