"""Frozen base networks: a registry of architectures, deterministic inits and a fingerprint.

A base is rebuilt bit-for-bit from `BaseSpec` (arch, seed, init, input shape, outputs) on any
machine: weights are drawn on the CPU by NumPy from a seed per layer, so they do not depend on
the device, the thread count or torch's RNG. Weights are never trained; a task is a mask over
them. Masks are applied with `torch.func.functional_call`, so the modules here stay plain
`nn.Linear`/`nn.Conv2d` and the same base serves any number of tasks.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from supermask.core.bases.transformer import transformer
from supermask.core.fields import (
    check_fields,
    check_options,
    choices,
    constructor_options,
    in_range,
    resolved,
)
from supermask.core.registry import Registry

ARCHITECTURES: Registry = Registry("architecture")
INITS = ("signed_constant", "kaiming_normal", "kaiming_uniform")


@dataclass(frozen=True)
class BaseSpec:
    """Everything that determines a base network: its architecture, weights and outputs.

    `input_shape` comes from the stream and `num_outputs` defaults to the stream's classes; a spec
    leaves them unset and resolving it fills them in. `options` are the architecture's own keyword
    arguments (e.g. {"widths": [64, 64]} for mlp, {"nf": 20} for resnet18).
    """

    arch: str = "fc1024"
    seed: int = 0
    init: str = field(default="signed_constant", metadata=choices(*INITS))
    num_outputs: int | None = field(default=None, metadata=in_range(1))  # None: the stream's classes
    batchnorm: bool | None = None  # None: the architecture's default
    options: dict = field(default_factory=dict, hash=False)
    input_shape: tuple[int, ...] | None = field(default=None, metadata=resolved())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = None if self.input_shape is None else list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BaseSpec:
        d = dict(d)
        if d.get("input_shape") is not None:
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)


def _norm1d(n: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm1d(n, affine=False) if batchnorm else nn.Identity()


def _norm2d(n: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(n, affine=False) if batchnorm else nn.Identity()


def _mlp(sizes: list[int], num_outputs: int, input_shape: tuple[int, ...], batchnorm: bool) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    prev = int(np.prod(input_shape))
    for width in sizes:
        layers += [nn.Linear(prev, width, bias=False), _norm1d(width, batchnorm), nn.ReLU()]
        prev = width
    layers.append(nn.Linear(prev, num_outputs, bias=False))
    return nn.Sequential(*layers)


def _require_image(arch: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"{arch} needs image input (channels, height, width), got input_shape {input_shape}; "
            "use an MLP (fc1024, lenet300) for flat inputs"
        )
    return input_shape  # type: ignore[return-value]


@ARCHITECTURES.register("fc1024")
def fc1024(input_shape, num_outputs, batchnorm=False):
    """SupSup's MLP: in-1024-1024-out."""
    return _mlp([1024, 1024], num_outputs, input_shape, bool(batchnorm))


@ARCHITECTURES.register("lenet300")
def lenet300(input_shape, num_outputs, batchnorm=False):
    """LeNet-300-100: in-300-100-out."""
    return _mlp([300, 100], num_outputs, input_shape, bool(batchnorm))


@ARCHITECTURES.register("mlp")
def mlp(input_shape, num_outputs, batchnorm=False, widths=(64, 64)):
    """A small MLP of configurable widths, for tests and toy streams."""
    return _mlp(list(widths), num_outputs, input_shape, bool(batchnorm))


def _conv_net(stages: list[list[int]], input_shape, num_outputs, batchnorm: bool) -> nn.Module:
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for stage in stages:
        for width in stage:
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), _norm2d(width, batchnorm), nn.ReLU()]
            c = width
        layers.append(nn.MaxPool2d(2))
        h, w = h // 2, w // 2
    layers += [nn.Flatten()]
    prev = c * h * w
    for width in (256, 256):
        layers += [nn.Linear(prev, width, bias=False), _norm1d(width, batchnorm), nn.ReLU()]
        prev = width
    layers.append(nn.Linear(prev, num_outputs, bias=False))
    return nn.Sequential(*layers)


@ARCHITECTURES.register("conv4")
def conv4(input_shape, num_outputs, batchnorm=False):
    """edge-popup's Conv4: 64-64-pool-128-128-pool, then 256-256-out."""
    return _conv_net(
        [[64, 64], [128, 128]], _require_image("conv4", input_shape), num_outputs, bool(batchnorm)
    )


@ARCHITECTURES.register("conv6")
def conv6(input_shape, num_outputs, batchnorm=False):
    """edge-popup's Conv6: three stages of two convs (64, 128, 256), then 256-256-out."""
    stages = [[64, 64], [128, 128], [256, 256]]
    return _conv_net(stages, _require_image("conv6", input_shape), num_outputs, bool(batchnorm))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, batchnorm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _norm2d(c_out, batchnorm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _norm2d(c_out, batchnorm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm2d(c_out, batchnorm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class _ResNet18(nn.Module):
    def __init__(self, input_shape, num_outputs: int, nf: int, batchnorm: bool) -> None:
        super().__init__()
        c = input_shape[0]
        self.conv1 = nn.Conv2d(c, nf, 3, 1, 1, bias=False)
        self.bn1 = _norm2d(nf, batchnorm)
        blocks, c_in = [], nf
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = nf * 2**i
            blocks += [_BasicBlock(c_in, c_out, stride, batchnorm), _BasicBlock(c_out, c_out, 1, batchnorm)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(c_in, num_outputs, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(torch.relu(self.bn1(self.conv1(x))))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(out)


@ARCHITECTURES.register("resnet18")
def resnet18(input_shape, num_outputs, batchnorm=True, nf=20):
    """SupSup's reduced-width ResNet-18 (nf=20) with non-affine BatchNorm."""
    return _ResNet18(_require_image("resnet18", input_shape), num_outputs, int(nf), bool(batchnorm))


class BatchStandardize(nn.Module):
    """Standardise each feature with the batch's own mean and variance (no affine, no running statistics).

    A zeroed row of the weight before it stays exactly zero (0 / sqrt(eps)), so a neuron switched
    off by a row mask is off after it too.
    """

    eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, None, None, training=True, eps=self.eps)


class NeuronGate(nn.Module):
    """Multiply each feature by a 0/1 gate: a buffer of ones that a task's neuron mask replaces per call."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("gate", torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate


@ARCHITECTURES.register("swish_mlp")
def swish_mlp(input_shape, num_outputs, batchnorm=False, widths=(2048, 2048)):
    """SupSup's Hopfield base without normalisation: in-2048-2048-out, Swish (SiLU), no biases."""
    layers: list[nn.Module] = [nn.Flatten()]
    prev = int(np.prod(input_shape))
    for width in widths:
        layers += [nn.Linear(prev, int(width), bias=False), _norm1d(int(width), bool(batchnorm)), nn.SiLU()]
        prev = int(width)
    layers.append(nn.Linear(prev, num_outputs, bias=False))
    return nn.Sequential(*layers)


@ARCHITECTURES.register("swish_gated_mlp")
def swish_gated_mlp(input_shape, num_outputs, batchnorm=False, widths=(2048, 2048)):
    """SupSup's HopSupSup model: in-2048-2048-out; each hidden layer standardised with the batch's
    statistics, gated per neuron (the gate takes the place of the normalisation's scale), then Swish."""
    if batchnorm:
        raise ValueError(
            "swish_gated_mlp standardises with batch statistics already; remove base.batchnorm "
            "(per-task running statistics do not apply to it)"
        )
    layers: list[nn.Module] = [nn.Flatten()]
    prev = int(np.prod(input_shape))
    for width in widths:
        layers += [
            nn.Linear(prev, int(width), bias=False),
            BatchStandardize(),
            NeuronGate(int(width)),
            nn.SiLU(),
        ]
        prev = int(width)
    layers.append(nn.Linear(prev, num_outputs, bias=False))
    return nn.Sequential(*layers)


ARCHITECTURES.register("transformer")(
    transformer
)  # a small transformer over token ids (core/bases/transformer.py)


def architecture_options(arch: str) -> dict[str, object]:
    """The options (BaseSpec.options) architecture `arch` takes, with their defaults."""
    return constructor_options(ARCHITECTURES.get(arch), ("input_shape", "num_outputs", "batchnorm"))


def uses_batchnorm(spec: BaseSpec) -> bool:
    """Whether a base of this spec normalises with BatchNorm (its statistics are then kept per task)."""
    if spec.batchnorm is not None:
        return bool(spec.batchnorm)
    return bool(inspect.signature(ARCHITECTURES.get(spec.arch)).parameters["batchnorm"].default)


def check_base_options(spec: BaseSpec) -> None:
    """Raise ValueError naming a base.options key the architecture does not take, or a value of the wrong type."""
    check_options(
        "base.options", f"architecture {spec.arch!r}", spec.options, architecture_options(spec.arch)
    )


def _fan_in(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:]))


def init_weight(shape: tuple[int, ...], init: str, seed: int, index: int) -> np.ndarray:
    """Draw one layer's frozen weight from (seed, layer index) with NumPy, float32."""
    rng = np.random.default_rng([seed, index])
    gain = math.sqrt(2.0)  # ReLU
    fan_in = _fan_in(shape)
    if init == "signed_constant":
        signs = rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1
        return (signs * (gain / math.sqrt(fan_in))).astype(np.float32)
    if init == "kaiming_normal":
        return (rng.standard_normal(size=shape) * (gain / math.sqrt(fan_in))).astype(np.float32)
    if init == "kaiming_uniform":
        bound = gain * math.sqrt(3.0 / fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)
    raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")


class BaseNetwork(nn.Module):
    """A frozen, randomly initialised network whose weights are masked per task."""

    def __init__(self, spec: BaseSpec) -> None:
        super().__init__()
        builder = ARCHITECTURES.get(spec.arch)
        check_fields(spec, "base.")
        check_base_options(spec)
        if spec.input_shape is None or spec.num_outputs is None:
            raise ValueError(
                "a base needs input_shape and num_outputs; build it from a resolved spec "
                "(Recipe.from_spec), or give both, e.g. BaseSpec(input_shape=(784,), num_outputs=10)"
            )
        kwargs = dict(spec.options)
        if spec.batchnorm is not None:
            kwargs["batchnorm"] = spec.batchnorm
        self.spec = spec
        self.net = builder(tuple(spec.input_shape), spec.num_outputs, **kwargs)
        self.masked_names: list[str] = [
            f"{name}.weight" for name, m in self.net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
        ]
        self.bn_names: list[str] = [
            f"{name}.{buf}"
            for name, m in self.net.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for buf in ("running_mean", "running_var")
        ]
        params = dict(self.net.named_parameters())
        with torch.no_grad():
            for i, name in enumerate(self.masked_names):
                w = init_weight(tuple(params[name].shape), spec.init, spec.seed, i)
                params[name].copy_(torch.from_numpy(w))
        self.net.requires_grad_(False)
        self.fingerprint = weights_fingerprint(self)

    @property
    def layer_shapes(self) -> list[tuple[int, ...]]:
        params = dict(self.net.named_parameters())
        return [tuple(params[n].shape) for n in self.masked_names]

    def weights(self) -> list[torch.Tensor]:
        """The frozen weights of the masked layers, in `masked_names` order."""
        params = dict(self.net.named_parameters())
        return [params[n] for n in self.masked_names]

    def fresh_bn_state(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """New BatchNorm running statistics (mean 0, var 1) for a task that starts learning."""
        buffers = dict(self.net.named_buffers())
        state = {}
        for name in self.bn_names:
            init = torch.zeros_like if name.endswith("running_mean") else torch.ones_like
            state[name] = init(buffers[name], device=device)
        return state

    def forward(
        self,
        x: torch.Tensor,
        masks: list[torch.Tensor] | None = None,
        bn_state: dict[str, torch.Tensor] | None = None,
        *,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run the base under one task's masks (or effective weights) and BatchNorm statistics.

        `masks` multiply the frozen weights per layer (float 0/1 or relaxed); `weights` replace them
        outright (trained-weight methods). With neither, the frozen weights are used as they are.
        """
        if masks is not None and weights is not None:
            raise ValueError("give masks or weights, not both")
        given = masks if masks is not None else weights
        if given is None and bn_state is None:
            return self.net(x)
        replaced: dict[str, torch.Tensor] = {}
        if given is not None:
            if len(given) != len(self.masked_names):
                what = "masks" if masks is not None else "weights"
                raise ValueError(f"got {len(given)} {what} for {len(self.masked_names)} masked layers")
            if masks is not None:
                given = [w * m for w, m in zip(self.weights(), masks, strict=True)]
            replaced.update(zip(self.masked_names, given, strict=True))
        if bn_state is not None:
            replaced.update(bn_state)
        return functional_call(self.net, replaced, (x,))


def gate_names(base: BaseNetwork) -> list[str]:
    """Names of the base's neuron-gate buffers in layer order (empty for a base without gates)."""
    return [f"{name}.gate" for name, m in base.net.named_modules() if isinstance(m, NeuronGate)]


def weights_fingerprint(base: BaseNetwork) -> str:
    """blake2b of everything that determines the base's outputs: the whole spec, the BatchNorm buffer
    names and the masked layers' names, shapes and float32 bytes (computed on the CPU).

    So a base with BatchNorm and the same weights without it have different fingerprints, and a mask
    learned on one is refused on the other.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(base.spec.to_dict(), sort_keys=True, default=list).encode())
    h.update(json.dumps(base.bn_names).encode())
    for name, w in zip(base.masked_names, base.weights(), strict=True):
        arr = w.detach().to("cpu", torch.float32).contiguous().numpy()
        h.update(f"{name}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def build_base(spec: BaseSpec, device: torch.device | str = "cpu") -> BaseNetwork:
    """Rebuild the frozen base network for `spec` on `device`."""
    return BaseNetwork(spec).to(device)
