"""Supermasks: binary masks over a frozen base, made from learnable scores.

Each method is one module (edge-popup's top-k, SupSup's threshold, learned thresholds, neuron
masks); importing this package registers them all in `MASK_METHODS`. A learned mask is kept as a
`TaskMask` (core/records/packing.py), one bit per weight.
"""

from __future__ import annotations

from supermask.core.masks import edge_popup, learned_threshold, neuron, supsup  # noqa: F401  (registration)
from supermask.core.masks.methods import (
    DENSITY_POLICIES,
    MASK_METHODS,
    MaskMethod,
    MaskSpec,
    build_mask_method,
    check_mask_spec,
    init_scores,
    kept_count,
    layer_densities,
    method_options,
)

__all__ = [
    "DENSITY_POLICIES",
    "MASK_METHODS",
    "MaskMethod",
    "MaskSpec",
    "build_mask_method",
    "check_mask_spec",
    "init_scores",
    "kept_count",
    "layer_densities",
    "method_options",
]
