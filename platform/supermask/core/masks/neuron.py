"""Neuron masks: one bit per output neuron (or conv channel) of every masked layer but the last.

For a layer without bias followed by an activation with f(0) = 0 (ReLU, Swish/SiLU), multiplying
the layer's output neuron i by m_i in {0, 1} gives the same output as keeping (m_i = 1) or zeroing
(m_i = 0) row i of its weight; for a conv layer, the whole kernel of output channel i. The output
layer is never masked: its neurons are the classes.

The `neuron` method (SupSup's masks for its Hopfield reservoir) keeps neuron i when its score is
>= 0, so a task's pattern is sign(score), the state z = 2m - 1 a reservoir stores; it has no density
target, and gradients pass straight through the threshold. It `produces` "neurons": per hidden
layer a (K, d) float 0/1 tensor, which `core.bases.stacked.stacked_forward` applies

- through the base's gates (`nets.NeuronGate`, e.g. `swish_gated_mlp`, the source's model: the gate
  multiplies the batch-standardised neuron, taking the place of the normalisation's scale). A row
  mask there would sit before the standardisation, which is scale-invariant, so its gradient would
  vanish: gates carry the straight-through gradient instead;
- as row masks of the weights on any other base (exact on bases without BatchNorm whose masked
  layers feed an activation with f(0) = 0: swish_mlp, mlp, fc1024, lenet300, conv4, conv6).

`hard_masks()` gives the row masks in either case: on a gated base they are exact in the forward
pass too (a zeroed row is standardised to 0), so a neuron mask is stored, packed and evaluated as
an ordinary weight mask. Gradient caveat on ReLU bases: a switched-off neuron's score gets
f'(0) * (W x)_i * dL/dh_i = 0, so it can come back only by momentum; Swish has f'(0) = 1/2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from supermask.core.bases.networks import BaseNetwork, gate_names
from supermask.core.masks.methods import MASK_METHODS, MaskMethod
from supermask.core.masks.straight_through import threshold_bits

SCORE_INITS = ("zeros", "uniform")
NeuronForward = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]


def neuron_dims(shapes: list[tuple[int, ...]]) -> list[int]:
    """Neurons (output rows or channels) masked per layer: every masked layer but the last."""
    if len(shapes) < 2:
        raise ValueError(
            f"neuron masks need at least two masked layers (hidden ones and the output layer), got shapes {shapes}"
        )
    return [int(s[0]) for s in shapes[:-1]]


def neuron_bits(scores: torch.Tensor) -> torch.Tensor:
    """Float 0/1 neuron mask 1[score >= 0] with a straight-through gradient to the scores."""
    return threshold_bits(scores)


def expand_neuron_masks(bits: Sequence[torch.Tensor], shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Full-shaped weight masks from neuron masks: (d,) per hidden layer, or (K, d) for a stack of K tasks.

    Rows of ones or zeros; the output layer all ones. Differentiable: a row mask's gradient sums to
    its neuron (the expansion is a broadcast view).
    """
    dims = neuron_dims(shapes)
    if len(bits) != len(dims):
        raise ValueError(f"got {len(bits)} neuron masks for {len(dims)} masked hidden layers")
    lead = tuple(bits[0].shape[:-1])
    out = []
    for b, shape, d in zip(bits, shapes[:-1], dims, strict=True):
        if tuple(b.shape) != (*lead, d):
            raise ValueError(
                f"a neuron mask for a layer of shape {shape} has shape {(*lead, d)}, got {tuple(b.shape)}"
            )
        out.append(b.view(*lead, d, *([1] * (len(shape) - 1))).expand(*lead, *shape))
    ref = bits[0]
    out.append(torch.ones(shapes[-1], dtype=ref.dtype, device=ref.device).expand(*lead, *shapes[-1]))
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
    """SupSup's neuron masks: one score per hidden neuron (or channel) and task; kept when its score is >= 0."""

    name = "neuron"
    produces = "neurons"
    takes_density = False

    @classmethod
    def check_options(cls, options: dict) -> None:
        init = options.get("score_init", "zeros")
        if init not in SCORE_INITS:
            raise ValueError(f"mask.options.score_init: got {init!r}; allowed: {', '.join(SCORE_INITS)}")

    def __init__(
        self, shapes, density: float | None = None, seeds: Sequence[int] = (0,), score_init: str = "zeros"
    ) -> None:
        self.check_options({"score_init": score_init})
        dims = neuron_dims([tuple(s) for s in shapes])
        # The base class draws scores (K, d) ~ U(-1, 1) per task seed; SupSup starts every task at zeros.
        super().__init__([(d,) for d in dims], 0.5 if density is None else density, seeds)
        self.shapes = [tuple(s) for s in shapes]
        self.dims = dims
        if score_init == "zeros":
            with torch.no_grad():
                for s in self.scores:
                    s.zero_()

    def forward(self) -> list[torch.Tensor]:
        """Float 0/1 neuron masks (K, d) per hidden layer, straight-through to the scores."""
        return [neuron_bits(s) for s in self.scores]

    @torch.no_grad()
    def hard_masks(self) -> list[torch.Tensor]:
        """The row masks (K, *weight shape) bool per layer, the output layer all kept."""
        return [m.bool() for m in expand_neuron_masks([(s >= 0).float() for s in self.scores], self.shapes)]

    @torch.no_grad()
    def patterns(self) -> list[np.ndarray]:
        """The current neuron patterns: a boolean (K, d) array per hidden layer."""
        return [(s >= 0).cpu().numpy() for s in self.scores]

    @torch.no_grad()
    def load_patterns(self, patterns: list[np.ndarray], magnitude: float = 1.0) -> None:
        """Set the scores to +magnitude where a pattern keeps a neuron, -magnitude where it drops it ((K, d) each)."""
        if len(patterns) != len(self.dims):
            raise ValueError(f"got {len(patterns)} patterns for {len(self.dims)} hidden layers")
        for s, p in zip(self.scores, patterns, strict=True):
            p = torch.as_tensor(np.asarray(p, dtype=bool), device=s.device)
            if p.shape != s.shape:
                raise ValueError(f"pattern of shape {tuple(p.shape)} for scores of shape {tuple(s.shape)}")
            s.copy_(torch.where(p, magnitude, -magnitude).to(s.dtype))

    @torch.no_grad()
    def after_step(self) -> dict[str, torch.Tensor]:
        kept = sum((s >= 0).sum(1) for s in self.scores)
        return {"neuron_density": kept.float() / sum(self.dims)}


def neuron_forward(base: BaseNetwork, bn_state: dict[str, torch.Tensor] | None = None) -> NeuronForward:
    """(inputs, per-layer 0/1 neuron bits (d,)) -> logits for one task: through the base's gates, else as row masks."""
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
