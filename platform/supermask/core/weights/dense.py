"""The `dense` weight method: the base's weights trained as they are.

The trained-weight methods beside supermasks, for continual-learning baselines and STR's and
edge-popup's claims:


- `dense`: the base's weights, trained as they are (a fine-tuned network, or one network per task).
- `str`: STR on weights with an optional sparsity target (core/weights/str.py).
- `magnitude`: magnitude pruning, gradual or one shot, uniform / Erdos-Renyi / global budgets
  (core/weights/magnitude.py).

The methods register themselves by name in `WEIGHT_METHODS` (core/weights/methods.py).
"""

from __future__ import annotations

from supermask.core.weights.methods import WEIGHT_METHODS, WeightMethod


@WEIGHT_METHODS.register("dense")
class DenseWeights(WeightMethod):
    """The base's weights trained as they are (a fine-tuned or per-task network)."""

    name = "dense"
