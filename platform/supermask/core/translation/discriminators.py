"""Discriminators for translation: dilated (GANimorph), patch (PatchGAN) and global, and their receptive fields.

Every discriminator maps images to (logits, taps): a logit map of shape (N, 1, h, w) and the list of
hidden activations that feature matching compares.

- `dilated` (the source's): three 4x4 stride-2 convs (2w, 4w, 8w channels), a 3x3 conv, then 3x3
  convs dilated 2, 4 and 8; their output is concatenated with the pre-dilation features, merged by a
  3x3 conv, and a 4x4 stride-1 conv gives one logit per location: a 16 x 16 map at 128 px (R / 8)
  whose every location sees the whole image. Seven taps, as in the source.
- `patch` (pix2pix's PatchGAN): 4x4 stride-2 convs (w, 2w, 4w, ...), then two 4x4 stride-1 convs.
  The number of stride-2 convs scales with the resolution (log2(R) - 4, at least 1), so a location
  sees about half the image's width at every size: 70 px at 128 as in pix2pix, 34 at 64, 16 at 32.
- `global`: 4x4 stride-2 convs down to 4 x 4, then a 4x4 conv to a single logit for the image.

`receptive_field` computes what each output location sees from the network itself (the support of the
gradient of that location through a linearised copy), never from a formula written by hand.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from supermask.core.registry import Registry
from supermask.core.translation.generator import conv_unit
from supermask.core.translation.settings import TranslationSettings

DISCRIMINATORS: Registry[type[nn.Module]] = Registry("discriminator")


def _check_power_of_two(settings: TranslationSettings, kind: str, least: int) -> int:
    downs = int(round(math.log2(settings.resolution)))
    if 2**downs != settings.resolution or settings.resolution < least:
        raise ValueError(
            f"translation.resolution: got {settings.resolution}; the {kind} discriminator needs a power "
            f"of two >= {least}"
        )
    return downs


@DISCRIMINATORS.register("dilated")
class DilatedDiscriminator(nn.Module):
    """GANimorph's discriminator: dilated convs give every output location the whole image's context."""

    def __init__(self, settings: TranslationSettings) -> None:
        super().__init__()
        if settings.resolution % 8:
            raise ValueError(
                f"translation.resolution: got {settings.resolution}; the dilated discriminator needs a multiple of 8"
            )
        w, c = settings.disc_width, settings.channels
        self.conv0 = conv_unit(c, 2 * w, 4, 2, 1, settings, norm=False)
        self.conv1 = conv_unit(2 * w, 4 * w, 4, 2, 1, settings)
        self.conv2 = conv_unit(4 * w, 8 * w, 4, 2, 1, settings)
        self.conv3 = conv_unit(8 * w, 8 * w, 3, 1, 1, settings)
        self.dilated = nn.ModuleList(
            conv_unit(8 * w, 8 * w, 3, 1, rate, settings, dilation=rate) for rate in (2, 4, 8)
        )
        self.merge = conv_unit(16 * w, 8 * w, 3, 1, 1, settings)
        self.out = nn.Conv2d(8 * w, 1, 4, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        t1 = self.conv1(self.conv0(x))
        t2 = self.conv2(t1)
        t3 = self.conv3(t2)
        taps = [t1, t2, t3]
        h = t3
        for conv in self.dilated:
            h = conv(h)
            taps.append(h)
        merged = self.merge(torch.cat([t3, h], dim=1))
        taps.append(merged)
        # 'same' padding for an even kernel: one row/column before, two after (as TensorFlow pads)
        return self.out(F.pad(merged, (1, 2, 1, 2))), taps


@DISCRIMINATORS.register("patch")
class PatchDiscriminator(nn.Module):
    """PatchGAN: each output location judges one patch of about half the image's width."""

    def __init__(self, settings: TranslationSettings) -> None:
        super().__init__()
        downs = max(1, _check_power_of_two(settings, "patch", 16) - 4)
        w = settings.disc_width
        layers = [conv_unit(settings.channels, w, 4, 2, 1, settings, norm=False)]
        c = w
        for k in range(1, downs):
            nxt = w * 2 ** min(k, 3)
            layers.append(conv_unit(c, nxt, 4, 2, 1, settings))
            c = nxt
        nxt = w * 2 ** min(downs, 3)
        layers.append(conv_unit(c, nxt, 4, 1, 1, settings))
        self.body = nn.ModuleList(layers)
        self.out = nn.Conv2d(nxt, 1, 4, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        taps = []
        for layer in self.body:
            x = layer(x)
            taps.append(x)
        return self.out(x), taps


@DISCRIMINATORS.register("global")
class GlobalDiscriminator(nn.Module):
    """One logit per image from stride-2 convs down to 4 x 4 and a 4x4 conv over what is left."""

    def __init__(self, settings: TranslationSettings) -> None:
        super().__init__()
        downs = _check_power_of_two(settings, "global", 8) - 2
        w = settings.disc_width
        layers, c = [], settings.channels
        for k in range(downs):
            nxt = w * 2 ** min(k, 3)
            layers.append(conv_unit(c, nxt, 4, 2, 1, settings, norm=k > 0))
            c = nxt
        self.body = nn.ModuleList(layers)
        self.out = nn.Conv2d(c, 1, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        taps = []
        for layer in self.body:
            x = layer(x)
            taps.append(x)
        return self.out(x), taps


def build_discriminator(settings: TranslationSettings) -> nn.Module:
    """The discriminator named by settings.discriminator."""
    return DISCRIMINATORS.get(settings.discriminator)(settings)


@dataclass(frozen=True)
class ReceptiveField:
    """What one output location of a discriminator sees, computed from the network."""

    size: tuple[int, int]  # rows and columns of input pixels that reach the centre location, unclipped
    coverage: float  # smallest fraction of the image that reaches an output location (centre or corner)
    output_shape: tuple[int, int]  # the logit map at this resolution

    @property
    def covers_image(self) -> bool:
        return self.coverage == 1.0


def _linearised(module: nn.Module) -> nn.Module:
    """A float64 copy with norms and nonlinearities removed and every weight 1 / fan-in, biases 0.

    All paths are then positive, so the gradient of an output is nonzero exactly where the
    convolutions reach: the receptive field, whatever the trained weights happen to be.
    """
    lin = copy.deepcopy(module).double().eval()
    dropped = (nn.InstanceNorm2d, nn.BatchNorm2d, nn.LeakyReLU, nn.ReLU, nn.Sigmoid)
    for parent in list(lin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, dropped):
                setattr(parent, name, nn.Identity())
    with torch.no_grad():
        for m in lin.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
    return lin


def input_support(
    module: nn.Module, size: int, channels: int, location: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Which input pixels reach one location of the logit map (default: its centre), and the map's shape."""
    lin = _linearised(module)
    x = torch.zeros(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    logits, _ = lin(x)
    rows, cols = logits.shape[-2:]
    r, c = location if location is not None else (rows // 2, cols // 2)
    logits[0, 0, r, c].backward()
    return (x.grad[0].abs().sum(0) > 0).numpy(), (rows, cols)


def receptive_field(module: nn.Module, resolution: int, channels: int = 3) -> ReceptiveField:
    """The receptive field of a discriminator at `resolution`: its size (measured on a canvas large
    enough that its edges do not clip it) and the share of the image that its centre and corner
    output locations each see."""
    side = 4 * resolution
    canvas, _ = input_support(module, side, channels)
    while (canvas[0].any() or canvas[-1].any() or canvas[:, 0].any() or canvas[:, -1].any()) and side < 4096:
        side *= 2
        canvas, _ = input_support(module, side, channels)
    rows = np.flatnonzero(canvas.any(axis=1))
    cols = np.flatnonzero(canvas.any(axis=0))
    size = (int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))
    centre, shape = input_support(module, resolution, channels)
    coverage = float(centre.mean())
    for corner in ((0, 0), (0, shape[1] - 1), (shape[0] - 1, 0), (shape[0] - 1, shape[1] - 1)):
        seen, _ = input_support(module, resolution, channels, corner)
        coverage = min(coverage, float(seen.mean()))
    return ReceptiveField(size=size, coverage=coverage, output_shape=shape)
