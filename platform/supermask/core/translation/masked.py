"""Translation tasks as supermasks: one frozen random generator (and discriminator) shared by every task.

A task learns a binary mask over the frozen weights of every conv and transposed conv (the spec's
`mask` section: `topk` keeps the top `density` of |score| per layer, edge-popup's way), plus, with
`free_params: affine`, the instance-norm scales and shifts and the few biases, which are kept per
task in float32 (a tiny share of the bits). Many domain pairs then share one base and each costs
about one bit per weight.

The frozen weights are drawn with NumPy from (base_seed, network name, layer index), so any machine
rebuilds them bit for bit; `base_fingerprint` hashes them. A transposed conv's weight is stored
(in, out, kh, kw), so its fan-in is not `prod(shape[1:])` as for a conv: each output pixel of a
stride-s transposed conv sums in * kh * kw / s^2 inputs, and its init is scaled for that.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from supermask.core.bases.networks import init_weight
from supermask.core.masks import MaskSpec, build_mask_method
from supermask.core.translation.generator import maskable_weights


def fan_in(module: nn.Module) -> int:
    """Inputs summed into one output of a conv or transposed conv (what an init is scaled by)."""
    w = module.weight
    if isinstance(module, nn.ConvTranspose2d):
        stride = math.prod(module.stride)
        return max(1, int(w.shape[0] * w.shape[2] * w.shape[3] // stride))
    return int(math.prod(w.shape[1:]))


@torch.no_grad()
def freeze_at_random(net: nn.Module, init: str, seed: int) -> nn.Module:
    """Draw every conv weight from (seed, layer index) with NumPy, zero the biases, and freeze them all.

    Instance-norm scales stay 1 and shifts 0. Nothing is trainable afterwards (`MaskedNetwork` makes
    the free parameters trainable again when a task learns them).
    """
    modules = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for index, m in enumerate(modules):
        shape = tuple(m.weight.shape)
        w = init_weight(shape, init, seed, index)
        # init_weight scales by 1/sqrt(prod(shape[1:])); rescale to the layer's real fan-in.
        w = w * math.sqrt(math.prod(shape[1:]) / fan_in(m))
        m.weight.copy_(torch.from_numpy(w.astype(np.float32)))
        if m.bias is not None:
            m.bias.zero_()
    net.requires_grad_(False)
    return net


def network_fingerprint(nets: dict[str, nn.Module]) -> str:
    """blake2b of frozen networks' names, parameter names, shapes and float32 bytes (computed on the CPU)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(nets):
        for key, p in nets[name].state_dict().items():
            arr = p.detach().to("cpu", torch.float32).contiguous().numpy()
            h.update(json.dumps([name, key, list(arr.shape)]).encode())
            h.update(arr.tobytes())
    return h.hexdigest()


class MaskedNetwork(nn.Module):
    """A frozen network run with one task's mask over its conv weights (and its own free parameters)."""

    def __init__(self, net: nn.Module, mask: MaskSpec, seed: int, free_params: str = "affine") -> None:
        super().__init__()
        self.net = net
        weights = maskable_weights(net)
        self.masked_names = list(weights)
        self.method = build_mask_method(mask, [tuple(w.shape) for w in weights.values()], seed)
        masked = set(self.masked_names)
        self.free_names = [n for n, _ in net.named_parameters() if n not in masked]
        if free_params == "affine":
            for name, p in net.named_parameters():
                p.requires_grad_(name not in masked)
        elif free_params != "none":
            raise ValueError(f"free_params: got {free_params!r}; allowed: affine, none")
        self.free_params = free_params

    def masks(self) -> list[torch.Tensor]:
        """This task's float 0/1 masks, one per masked layer, with straight-through gradients."""
        return [m[0] for m in self.method()]

    def forward(self, x: torch.Tensor, *args, **kwargs):
        params = dict(self.net.named_parameters())
        masked = {n: params[n] * m for n, m in zip(self.masked_names, self.masks(), strict=True)}
        return functional_call(self.net, masked, (x, *args), kwargs)

    @torch.no_grad()
    def hard_masks(self) -> dict[str, np.ndarray]:
        """The binary masks by weight name, as NumPy booleans."""
        return {n: m.bool().cpu().numpy() for n, m in zip(self.masked_names, self.masks(), strict=True)}

    def task_parameters(self) -> dict[str, torch.Tensor]:
        """The parameters a task keeps besides its mask (none with free_params 'none')."""
        if self.free_params == "none":
            return {}
        params = dict(self.net.named_parameters())
        return {n: params[n].detach() for n in self.free_names}

    def apply_to(self, net: nn.Module) -> nn.Module:
        """`net` (a copy of the frozen network) with this task's masks multiplied in and its free parameters."""
        with torch.no_grad():
            params = dict(net.named_parameters())
            for name, mask in zip(self.masked_names, self.masks(), strict=True):
                params[name].mul_(mask)
            for name, value in self.task_parameters().items():
                params[name].copy_(value)
        return net


def mask_density(masks: dict[str, np.ndarray]) -> float:
    """Fraction of all masked weights kept."""
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / max(1, sum(m.size for m in masks.values()))
