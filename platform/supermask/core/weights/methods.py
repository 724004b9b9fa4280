"""What every trained-weight method shares: its spec, its registry, and the stacked base class.

A weight method trains a stack of K tasks' weights, each (K, *layer shape), initialised from the
base's frozen weights (or from a network given, e.g. the previous task's when fine-tuning). Its
`forward()` returns the per-layer EFFECTIVE weights the base runs with (`produces = "weights"`), so
it steps in the very loop that searches masks (core/search/stacked_search.py). Every per-task quantity has a
leading task axis (weights, STR's s as (K, L), pruning masks), and every operation on it is
elementwise or per row, so task k of a stack trains exactly as it would alone.

`sparsity` is always the fraction of weights that are ZERO (1 - density).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from supermask.core.fields import check_fields, check_options, choices, constructor_options
from supermask.core.records.weights import VALUE_DTYPES
from supermask.core.registry import Registry

WEIGHT_METHODS: Registry = Registry("weight method")


@dataclass(frozen=True)
class WeightSpec:
    """How a task's weights are trained and kept: the `weights` section of a task spec that trains weights.

    Whether each task trains its own network from the base's weights or one network is carried
    through the stream is the learner's choice (the spec's `learn`), not this section's.
    """

    method: str = "dense"  # dense, str or magnitude (WEIGHT_METHODS)
    options: dict = field(default_factory=dict, hash=False)  # the method's own, e.g. {"target_sparsity": 0.9}
    dtype: str = field(default="float32", metadata=choices(*VALUE_DTYPES))  # of the stored values


def cubic_sparsity(step: int, total_steps: int, final: float, begin: float = 0.0, end: float = 0.75) -> float:
    """Zhu & Gupta's schedule: 0 before `begin`, final * (1 - (1 - p)^3) in between, `final` from `end` on.

    `begin` and `end` are fractions of `total_steps`; p is the progress from one to the other.
    """
    t0, t1 = round(begin * total_steps), round(end * total_steps)
    if step <= t0:
        return 0.0 if t1 > t0 else float(final)
    if step >= t1:
        return float(final)
    progress = (step - t0) / (t1 - t0)
    return float(final) * (1.0 - (1.0 - progress) ** 3)


def check_fraction(name: str, value: float | None, *, open_hi: bool = False) -> None:
    """ValueError naming `weights.options.<name>` unless value is None or in [0, 1] ([0, 1) with open_hi)."""
    if value is None:
        return
    if not 0.0 <= value <= 1.0 or (open_hi and value >= 1.0):
        allowed = "[0, 1)" if open_hi else "[0, 1]"
        raise ValueError(f"weights.options.{name}: got {value!r}; must be in {allowed}")


def per_task(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (K,) tensor shaped to broadcast against a (K, *layer shape) one."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def stacked_initial(weights: Sequence[torch.Tensor], num_tasks: int, shapes: Sequence[tuple]) -> list:
    """Per-layer (K, *shape) float32 copies: of (K, *shape) tensors as they are, of (*shape) ones for every task."""
    out = []
    for w, shape in zip(weights, shapes, strict=True):
        w = w.detach().float()
        if tuple(w.shape) == tuple(shape):
            w = w.unsqueeze(0).expand(num_tasks, *shape)
        elif tuple(w.shape) != (num_tasks, *shape):
            raise ValueError(
                f"initial weights of shape {tuple(w.shape)} for a layer {tuple(shape)} of {num_tasks} tasks"
            )
        out.append(w.clone().contiguous())
    return out


class WeightMethod(nn.Module):
    """Trainable (K, *shape) weights per layer; subclasses say how they become effective weights and prune.

    Its life: built with the number of optimizer steps training takes, `after_step()` after every
    step (returns (K,) metrics left on the device), `finalize()` once at the end (returns per-task
    lists). `weight_decays()` gives a parameter a decay of its own (None: the optimizer's).
    """

    name = "base"
    produces = "weights"

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Raise ValueError naming an option value the method cannot use (names are checked by the builder)."""

    def __init__(
        self,
        base_weights: Sequence[torch.Tensor],
        num_tasks: int = 1,
        total_steps: int = 1,
        init_weights: Sequence[torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.shapes = [tuple(w.shape) for w in base_weights]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.num_tasks, self.total_steps = int(num_tasks), int(total_steps)
        start = stacked_initial(
            init_weights if init_weights is not None else base_weights, num_tasks, self.shapes
        )
        self.weights = nn.ParameterList([nn.Parameter(w) for w in start])
        self.step = 0  # optimizer steps taken; mirrored in a buffer so that checkpoints carry it
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.long))

    def forward(self) -> list[torch.Tensor]:
        """The effective weights (K, *shape) the base runs with, one per masked layer."""
        return list(self.weights)

    def weight_decays(self) -> list[float | None]:
        """Per parameter (in `parameters()` order): its own weight decay, or None for the optimizer's."""
        return [None for _ in self.parameters()]

    def after_step(self) -> dict[str, torch.Tensor]:
        self.step += 1
        self.steps_taken.fill_(self.step)  # a device write, no host sync
        return {"sparsity": self.sparsity()}

    def finalize(self) -> dict[str, list]:
        return {}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.step = int(self.steps_taken)
        return result

    @torch.no_grad()
    def effective_weights(self) -> list[torch.Tensor]:
        """`forward()` without gradients."""
        return [w.detach() for w in self.forward()]

    @torch.no_grad()
    def layer_zeros(self) -> torch.Tensor:
        """(K, L) count of each task's effective weights that are exactly zero, per layer."""
        return torch.stack([(w == 0).flatten(1).sum(1) for w in self.effective_weights()], dim=1)

    @torch.no_grad()
    def sparsity(self) -> torch.Tensor:
        """(K,) fraction of each task's effective weights that are zero."""
        return self.layer_zeros().sum(1).double() / sum(self.sizes)

    @torch.no_grad()
    def layer_sparsity(self) -> torch.Tensor:
        """(K, L) fraction of each layer's effective weights that are zero, per task."""
        return self.layer_zeros().double() / torch.tensor(
            self.sizes, dtype=torch.float64, device=self.weights[0].device
        )


_BUILT_BY_THE_LOOP = ("base_weights", "num_tasks", "total_steps", "init_weights")


def weight_method_options(name: str) -> dict[str, object]:
    """The options weight method `name` takes in WeightSpec.options, with their defaults."""
    return constructor_options(WEIGHT_METHODS.get(name).__init__, _BUILT_BY_THE_LOOP)


def check_weight_spec(spec: WeightSpec) -> None:
    """Raise ValueError naming the weights field that does not fit: method, option names, types and values."""
    check_fields(spec, "weights.")
    cls = WEIGHT_METHODS.get(spec.method)
    where = f"weight method {spec.method!r}"
    check_options("weights.options", where, spec.options, weight_method_options(spec.method))
    cls.check_options(spec.options)


def build_weight_method(
    spec: WeightSpec,
    base_weights: Sequence[torch.Tensor],
    num_tasks: int = 1,
    total_steps: int = 1,
    init_weights: Sequence[torch.Tensor] | None = None,
) -> WeightMethod:
    """The method `spec` names for K = `num_tasks` tasks training `total_steps` steps.

    Each task starts from `base_weights` (the base's frozen ones), or from `init_weights` ((*shape)
    for every task, or (K, *shape)), e.g. the network the previous task ended with.
    """
    check_weight_spec(spec)
    cls = WEIGHT_METHODS.get(spec.method)
    return cls(base_weights, num_tasks, total_steps, init_weights, **spec.options)
