"""A small standalone training loop for weight methods (and mask methods), and their evaluation.

The project's search loop trains a stack of tasks at once; this one trains one task, in the plainest
form, so weight methods can be used and tested on their own: shuffle (seeded), forward with the
method's effective weights (or its masks), cross-entropy, backward, step, `after_step`; `finalize` at
the end. A `MaskMethod` runs through the same loop (the base then multiplies its frozen weights by the
masks), so a supermask and a trained network can be compared with one optimizer code path.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from supermask.core.masks import MaskMethod
from supermask.core.weight_methods import WeightMethod
from supermask.core.weights_record import TaskWeights

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How a task's tensors are trained."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0  # every group's, unless a method's group sets its own (e.g. STR's s)
    schedule: str = "cosine"
    epochs: int = 1
    batch_size: int = 128
    seed: int = 0  # the batch order

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: got {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: got {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.weight_decay < 0:
            raise ValueError(f"lr, epochs and batch_size must be positive and weight_decay >= 0: {self}")


@dataclass
class TrainResult:
    """What training a task gives back: its BN statistics, the method's final metrics, a loss curve."""

    bn_state: dict[str, torch.Tensor]
    steps: int
    seconds: float
    final: dict[str, float] = field(default_factory=dict)
    curve: dict[str, list[float]] = field(default_factory=dict)


def total_steps(config: TrainConfig, num_train: int) -> int:
    """Optimizer steps: epochs over `num_train` samples in batches (the last one may be short)."""
    return config.epochs * math.ceil(num_train / config.batch_size)


def _param_groups(method: torch.nn.Module) -> list[dict]:
    if isinstance(method, WeightMethod):
        return method.param_groups()
    return [{"params": [p for p in method.parameters() if p.requires_grad]}]


def _optimizer(config: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def run_base(base, method, x: torch.Tensor, bn_state: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """Logits of `base` on x under a weight method, a mask method, a TaskWeights record or a list of weights."""
    if isinstance(method, MaskMethod):  # a stack of one task: its masks are (1, *shape)
        return base(x, masks=[m[0] for m in method()], bn_state=bn_state)
    if isinstance(method, TaskWeights):
        return base(
            x, weights=method.tensors(x.device), bn_state=bn_state or method.bn_tensors(x.device) or None
        )
    weights = method() if isinstance(method, torch.nn.Module) else list(method)
    return base(x, weights=weights, bn_state=bn_state)


def train_weights(
    base,
    method: WeightMethod | MaskMethod,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    *,
    bn_state: dict[str, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    log_every: int = 0,
) -> TrainResult:
    """Train `method` on (x, y) over `base`; returns BN statistics, final metrics and (every `log_every` steps) a curve."""
    if tuple(x.shape[1:]) != tuple(base.spec.input_shape):
        raise ValueError(
            f"inputs have shape {tuple(x.shape[1:])} but the base expects {tuple(base.spec.input_shape)}"
        )
    started = time.perf_counter()
    base.to(device).train()
    method.to(device)
    bn_state = base.fresh_bn_state(device) if bn_state is None else bn_state
    steps = total_steps(config, len(x))
    if hasattr(method, "begin"):
        method.begin(steps)
    optimizer = _optimizer(config, _param_groups(method))
    generator = torch.Generator().manual_seed(config.seed)
    per_epoch = math.ceil(len(x) / config.batch_size)
    curve: dict[str, list[float]] = {"step": [], "loss": []}
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        for b in range(per_epoch):
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            if config.schedule == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
            loss = F.cross_entropy(run_base(base, method, x[idx].to(device), bn_state), y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            metrics = method.after_step() or {}
            step += 1
            if log_every and (step % log_every == 0 or step == steps):
                curve["step"].append(step)
                curve["loss"].append(float(loss.detach()))
                for k, v in metrics.items():
                    curve.setdefault(k, []).append(float(v))
    final = method.finalize() or {}
    base.eval()
    return TrainResult(bn_state, steps, time.perf_counter() - started, dict(final), curve)


@torch.no_grad()
def evaluate(
    base,
    method,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bn_state: dict[str, torch.Tensor] | None = None,
    num_classes: int | None = None,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> float:
    """Accuracy of `base` on (x, y) under a weight method, mask method, TaskWeights record or list of weights."""
    was_training = base.training
    base.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = run_base(base, method, x[start : start + batch_size].to(device), bn_state)
        pred = (logits[:, :num_classes] if num_classes else logits).argmax(1)
        correct += int((pred == y[start : start + batch_size].to(device)).sum())
    base.train(was_training)
    return correct / max(len(x), 1)
