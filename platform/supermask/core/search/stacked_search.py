"""Mask search over a stack of K tasks: one loop, and one task is the case K = 1.

Every task of a stack has its own scores, optimizer state, BatchNorm statistics, inputs, labels and
batch order; they share the one frozen base. Each layer's scores are a (K, *weight shape) tensor, so
a step is one batched product per layer (`torch.func.vmap` over the base with K masked weights) and
one optimizer step over the stacked tensors. Elementwise optimizers (SGD, Adam, RMSprop) treat
every task's slice exactly as they would alone, so a stacked task learns the mask it would learn by
itself (bit for bit on CPU for linear bases; convolutions may reorder sums, see tests/test_search.py).

The loop keeps everything on the device: data for the stack is indexed there, and the loss,
accuracy and method metrics accumulate in device tensors that are read once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from supermask.core.bases.networks import BaseNetwork
from supermask.core.bases.stacked import stacked_forward
from supermask.core.evaluate import check_compatible
from supermask.core.fields import check_fields, choices, in_range
from supermask.core.masks import MaskMethod, MaskSpec, build_mask_method
from supermask.core.masks.bits import pack_bits
from supermask.core.records.packing import TaskMask
from supermask.core.records.weights import TaskWeights, task_weights
from supermask.core.search.batches import StackedTensors, TaskBatches
from supermask.core.search.losses import labelled, stacked_correct, stacked_losses
from supermask.core.search.optimizers import SGD, Adam, Optimizer, RMSprop
from supermask.core.weights import WeightSpec, build_weight_method

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
    seed: int = 0  # task t's scores and batch order come from task_seed(seed, t)


def task_seed(search_seed: int, t: int) -> int:
    """The seed of task t's score init and batch order: distinct per task, reproducible."""
    return search_seed * 100_003 + t


def build_optimizer(config: SearchConfig, params) -> Optimizer:
    """The optimizer a search config names, over `params`."""
    name = config.optimizer
    if name == "sgd":
        return SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if name == "adam":
        return Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if name == "rmsprop":
        return RMSprop(params, lr=config.lr, weight_decay=config.weight_decay)
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


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """A task's seeded shuffle of epoch `epoch`: any step's batch can be recomputed, so a search resumes exactly."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    return torch.randperm(n, generator=generator)


@dataclass
class StepInfo:
    """What a hook sees after each optimizer step (tensors stay on the device: reading them syncs)."""

    step: int
    total_steps: int
    loss: torch.Tensor  # (K,)
    correct: torch.Tensor  # (K,) samples (or labelled positions) right in this step's batch
    lr: float
    method: MaskMethod
    base: BaseNetwork
    seen: torch.Tensor | None = None  # (K,) samples (or labelled positions) in this step's batch


StepHook = Callable[[StepInfo], "dict[str, torch.Tensor] | None"]


def _stack_bn(base: BaseNetwork, k: int, device) -> dict[str, torch.Tensor]:
    return {
        name: v.unsqueeze(0).repeat(k, *([1] * v.dim())) for name, v in base.fresh_bn_state(device).items()
    }


class StackedSearch:
    """K tasks' mask searches stepped together as one resumable object: step it, checkpoint it, finish it.

    With `shard=(rank, world)` each of `world` workers takes its slice of every (identical) global
    batch, and `grad_sync` (e.g. an all-reduce) runs between backward and the optimizer step: that is
    data-parallel search. `provenance` (a hash of everything that produced the search) is kept in
    checkpoints and in the finished masks; a checkpoint of other settings is refused.
    """

    def __init__(
        self,
        base: BaseNetwork,
        data: TaskBatches,
        mask: MaskSpec,
        config: SearchConfig,
        *,
        seeds: Sequence[int],
        task_ids: Sequence[str],
        num_classes: int | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
        grad_sync: Callable[[MaskMethod], None] | None = None,
        provenance: dict | None = None,
        start_from: TaskWeights | None = None,
    ) -> None:
        check_fields(config, "search.")
        if not len(seeds) == len(task_ids) == data.num_tasks:
            raise ValueError(
                f"a stack needs one seed and one task id per task: {len(seeds)} seeds, {len(task_ids)} ids, "
                f"{data.num_tasks} tasks of data"
            )
        self.base, self.data, self.mask_spec, self.config = base, data, mask, config
        self.seeds, self.task_ids = [int(s) for s in seeds], list(task_ids)
        self.num_classes, self.device = num_classes, device
        self.rank, self.world = shard
        self.grad_sync = grad_sync
        self.provenance = dict(provenance or {})
        self.steps = total_steps(config, data.size)
        self.steps_per_epoch = math.ceil(data.size / config.batch_size)
        if isinstance(mask, WeightSpec):  # trained weights, from the base's or `start_from`'s, in this loop
            init = None if start_from is None else start_from.tensors()
            method = build_weight_method(mask, base.weights(), len(self.seeds), self.steps, init)
        elif start_from is not None:
            raise ValueError("start_from is for weight methods; a mask search never changes the base")
        else:
            method = build_mask_method(mask, base.layer_shapes, self.seeds)
        self.method = method.to(device)
        self.bn_state = _stack_bn(base, len(self.seeds), device)
        if (
            start_from is not None
        ):  # fine-tuning: the network and its BN statistics where the last task left them
            check_compatible(base, start_from)
            for name, value in start_from.bn_tensors(device).items():
                self.bn_state[name].copy_(value.expand_as(self.bn_state[name]))
        self.optimizer = build_optimizer(config, self.method.parameters())
        for param, decay in zip(
            self.method.parameters(), getattr(self.method, "weight_decays", list)(), strict=False
        ):
            if decay is not None:
                self.optimizer.set_weight_decay(param, decay)
        self.step = 0
        self.seconds = 0.0
        self.resumed_at: list[int] = []
        self.curve: dict[str, list] = {"step": [], "loss": [], "accuracy": []}  # per epoch, (K,) values
        self.extra: dict[str, list] = {}
        self._window = torch.zeros(3, len(self.seeds), device=device)  # loss sum, correct, seen
        self._metrics: dict[str, torch.Tensor] = {}
        self._order: tuple[int, torch.Tensor] | None = None

    @property
    def num_tasks(self) -> int:
        return len(self.seeds)

    def _batch(self, step: int) -> torch.Tensor:
        """(K, B) example indices of step `step`: each task's own seeded shuffle, this worker's slice."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            order = torch.stack([epoch_order(self.data.size, s, epoch) for s in self.seeds])
            self._order = (epoch, order.to(self.device))
        size = self.config.batch_size
        return self._order[1][:, position * size : (position + 1) * size][:, self.rank :: self.world]

    def run_step(self, hooks: Sequence[StepHook] = ()) -> None:
        """Take one optimizer step for every task of the stack."""
        started = time.perf_counter()
        self.base.train()
        x, y = self.data.take(self._batch(self.step))
        lr = learning_rate(self.config, self.step, self.steps)
        self.optimizer.lr = lr
        # A method produces per-task masks over the frozen weights, or (trained methods) the weights themselves.
        logits = stacked_forward(
            self.base, x, bn_state=self.bn_state, **{self.method.produces: self.method()}
        )
        per_task = stacked_losses(logits, y)  # (K,): over examples, or over labelled positions
        self.optimizer.zero_grad()
        per_task.sum().backward()  # tasks share no parameter: each gets exactly its own gradient
        if self.grad_sync is not None:
            self.grad_sync(self.method)
        self.optimizer.step()
        self.step += 1
        metrics = self.method.after_step()
        with torch.no_grad():
            correct, seen = stacked_correct(logits, y, self.num_classes), labelled(y)
            self._window += torch.stack([per_task.detach() * seen, correct, seen])
        info = StepInfo(self.step, self.steps, per_task.detach(), correct, lr, self.method, self.base, seen)
        for hook in hooks:
            metrics.update(hook(info) or {})
        self._metrics = metrics
        if self.step % self.steps_per_epoch == 0 or self.step == self.steps:
            self._record()
        self.seconds += time.perf_counter() - started

    def _record(self) -> None:
        """Read the epoch's device-side sums (the one host sync of an epoch) into the curve."""
        loss_sum, correct, seen = self._window.cpu().unbind(0)
        seen = seen.clamp(min=1)
        self.curve["step"].append(self.step)
        self.curve["loss"].append((loss_sum / seen).tolist())
        self.curve["accuracy"].append((correct / seen).tolist())
        for k, v in self._metrics.items():
            self.extra.setdefault(k, []).append(torch.as_tensor(v).detach().cpu().reshape(-1).tolist())
        self._window.zero_()

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def run(
        self,
        hooks: Sequence[StepHook] = (),
        *,
        should_checkpoint: Callable[[StackedSearch], bool] | None = None,
        on_checkpoint: Callable[[dict], None] | None = None,
        before_result: Callable[[StackedSearch], None] | None = None,
    ) -> list[TaskMask]:
        """Step until the budget is spent, checkpointing when `should_checkpoint` says so, then finish.

        `before_result` runs once after the last step (e.g. data-parallel workers average their BN statistics).
        """
        while not self.done:
            self.run_step(hooks)
            if on_checkpoint and should_checkpoint and not self.done and should_checkpoint(self):
                on_checkpoint(self.state_dict())
        if before_result is not None:
            before_result(self)
        return self.results()

    def state_dict(self) -> dict:
        """Everything needed to continue the stack bit for bit in another process (tensors and plain values)."""
        return {
            "task_ids": list(self.task_ids),
            "base_fingerprint": self.base.fingerprint,
            "provenance": dict(self.provenance),
            "step": self.step,
            "steps": self.steps,
            "seconds": self.seconds,
            "resumed_at": list(self.resumed_at),
            "method": {k: v.detach().cpu().clone() for k, v in self.method.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "bn_state": {k: v.detach().cpu().clone() for k, v in self.bn_state.items()},
            "curve": self.curve,
            "extra": self.extra,
            "window": self._window.cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` output of a search of the same tasks, base and settings."""
        if state["base_fingerprint"] != self.base.fingerprint or list(state["task_ids"]) != self.task_ids:
            raise ValueError(
                f"checkpoint is of tasks {list(state['task_ids'])[:4]}... on base {state['base_fingerprint']}, not "
                f"{self.task_ids[:4]}... on {self.base.fingerprint}; delete the stale checkpoint"
            )
        mine, theirs = self.provenance.get("hash", ""), (state.get("provenance") or {}).get("hash", "")
        if theirs != mine:
            raise ValueError(
                f"checkpoint of tasks {self.task_ids[:4]}... was made with other settings (provenance "
                f"{theirs or 'unknown'}, this search {mine or 'unknown'}): resuming it would mix "
                "two searches. Delete the checkpoint to start those tasks again"
            )
        if state["steps"] != self.steps:
            raise ValueError(f"checkpoint budget is {state['steps']} steps, this search has {self.steps}")
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        for k, v in state["bn_state"].items():
            self.bn_state[k].copy_(v)
        self.step, self.seconds = state["step"], state["seconds"]
        self.resumed_at = list(state["resumed_at"]) + [state["step"]]
        self.curve, self.extra = state["curve"], state["extra"]
        self._window.copy_(state["window"])

    @torch.no_grad()
    def packed_masks(self) -> tuple[np.ndarray, list[list[float]]]:
        """The masks as they stand: packed bits (K, bytes) uint8 and per-task layer densities."""
        hard = [m.flatten(1) for m in self.method.hard_masks()]
        layer_density = torch.stack([m.float().mean(1) for m in hard], dim=1).cpu().tolist()
        return pack_bits(torch.cat(hard, dim=1)).cpu().numpy(), layer_density

    def _task_masks(self, packed: np.ndarray, layer_density: list[list[float]]) -> list[TaskMask]:
        bn = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.bn_state.items()}
        return [
            TaskMask(
                task_id=tid,
                packed=packed[k].copy(),
                layer_names=list(self.base.masked_names),
                layer_shapes=[tuple(s) for s in self.base.layer_shapes],
                layer_density=layer_density[k],
                base_fingerprint=self.base.fingerprint,
                bn_stats={name: v[k].copy() for name, v in bn.items()},
                provenance=dict(self.provenance),
            )
            for k, tid in enumerate(self.task_ids)
        ]

    def _records(self) -> list[TaskMask] | list[TaskWeights]:
        """Each task's record as the method stands: packed masks (neuron masks too, as the row masks they
        stand for), or trained weights (`produces`)."""
        if self.method.produces != "weights":
            return self._task_masks(*self.packed_masks())
        weights = self.method.effective_weights()
        dtype = self.mask_spec.dtype
        return [
            task_weights(
                tid,
                self.mask_spec.method,
                self.base,
                [w[k] for w in weights],
                {name: v[k] for name, v in self.bn_state.items()},
                dtype=dtype,
                provenance=self.provenance,
            )
            for k, tid in enumerate(self.task_ids)
        ]

    def current_masks(self) -> list[TaskMask] | list[TaskWeights]:
        """The records the search would return if it ended now (the method's final calibration on a copy):
        masks, or a weight method's TaskWeights."""
        import copy

        live = self.method
        self.method = copy.deepcopy(live)
        try:
            self.method.finalize()
            return self._records()
        finally:
            self.method = live

    def results(self) -> list[TaskMask] | list[TaskWeights]:
        """Finish the search (final calibration) and return each task's record (packed mask, or trained
        weights for a weight method) with BN statistics and metrics."""
        final = self.method.finalize()
        self.base.eval()
        masks = self._records()
        share = self.seconds / self.num_tasks
        for k, mask in enumerate(masks):
            mask.metrics = {
                "steps": self.steps,
                "seconds": share,  # the stack's time, split evenly over its tasks
                "stack_seconds": self.seconds,
                "stacked_tasks": self.num_tasks,
                "samples_per_second": self.steps
                * self.config.batch_size
                * self.num_tasks
                / max(self.seconds, 1e-9),
                "train_curve": {
                    "step": list(self.curve["step"]),
                    "loss": [row[k] for row in self.curve["loss"]],
                    "accuracy": [row[k] for row in self.curve["accuracy"]],
                },
                "train_accuracy": self.curve["accuracy"][-1][k] if self.curve["accuracy"] else None,
                "resumed_at_steps": list(self.resumed_at),
                **{f"curve_{name}": [row[k] for row in rows] for name, rows in self.extra.items()},
                **{name: values[k] for name, values in final.items()},
            }
            mask.created = time.time()
        return masks


def search_mask(
    base: BaseNetwork,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    mask: MaskSpec,
    config: SearchConfig,
    *,
    task_id: str = "task",
    num_classes: int | None = None,
    hooks: Sequence[StepHook] = (),
    device: torch.device | str = "cpu",
) -> TaskMask:
    """Learn one task's mask on `base` (a stack of one) and return it packed with its BN statistics and metrics."""
    if train_x.shape[1:] != torch.Size(base.spec.input_shape):
        raise ValueError(
            f"task {task_id}: inputs have shape {tuple(train_x.shape[1:])} but the base expects "
            f"{tuple(base.spec.input_shape)}; set base.input_shape to match the stream"
        )
    data = StackedTensors.of([train_x], [train_y], device)
    search = StackedSearch(
        base,
        data,
        mask,
        config,
        seeds=[config.seed],
        task_ids=[task_id],
        num_classes=num_classes,
        device=device,
    )
    return search.run(hooks)[0]
