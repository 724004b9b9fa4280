"""Trained-weight methods beside supermasks, for continual-learning baselines and STR's and edge-popup's claims.

- `dense`: the base's weights, trained as they are (a fine-tuned network, or one network per task).
- `str`: STR on weights with an optional sparsity target (core/str_weights.py).
- `magnitude`: magnitude pruning, gradual or one shot, uniform / Erdos-Renyi / global budgets
  (core/magnitude_pruning.py).

A method trains a stack of K tasks in the same loop that searches masks (core/search.py): build it
with `build_weight_method(WeightSpec, base.weights(), num_tasks, total_steps)`; its `forward()`
gives the effective weights, (K, *shape) per layer. `WeightSpec` is the `weights` section of a task spec.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from supermask.core import magnitude_pruning, str_weights  # noqa: F401  (each module registers its method)
from supermask.core.fields import check_fields
from supermask.core.weight_method_base import WEIGHT_METHODS, WeightMethod, WeightSpec, cubic_sparsity

__all__ = [
    "WEIGHT_METHODS",
    "DenseWeights",
    "WeightMethod",
    "WeightSpec",
    "build_weight_method",
    "check_weight_spec",
    "cubic_sparsity",
    "weight_method_options",
]

_BUILT_BY_THE_LOOP = ("self", "base_weights", "num_tasks", "total_steps", "init_weights")


@WEIGHT_METHODS.register("dense")
class DenseWeights(WeightMethod):
    """The base's weights trained as they are (a fine-tuned or per-task network)."""

    name = "dense"


def weight_method_options(name: str) -> dict[str, object]:
    """The options weight method `name` takes in WeightSpec.options, with their defaults."""
    params = inspect.signature(WEIGHT_METHODS.get(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k not in _BUILT_BY_THE_LOOP}


def check_weight_spec(spec: WeightSpec) -> None:
    """Raise ValueError naming the weights field that does not fit: method, option names, types and values."""
    check_fields(spec, "weights.")
    cls = WEIGHT_METHODS.get(spec.method)
    allowed = weight_method_options(spec.method)
    for key, value in spec.options.items():
        if key not in allowed:
            known = ", ".join(f"{k} (default {v!r})" for k, v in allowed.items()) or "none"
            raise ValueError(
                f"weights.options.{key}: not an option of weight method {spec.method!r}; allowed: {known}"
            )
        default = allowed[key]
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"weights.options.{key}: got {value!r}; must be a string")
        if isinstance(default, int | float) and not isinstance(default, bool) and not numeric:
            raise ValueError(f"weights.options.{key}: got {value!r}; must be a number")
        if isinstance(default, int) and not isinstance(default, bool) and numeric and value != int(value):
            raise ValueError(f"weights.options.{key}: got {value!r}; must be a whole number")
        if default is None and value is not None and not numeric:
            raise ValueError(f"weights.options.{key}: got {value!r}; must be a number or null")
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
