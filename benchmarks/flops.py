"""Multiply-adds per inference of a base's masked layers, dense and at given per-layer sparsity.

As STR (and the pruning literature it compares with) counts them: a layer costs one multiply-add per
weight per output position (1 for a linear layer, H_out * W_out for a convolution), and a sparse
layer only pays for its nonzero weights. BatchNorm, activations and pooling are not counted; "FLOPs"
in those papers means these multiply-adds (ResNet-50's 4.1 GFLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FlopCount:
    """Multiply-adds for one input, per masked layer and in total, dense and sparse."""

    layer_names: list[str]
    dense_per_layer: list[int]
    sparse_per_layer: list[int]

    @property
    def dense(self) -> int:
        return sum(self.dense_per_layer)

    @property
    def sparse(self) -> int:
        return sum(self.sparse_per_layer)

    @property
    def fraction(self) -> float:
        """Sparse over dense multiply-adds."""
        return self.sparse / max(self.dense, 1)

    def to_dict(self) -> dict:
        return {
            "layer_names": list(self.layer_names),
            "dense_per_layer": list(self.dense_per_layer),
            "sparse_per_layer": list(self.sparse_per_layer),
            "dense": self.dense,
            "sparse": self.sparse,
            "fraction": self.fraction,
        }


@torch.no_grad()
def output_positions(base) -> list[int]:
    """Output positions per masked layer for one input: 1 for a linear layer, H_out * W_out for a conv."""
    modules = dict(base.net.named_modules())
    positions: dict[str, int] = {}
    hooks = []
    for name in base.masked_names:
        module_name = name.rsplit(".", 1)[0]
        module = modules[module_name]

        def record(mod, inputs, out, key=module_name):
            channels = out.shape[1]
            positions[key] = int(out[0].numel() // channels) if isinstance(mod, nn.Conv2d) else 1

        hooks.append(module.register_forward_hook(record))
    try:
        was_training = base.training
        base.eval()
        device = next(iter(base.weights())).device
        base(torch.zeros((1, *base.spec.input_shape), device=device))
        base.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return [positions[n.rsplit(".", 1)[0]] for n in base.masked_names]


def inference_flops(base, layer_density: list[float] | None = None) -> FlopCount:
    """Multiply-adds of one inference on `base`, dense and with each layer keeping `layer_density` of its weights."""
    sizes = [int(torch.Size(s).numel()) for s in base.layer_shapes]
    if layer_density is None:
        layer_density = [1.0] * len(sizes)
    if len(layer_density) != len(sizes):
        raise ValueError(f"got {len(layer_density)} layer densities for {len(sizes)} masked layers")
    positions = output_positions(base)
    dense = [n * p for n, p in zip(sizes, positions, strict=True)]
    sparse = [int(round(n * d)) * p for n, d, p in zip(sizes, layer_density, positions, strict=True)]
    return FlopCount(list(base.masked_names), dense, sparse)


def weights_flops(base, weights: list[torch.Tensor]) -> FlopCount:
    """Multiply-adds of one inference on `base` running these effective weights (zeros cost nothing)."""
    density = [float((w != 0).sum()) / w.numel() for w in weights]
    return inference_flops(base, density)
