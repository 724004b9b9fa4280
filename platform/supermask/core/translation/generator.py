"""GANimorph's generator: a strided encoder, groups of concatenating blocks, a transposed-conv decoder.

At 128 px (the source): four 4x4 stride-2 convs down to 8 x 8; after each of the last three, a group
of `blocks` blocks at 32, 16 and 8 px, where a block is out = conv3x3(concat(conv3x3(conv3x3(x)), x))
(concatenation, not addition). The decoder's 4x4 stride-2 transposed convs go back up; after each of
the two that reach a grouped scale, the encoder group's output is concatenated and another group
follows. The last transposed conv gives the image through a sigmoid. The number of stride-2 convs
scales with the resolution (settings.encoder_downsamplings: down to 8 x 8, at least 3), so at 32 px
the groups sit at 16, 8 and 4 px.

Every weight lives in a plain nn.Conv2d or nn.ConvTranspose2d (`maskable_weights`), so a mask method
can later multiply them as it does a base network's layers.
"""

from __future__ import annotations

import torch
from torch import nn

from supermask.core.translation.settings import TranslationSettings

GROUPED_SCALES = 3  # groups of blocks at the three coarsest scales


def activation(name: str) -> nn.Module:
    """The hidden-layer nonlinearity: LeakyReLU(0.2) (the paper) or ReLU (the later code)."""
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"activation: got {name!r}; allowed: leaky_relu, relu")


def conv_unit(
    c_in: int,
    c_out: int,
    kernel: int,
    stride: int,
    padding: int,
    settings: TranslationSettings,
    *,
    norm: bool = True,
    transposed: bool = False,
    dilation: int = 1,
) -> nn.Sequential:
    """conv (or transposed conv) -> instance norm (if on) -> activation; a bias only where no norm follows."""
    use_norm = norm and settings.norm == "instance"
    if transposed:
        conv: nn.Module = nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=not use_norm)
    else:
        conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, bias=not use_norm)
    layers = [conv]
    if use_norm:
        layers.append(nn.InstanceNorm2d(c_out, affine=True))
    layers.append(activation(settings.activation))
    return nn.Sequential(*layers)


class ConcatBlock(nn.Module):
    """out = conv3x3(concat(conv3x3(conv3x3(x)), x)): the source's block, a concatenation, not a sum."""

    def __init__(self, c_in: int, c_out: int, settings: TranslationSettings) -> None:
        super().__init__()
        self.inner = nn.Sequential(
            conv_unit(c_in, c_out, 3, 1, 1, settings), conv_unit(c_out, c_out, 3, 1, 1, settings)
        )
        self.merge = conv_unit(c_out + c_in, c_out, 3, 1, 1, settings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([self.inner(x), x], dim=1))


def block_group(c_in: int, c_out: int, settings: TranslationSettings) -> tuple[nn.Module, int]:
    """`settings.blocks` blocks in a row, and the channels they output (c_in when there are none)."""
    if settings.blocks == 0:
        return nn.Identity(), c_in
    blocks = [ConcatBlock(c_in if i == 0 else c_out, c_out, settings) for i in range(settings.blocks)]
    return nn.Sequential(*blocks), c_out


def encoder_widths(settings: TranslationSettings) -> list[int]:
    """Channels after each stride-2 encoder conv: ..., w, 2w, 4w, 8w, the grouped scales last."""
    downs = settings.encoder_downsamplings
    widths = []
    for i in range(downs):
        power = i - downs + 4  # the last three levels are 2w, 4w, 8w whatever the depth
        widths.append(settings.width * 2**power if power >= 0 else max(1, settings.width // 2**-power))
    return widths


class Generator(nn.Module):
    """Maps an image in [0, 1] to an image in [0, 1] of the same size (one translation direction)."""

    def __init__(self, settings: TranslationSettings) -> None:
        super().__init__()
        self.settings = settings
        downs = settings.encoder_downsamplings
        widths = encoder_widths(settings)
        self.grouped_from = downs - GROUPED_SCALES  # levels >= this carry a group and a skip
        self.down = nn.ModuleList()
        self.enc_groups = nn.ModuleList()
        c = settings.channels
        for i, w in enumerate(widths):
            self.down.append(conv_unit(c, w, 4, 2, 1, settings, norm=i > 0))  # no norm on the input conv
            group, c = block_group(w, w, settings) if i >= self.grouped_from else (nn.Identity(), w)
            self.enc_groups.append(group)
        self.up = nn.ModuleList()
        self.dec_groups = nn.ModuleList()
        for i in range(downs - 1, 0, -1):  # from level i up to level i - 1
            target = widths[i - 1]
            self.up.append(conv_unit(c, target, 4, 2, 1, settings, transposed=True))
            if i - 1 >= self.grouped_from:
                # an encoder group keeps its level's width, so the skip brings widths[i - 1] channels
                group, c = block_group(target + widths[i - 1], target, settings)
            else:
                group, c = nn.Identity(), target
            self.dec_groups.append(group)
        self.out = nn.ConvTranspose2d(c, settings.channels, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down, group in zip(self.down, self.enc_groups, strict=True):
            x = group(down(x))
            skips.append(x)
        for k, (up, group) in enumerate(zip(self.up, self.dec_groups, strict=True)):
            level = len(self.down) - 2 - k  # the level this transposed conv reaches
            x = up(x)
            if level >= self.grouped_from:
                x = group(torch.cat([x, skips[level]], dim=1))
        return torch.sigmoid(self.out(x))


def maskable_weights(module: nn.Module) -> dict[str, nn.Parameter]:
    """The weights of every conv and transposed conv, by parameter name (what a supermask would cover)."""
    return {
        f"{name}.weight": m.weight
        for name, m in module.named_modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    }
