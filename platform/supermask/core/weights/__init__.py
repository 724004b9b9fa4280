"""Trained weights beside supermasks: dense, STR and magnitude pruning, for a stack of K tasks.

A method trains a stack of K tasks in the same loop that searches masks
(core/search/stacked_search.py): build it with `build_weight_method(WeightSpec, base.weights(),
num_tasks, total_steps)`; its `forward()` gives the effective weights, (K, *shape) per layer.
`WeightSpec` is the `weights` section of a task spec; `TaskWeights` is what a task's trained
weights are kept as. Importing the package registers every method.
"""

from __future__ import annotations

from supermask.core.records.weights import TaskWeights
from supermask.core.weights import dense, magnitude  # noqa: F401  (each module registers its method)
from supermask.core.weights import str as _str  # noqa: F401
from supermask.core.weights.methods import (
    WEIGHT_METHODS,
    WeightMethod,
    WeightSpec,
    build_weight_method,
    check_weight_spec,
    cubic_sparsity,
    weight_method_options,
)

__all__ = [
    "WEIGHT_METHODS",
    "TaskWeights",
    "WeightMethod",
    "WeightSpec",
    "build_weight_method",
    "check_weight_spec",
    "cubic_sparsity",
    "weight_method_options",
]
