"""supermask: continual learning with binary supermasks over one frozen, randomly initialised network.

The names users need, importable without Ray:

    from supermask import BaseSpec, build_base, MaskSpec, SearchConfig, search_mask, evaluate_mask
    from supermask import StreamSpec, build_stream, load_spec, Recipe, Workbench, MaskFile
    from supermask import PackedMasks, InferenceConfig, infer_groups, learn_without_ids
    from supermask import WeightSpec, build_weight_method, TaskWeights   # trained weights beside masks

They are loaded on first use, so a process that needs only the store (a shard actor) does not
pay for importing torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "MASK_METHODS": "supermask.core.masks",
    "MaskSpec": "supermask.core.masks",
    "build_mask_method": "supermask.core.masks",
    "layer_densities": "supermask.core.masks",
    "ARCHITECTURES": "supermask.core.bases.networks",
    "BaseNetwork": "supermask.core.bases.networks",
    "BaseSpec": "supermask.core.bases.networks",
    "build_base": "supermask.core.bases.networks",
    "Accuracy": "supermask.core.evaluate",
    "evaluate_mask": "supermask.core.evaluate",
    "InferenceConfig": "supermask.core.inference.one_shot",
    "infer_groups": "supermask.core.inference.one_shot",
    "mean_masks": "supermask.core.inference.one_shot",
    "PackedMasks": "supermask.core.inference.mask_bank",
    "NNsConfig": "supermask.core.inference.nns",
    "learn_without_ids": "supermask.core.inference.nns",
    "TaskMask": "supermask.core.records.packing",
    "pack_masks": "supermask.core.records.packing",
    "unpack_masks": "supermask.core.records.packing",
    "StackedSearch": "supermask.core.search.stacked_search",
    "StackedTensors": "supermask.core.search.batches",
    "SearchConfig": "supermask.core.search.stacked_search",
    "search_mask": "supermask.core.search.stacked_search",
    "STREAMS": "supermask.data",
    "StreamSpec": "supermask.data",
    "DataConfig": "supermask.data",
    "build_stream": "supermask.data",
    "Spec": "supermask.config.spec",
    "SpecError": "supermask.config.schema",
    "load_spec": "supermask.config.spec",
    "Sweep": "supermask.config.sweep",
    "load_sweep": "supermask.config.sweep",
    "Recipe": "supermask.recipes.recipe",
    "Workbench": "supermask.recipes.recipe",
    "MaskFile": "supermask.store.maskfile",
    "WEIGHT_METHODS": "supermask.core.weights",
    "WeightSpec": "supermask.core.weights",
    "build_weight_method": "supermask.core.weights",
    "TaskWeights": "supermask.core.records.weights",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'supermask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
