"""Neuron masks: one bit per output neuron (or conv channel) of every masked layer but the last.

For a layer without bias followed by an activation with f(0) = 0 (ReLU, Swish/SiLU), multiplying
the layer's output neuron i by m_i in {0, 1} gives the same output as keeping (m_i = 1) or zeroing
(m_i = 0) row i of its weight; for a conv layer, the whole kernel of output channel i. So a neuron
mask is an ordinary `MaskMethod` whose `forward()` expands one score per neuron into full-shaped
weight masks, and the base and the search loop need no change. The output layer is never masked
(its mask is all ones): its neurons are the classes.

Selection is SupSup's for its Hopfield masks: neuron i is kept when its score is >= 0, i.e. the
pattern is sign(score), which is also the state z = 2m - 1 a Hopfield reservoir stores. There is
no density target. Gradients pass straight through the threshold to the scores.

Where the equivalence holds: bases without BatchNorm whose masked layers feed an activation with
f(0) = 0 (swish_mlp, mlp, fc1024, lenet300, conv4, conv6; max-pooling a zeroed channel keeps it
zero). With BatchNorm in running-statistics mode a zeroed row is normalised to -mean/std, not 0;
in a ResNet block a masked conv channel is added to the shortcut. Both still work as mask methods,
but the mask is then on the layer's rows, not on the neurons' outputs.

Gradient caveat: through a row mask the score of a switched-off neuron i receives
f'(0) * (W x)_i * dL/dh_i. Swish has f'(0) = 1/2, so every neuron keeps a gradient; ReLU has
f'(0) = 0 (in torch), so on ReLU bases a neuron that is off gets no gradient from the loss and can
come back only by momentum. Use `swish_mlp` where masks are learned or recovered by gradient.

The source's own model is registered too, as `swish_gated_mlp`: each hidden layer is standardised
with the batch's statistics (no affine, no running statistics), multiplied by a 0/1 gate per
neuron (the gate takes the place of the normalisation's scale), then Swish. Its gates are buffers
that `neuron_forward` replaces per call; a row mask there would sit before the standardisation,
which is scale-invariant, so its gradient would vanish: on that base use gates, not the `neuron`
method's row masks. Its outputs depend on the batch (a batch of one standardises to zero).
`neuron_forward(base)` gives `(x, bits) -> logits` for either kind of base.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from supermask.core.masks import MASK_METHODS, MaskMethod
from supermask.core.nets import ARCHITECTURES, BaseNetwork

SCORE_INITS = ("zeros", "uniform")
NeuronForward = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]


def neuron_dims(shapes: list[tuple[int, ...]]) -> list[int]:
    """Neurons (output rows or channels) masked per layer: every masked layer but the last."""
    if len(shapes) < 2:
        raise ValueError(
            f"neuron masks need at least two masked layers (hidden ones and the output layer), got shapes {shapes}"
        )
    return [int(s[0]) for s in shapes[:-1]]


class _SignStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        return (scores >= 0).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad


def neuron_bits(scores: torch.Tensor) -> torch.Tensor:
    """Float 0/1 neuron mask 1[score >= 0] with a straight-through gradient to the scores."""
    return _SignStraightThrough.apply(scores)


def expand_neuron_masks(bits: list[torch.Tensor], shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Full-shaped weight masks from per-layer neuron masks (d,): rows of ones/zeros; output layer all ones.

    Differentiable: a row mask's gradient sums to its neuron (the expansion is a broadcast view).
    """
    dims = neuron_dims(shapes)
    if len(bits) != len(dims):
        raise ValueError(f"got {len(bits)} neuron masks for {len(dims)} masked hidden layers")
    out = []
    for b, shape, d in zip(bits, shapes[:-1], dims, strict=True):
        if tuple(b.shape) != (d,):
            raise ValueError(
                f"a neuron mask for a layer of shape {shape} has shape ({d},), got {tuple(b.shape)}"
            )
        out.append(b.view(d, *([1] * (len(shape) - 1))).expand(shape))
    ref = bits[0]
    out.append(torch.ones(shapes[-1], dtype=ref.dtype, device=ref.device))
    return out


def masks_from_patterns(
    patterns: list[np.ndarray], shapes: list[tuple[int, ...]], device: torch.device | str = "cpu"
) -> list[torch.Tensor]:
    """Float 0/1 weight masks (full shapes) from boolean neuron patterns, one (d,) vector per hidden layer."""
    bits = [torch.as_tensor(np.asarray(p, dtype=bool), device=device).float() for p in patterns]
    return [m.contiguous() for m in expand_neuron_masks(bits, shapes)]


def patterns_from_masks(masks: list[np.ndarray | torch.Tensor]) -> list[np.ndarray]:
    """Boolean neuron patterns from full-shaped neuron masks (every row constant; the last layer all ones)."""
    if len(masks) < 2:
        raise ValueError("neuron masks have at least two layers")
    out = []
    for i, m in enumerate(masks):
        arr = (m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)).astype(bool)
        rows = arr.reshape(arr.shape[0], -1)
        if not ((rows == rows[:, :1]).all()):
            raise ValueError(
                f"mask of layer {i} is not a neuron mask: some row is neither all kept nor all dropped"
            )
        if i == len(masks) - 1:
            if not rows.all():
                raise ValueError("the output layer of a neuron mask must be all ones")
        else:
            out.append(rows[:, 0].copy())
    return out


@MASK_METHODS.register("neuron")
class NeuronMask(MaskMethod):
    """SupSup's neuron masks: one score per hidden neuron (or channel); kept when its score is >= 0."""

    name = "neuron"
    takes_density = False

    @classmethod
    def check_options(cls, options: dict) -> None:
        init = options.get("score_init", "zeros")
        if init not in SCORE_INITS:
            raise ValueError(f"mask.options.score_init: got {init!r}; allowed: {', '.join(SCORE_INITS)}")

    def __init__(
        self, shapes, density: float | None = None, seed: int = 0, score_init: str = "zeros"
    ) -> None:
        self.check_options({"score_init": score_init})
        dims = neuron_dims([tuple(s) for s in shapes])
        # The base class draws U(-1, 1) scores for shapes (d,); SupSup starts every task at zeros (all kept).
        super().__init__([(d,) for d in dims], 0.5 if density is None else density, seed)
        self.shapes = [tuple(s) for s in shapes]
        self.dims = dims
        if score_init == "zeros":
            with torch.no_grad():
                for s in self.scores:
                    s.zero_()

    def forward(self) -> list[torch.Tensor]:
        return expand_neuron_masks([neuron_bits(s) for s in self.scores], self.shapes)

    @torch.no_grad()
    def patterns(self) -> list[np.ndarray]:
        """The current neuron patterns: one boolean (d,) vector per hidden layer."""
        return [(s >= 0).cpu().numpy() for s in self.scores]

    @torch.no_grad()
    def load_patterns(self, patterns: list[np.ndarray], magnitude: float = 1.0) -> None:
        """Set the scores to +magnitude where a pattern keeps a neuron and -magnitude where it drops it."""
        if len(patterns) != len(self.dims):
            raise ValueError(f"got {len(patterns)} patterns for {len(self.dims)} hidden layers")
        for s, p in zip(self.scores, patterns, strict=True):
            p = torch.as_tensor(np.asarray(p, dtype=bool), device=s.device)
            if p.shape != s.shape:
                raise ValueError(f"pattern of shape {tuple(p.shape)} for a layer of {s.numel()} neurons")
            s.copy_(torch.where(p, magnitude, -magnitude).to(s.dtype))

    @torch.no_grad()
    def after_step(self) -> dict[str, float]:
        kept = sum(int((s >= 0).sum()) for s in self.scores)
        return {"neuron_density": kept / sum(self.dims)}


class BatchStandardize(nn.Module):
    """Standardise each feature with the batch's own mean and variance (no affine, no running statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, training=True)


class NeuronGate(nn.Module):
    """Multiply each feature by a 0/1 gate: a buffer of ones, replaced per call (`gated_forward`)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("gate", torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate


@ARCHITECTURES.register("swish_mlp")
def swish_mlp(input_shape, num_outputs, batchnorm=False, widths=(2048, 2048)):
    """SupSup's Hopfield base: in-2048-2048-out, Swish (SiLU) activations, no biases."""
    layers: list[nn.Module] = [nn.Flatten()]
    prev = int(np.prod(input_shape))
    for width in widths:
        norm = nn.BatchNorm1d(width, affine=False) if batchnorm else nn.Identity()
        layers += [nn.Linear(prev, int(width), bias=False), norm, nn.SiLU()]
        prev = int(width)
    layers.append(nn.Linear(prev, num_outputs, bias=False))
    return nn.Sequential(*layers)


@ARCHITECTURES.register("swish_gated_mlp")
def swish_gated_mlp(input_shape, num_outputs, batchnorm=False, widths=(2048, 2048)):
    """SupSup's HopSupSup model: in-2048-2048-out, each hidden layer standardised with batch statistics,
    gated per neuron (the gate takes the place of the normalisation's scale), then Swish; no biases."""
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


def gate_names(base: BaseNetwork) -> list[str]:
    """Names of the base's neuron-gate buffers, in layer order (empty for bases without gates)."""
    return [f"{name}.gate" for name, m in base.net.named_modules() if isinstance(m, NeuronGate)]


def neuron_forward(base: BaseNetwork, bn_state: dict[str, torch.Tensor] | None = None) -> NeuronForward:
    """(inputs, per-layer 0/1 neuron bits) -> logits: through the gates of a gated base, else as row masks.

    Gates get the straight-through gradient of the neuron's output, as in the source. Row masks of a
    base without gates are exact neurons masks under the conditions in the module docstring.
    """
    gates = gate_names(base)
    if gates:

        def gated(x: torch.Tensor, bits: list[torch.Tensor]) -> torch.Tensor:
            if len(bits) != len(gates):
                raise ValueError(f"got {len(bits)} neuron masks for {len(gates)} gated layers")
            return base(x, None, {**(bn_state or {}), **dict(zip(gates, bits, strict=True))})

        return gated
    shapes = base.layer_shapes

    def rows(x: torch.Tensor, bits: list[torch.Tensor]) -> torch.Tensor:
        return base(x, expand_neuron_masks(bits, shapes), bn_state)

    return rows
