"""Mask search for one task: learn scores over a frozen base, return the packed mask.

The loop is deliberately plain (nanoGPT-style): shuffle, forward with the current masks, backward
to the scores, step, and hand every step to the hooks (progress, probes, checkpoints).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from supermask.core.fields import check_fields, choices, in_range
from supermask.core.masks import MaskMethod, MaskSpec, build_mask_method
from supermask.core.nets import BaseNetwork
from supermask.core.packing import TaskMask, pack_masks

OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class SearchConfig:
    """How the scores of a task are trained: the `search` section of a task spec."""

    optimizer: str = field(default="sgd", metadata=choices(*OPTIMIZERS))
    lr: float = field(default=0.1, metadata=in_range(0.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=in_range(0.0, 1.0))
    weight_decay: float = field(default=0.0, metadata=in_range(0.0))
    schedule: str = field(default="cosine", metadata=choices(*SCHEDULES))
    epochs: int | None = field(default=1, metadata=in_range(1))
    iterations: int | None = field(default=None, metadata=in_range(1))  # overrides epochs when set
    batch_size: int = field(default=128, metadata=in_range(1))
    seed: int = 0  # task t's scores are drawn from task_seed(seed, t)
    log_every: int = field(default=10, metadata=in_range(1))  # steps between recorded loss/accuracy points


def task_seed(search_seed: int, t: int) -> int:
    """The seed of task t's score init and batch order: distinct per task, reproducible."""
    return search_seed * 100_003 + t


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


def build_optimizer(config: SearchConfig, params) -> torch.optim.Optimizer:
    """The optimizer a search config names, over `params`."""
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


def learning_rate(config: SearchConfig, step: int, steps: int) -> float:
    """The learning rate of step `step` (0-based) of `steps`: constant, or cosine-annealed to 0."""
    if config.schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / max(steps, 1)))


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded shuffle of epoch `epoch`: any step's batch can be recomputed, so a search resumes exactly."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=generator)


class MaskSearch:
    """One task's mask search as a resumable object: step it, checkpoint it, finish it.

    With `shard=(rank, world)` each of `world` workers takes its slice of every (identical) global
    batch, and `grad_sync` (e.g. an all-reduce) runs between backward and the optimizer step: that is
    data-parallel search over one task. `provenance` (a hash of everything that produced the search)
    is kept in checkpoints and in the finished mask; a checkpoint of other settings is refused.
    """

    def __init__(
        self,
        base: BaseNetwork,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        mask: MaskSpec,
        config: SearchConfig,
        *,
        seed: int | None = None,
        task_id: str = "task",
        num_classes: int | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
        grad_sync: Callable[[MaskMethod], None] | None = None,
        provenance: dict | None = None,
    ) -> None:
        if train_x.shape[1:] != torch.Size(base.spec.input_shape):
            raise ValueError(
                f"task {task_id}: inputs have shape {tuple(train_x.shape[1:])} but the base expects "
                f"{tuple(base.spec.input_shape)}; set base.input_shape to match the stream"
            )
        check_fields(config, "search.")
        self.base, self.train_x, self.train_y = base, train_x, train_y
        self.mask_spec, self.config = mask, config
        self.seed = config.seed if seed is None else seed
        self.task_id, self.num_classes, self.device = task_id, num_classes, device
        self.rank, self.world = shard
        self.grad_sync = grad_sync
        self.provenance = dict(provenance or {})
        self.method = build_mask_method(mask, base.layer_shapes, seed=self.seed).to(device)
        self.bn_state = base.fresh_bn_state(device)
        self.optimizer = build_optimizer(config, self.method.parameters())
        self.steps = total_steps(config, len(train_x))
        self.steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
        self.step = 0
        self.seconds = 0.0
        self.resumed_at: list[int] = []
        self.curve: dict[str, list] = {"step": [], "loss": [], "accuracy": []}
        self.extra: dict[str, list] = {}
        self._window = [0.0, 0.0, 0.0]  # loss sum, correct, seen since the last curve point
        self._order: tuple[int, torch.Tensor] | None = None

    def _batch(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, _epoch_order(len(self.train_x), self.seed, epoch))
        size = self.config.batch_size
        idx = self._order[1][position * size : (position + 1) * size]
        return idx[self.rank :: self.world]

    def run_step(self, hooks: list[StepHook] = ()) -> dict[str, float]:
        """Take one optimizer step; returns the step's metrics."""
        started = time.perf_counter()
        self.base.train()
        idx = self._batch(self.step)
        x, y = self.train_x[idx].to(self.device), self.train_y[idx].to(self.device)
        lr = learning_rate(self.config, self.step, self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logits = self.base(x, self.method(), self.bn_state)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_sync is not None:
            self.grad_sync(self.method)
        self.optimizer.step()
        self.step += 1
        metrics = self.method.after_step()
        with torch.no_grad():
            pred = (logits[:, : self.num_classes] if self.num_classes else logits).argmax(1)
            correct = float((pred == y).sum())
        loss_value = float(loss.detach())
        self._window[0] += loss_value * len(y)
        self._window[1] += correct
        self._window[2] += len(y)
        info = StepInfo(
            self.step, self.steps, loss_value, correct / max(len(y), 1), lr, self.method, self.base
        )
        for hook in hooks:
            metrics.update(hook(info) or {})
        if self.step % self.config.log_every == 0 or self.step == self.steps:
            loss_sum, correct_sum, seen = self._window
            self.curve["step"].append(self.step)
            self.curve["loss"].append(loss_sum / max(seen, 1))
            self.curve["accuracy"].append(correct_sum / max(seen, 1))
            for k, v in metrics.items():
                self.extra.setdefault(k, []).append(float(v))
            self._window = [0.0, 0.0, 0.0]
        self.seconds += time.perf_counter() - started
        return metrics

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def run(
        self,
        hooks: list[StepHook] = (),
        *,
        checkpoint_every: int = 0,
        on_checkpoint: Callable[[dict], None] | None = None,
        before_result: Callable[[MaskSearch], None] | None = None,
    ) -> TaskMask:
        """Step until the budget is spent (checkpointing every `checkpoint_every` steps), then finish.

        `before_result` runs once after the last step (e.g. data-parallel workers average their BN statistics).
        """
        while not self.done:
            self.run_step(hooks)
            if checkpoint_every and on_checkpoint and self.step % checkpoint_every == 0 and not self.done:
                on_checkpoint(self.state_dict())
        if before_result is not None:
            before_result(self)
        return self.result()

    def state_dict(self) -> dict:
        """Everything needed to continue this search bit-for-bit in another process (tensors and plain values)."""
        return {
            "task_id": self.task_id,
            "base_fingerprint": self.base.fingerprint,
            "provenance": self.provenance.get("hash", ""),
            "step": self.step,
            "steps": self.steps,
            "seconds": self.seconds,
            "resumed_at": list(self.resumed_at),
            "method": {k: v.detach().cpu().clone() for k, v in self.method.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "bn_state": {k: v.detach().cpu().clone() for k, v in self.bn_state.items()},
            "curve": self.curve,
            "extra": self.extra,
            "window": list(self._window),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` output of a search of the same task, base and settings."""
        if state["base_fingerprint"] != self.base.fingerprint or state["task_id"] != self.task_id:
            raise ValueError(
                f"checkpoint is of task {state['task_id']!r} on base {state['base_fingerprint']}, not "
                f"{self.task_id!r} on {self.base.fingerprint}; delete the stale checkpoint"
            )
        mine = self.provenance.get("hash", "")
        if state.get("provenance", "") != mine:
            raise ValueError(
                f"checkpoint of task {self.task_id!r} was made with other settings (provenance "
                f"{state.get('provenance') or 'unknown'}, this search {mine or 'unknown'}): resuming it would mix "
                "two searches. Delete the checkpoint to start the task again"
            )
        if state["steps"] != self.steps:
            raise ValueError(f"checkpoint budget is {state['steps']} steps, this search has {self.steps}")
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        for k, v in state["bn_state"].items():
            self.bn_state[k].copy_(v)
        self.step, self.seconds = state["step"], state["seconds"]
        self.resumed_at = list(state["resumed_at"]) + [state["step"]]
        self.curve, self.extra, self._window = state["curve"], state["extra"], list(state["window"])

    def current_mask(self, finalize: bool = True) -> TaskMask:
        """The packed mask as the search stands, with BN statistics (finalize: the method's last calibration)."""
        method = self.method
        if finalize:
            method = copy.deepcopy(self.method)  # the live search keeps its own state (e.g. thresholds)
            method.finalize()
        hard = method.hard_masks()
        return TaskMask(
            task_id=self.task_id,
            packed=pack_masks(hard),
            layer_names=list(self.base.masked_names),
            layer_shapes=[tuple(s) for s in self.base.layer_shapes],
            layer_density=[float(m.mean()) for m in hard],
            base_fingerprint=self.base.fingerprint,
            bn_stats={k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.bn_state.items()},
            provenance=dict(self.provenance),
        )

    def result(self) -> TaskMask:
        """Finish the search (final calibration) and return the packed mask with BN statistics and metrics."""
        final = self.method.finalize()
        self.base.eval()
        mask = self.current_mask(finalize=False)
        mask.metrics = {
            "steps": self.steps,
            "seconds": self.seconds,
            "samples_per_second": self.steps * self.config.batch_size / max(self.seconds, 1e-9),
            "train_curve": self.curve,
            "train_accuracy": self.curve["accuracy"][-1] if self.curve["accuracy"] else None,
            "resumed_at_steps": self.resumed_at,
            **{f"curve_{k}": v for k, v in self.extra.items()},
            **final,
        }
        mask.created = time.time()
        return mask


def search_mask(
    base: BaseNetwork,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    mask: MaskSpec,
    config: SearchConfig,
    *,
    task_id: str = "task",
    num_classes: int | None = None,
    hooks: list[StepHook] = (),
    device: torch.device | str = "cpu",
) -> TaskMask:
    """Learn a mask for one task on `base` and return it packed with its BN statistics and metrics."""
    search = MaskSearch(
        base, train_x, train_y, mask, config, task_id=task_id, num_classes=num_classes, device=device
    )
    return search.run(hooks)
