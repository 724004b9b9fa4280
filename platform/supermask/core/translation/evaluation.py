"""Measuring a translation: outline distances both ways against references, cycle errors, sample grids.

Every number is computed from images: the polygon outline of each translation is extracted by its
colour and compared with the true polygon (toy data keeps the pairs for this; training never sees
them). Two references put the distances in scale: `identity` (the input returned unchanged: what
drawing no shape change scores) and `truth` (the true target image: the outline extraction's own
error). Real unpaired data has no polygons: only the cycle errors are measured there. FID and KID
need a pretrained feature network (Inception), which cannot be downloaded here, so none is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from supermask.core.translation.losses import ms_ssim, usable_scales
from supermask.core.translation.metrics import outline_scores

MISS_DISTANCE = 0.5  # what an image with no detectable polygon counts as in `hausdorff_score`
DIRECTIONS = ("x_to_y", "y_to_x")

Translate = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class TranslationTestSet:
    """Held-out images of both domains; for toy data, X and Y of one shape with their polygons."""

    x: torch.Tensor
    y: torch.Tensor
    polygons_x: list[np.ndarray] | None = None  # the polygon drawn in x[i] (toy data only)
    polygons_y: list[np.ndarray] | None = None
    channel: int = 0  # the polygon's colour channel
    paired: bool = False  # y[i] is the true translation of x[i]

    @property
    def has_outlines(self) -> bool:
        return self.polygons_x is not None and self.polygons_y is not None

    def head(self, n: int) -> TranslationTestSet:
        """The first n images (pairs) of the set."""
        return TranslationTestSet(
            self.x[:n],
            self.y[:n],
            None if self.polygons_x is None else self.polygons_x[:n],
            None if self.polygons_y is None else self.polygons_y[:n],
            self.channel,
            self.paired,
        )


def _outlines(images: torch.Tensor, polygons: list[np.ndarray], channel: int) -> dict:
    return outline_scores(images, polygons, channel=channel).summary()


def references(test: TranslationTestSet) -> dict:
    """What returning the input scores (`identity`) and what the true images score (`truth`)."""
    if not test.has_outlines:
        return {}
    out = {
        "identity": {
            "x_to_y": _outlines(test.x, test.polygons_y, test.channel),
            "y_to_x": _outlines(test.y, test.polygons_x, test.channel),
        }
    }
    if test.paired:
        out["truth"] = {
            "x_to_y": _outlines(test.y, test.polygons_y, test.channel),
            "y_to_x": _outlines(test.x, test.polygons_x, test.channel),
        }
    return out


def _cycle_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    scales = usable_scales(min(a.shape[-2:]), 5, min(8, min(a.shape[-2:])))
    return float(ms_ssim(a, b, scales=scales, window=min(8, min(a.shape[-2:]))).mean())


def evaluate_translation(xy: Translate, yx: Translate, test: TranslationTestSet) -> dict:
    """Outline distances of both translations (toy data), cycle L1 and MS-SSIM, paired L1 where paired."""
    fake_y, fake_x = xy(test.x), yx(test.y)
    rec_x, rec_y = yx(fake_y), xy(fake_x)
    out: dict = {
        "count": len(test.x),
        "cycle_l1_x": float((rec_x - test.x).abs().mean()),
        "cycle_l1_y": float((rec_y - test.y).abs().mean()),
        "cycle_ms_ssim_x": _cycle_ssim(rec_x, test.x),
        "cycle_ms_ssim_y": _cycle_ssim(rec_y, test.y),
    }
    if test.paired:
        out["paired_l1_x_to_y"] = float((fake_y - test.y).abs().mean())
        out["paired_l1_y_to_x"] = float((fake_x - test.x).abs().mean())
    if test.has_outlines:
        out["x_to_y"] = _outlines(fake_y, test.polygons_y, test.channel)
        out["y_to_x"] = _outlines(fake_x, test.polygons_x, test.channel)
        out["hausdorff_score"] = hausdorff_score(out)
    return out


def hausdorff_score(scores: dict) -> float:
    """One number to rank runs by (lower is better): the mean symmetric Hausdorff distance over both
    directions and every image, an image with no detectable polygon counting as MISS_DISTANCE."""
    values = []
    for d in DIRECTIONS:
        s = scores[d]
        hit = s["detected_fraction"]
        mean = s["symmetric_mean"] if hit > 0 else 0.0
        values.append(hit * mean + (1.0 - hit) * MISS_DISTANCE)
    return float(np.mean(values))


def sample_grid(
    xy: Translate, yx: Translate, test: TranslationTestSet, rows: int, scale: int = 1
) -> torch.Tensor:
    """One image (3, H, W) in [0, 1]: per row, X -> Y on the left (input, translation, cycle, truth)
    and Y -> X on the right (the same); without pairs the truth columns are left grey."""
    x, y = test.x[:rows], test.y[:rows]
    fake_y, fake_x = xy(x), yx(y)
    rec_x, rec_y = yx(fake_y), xy(fake_x)
    grey = torch.full_like(x, 0.5)
    truth_y, truth_x = (y, x) if test.paired else (grey, grey)
    gap = torch.full((*x.shape[:3], max(2, x.shape[3] // 16)), 0.5)
    row = torch.cat([x, fake_y, rec_x, truth_y, gap, gap, y, fake_x, rec_y, truth_x], dim=3)
    row = F.pad(row, (0, 0, 0, 2), value=0.5)
    grid = torch.cat(list(row), dim=1)
    if scale > 1:
        grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    return grid.clamp(0.0, 1.0)
