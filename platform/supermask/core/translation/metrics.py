"""Shape metrics for translation, computed from the images (never hand-annotated outlines).

A polygon is found by its colour: a pixel's score is its `channel` minus the largest other channel
(1 on the pure polygon colour, 0 on white, black or grey, the anti-aliased coverage on edges). The
largest 4-connected region scoring above `threshold` is the polygon, if it covers at least `min_area`
of the image; its outline is the set of points where the score crosses the threshold between a pixel
of the region and a neighbour outside it, placed by linear interpolation (sub-pixel). Points are in
unit-square coordinates (x right, y down), like the toy dataset's vertices.

Hausdorff distances between outlines: the symmetric one, and both one-sided ones. The source's
evaluation code is not public, so which one-sided form it reported cannot be checked; both are given:
`truth_to_output` (how far the true outline's farthest point is from the output's outline: parts
the output misses) and `output_to_truth` (how far the output strays from the truth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def polygon_score(image: np.ndarray | torch.Tensor, channel: int = 0) -> np.ndarray:
    """(H, W) map in [0, 1]: how much of each pixel is the polygon's pure colour, from a (C, H, W) image."""
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if img.ndim != 3 or img.shape[0] < 2:
        raise ValueError(f"polygon_score needs a (C, H, W) image with C >= 2; got shape {img.shape}")
    others = np.delete(img, channel, axis=0).max(axis=0)
    return np.clip(img[channel] - others, 0.0, 1.0).astype(np.float64)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean (H, W) mask (all False if the mask is empty)."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    big = mask.size + 1
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), big)
    while True:  # every pixel takes the smallest label among itself and its neighbours in the mask
        padded = np.pad(labels, 1, constant_values=big)
        neighbours = np.minimum.reduce(
            [padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        )
        new = np.where(mask, neighbours, big)
        if np.array_equal(new, labels):
            break
        labels = new
    values, counts = np.unique(labels[mask], return_counts=True)
    return labels == values[np.argmax(counts)]


def extract_outline(
    image: np.ndarray | torch.Tensor,
    channel: int = 0,
    threshold: float = 0.5,
    min_area: float = 0.01,
    upsample: int = 4,
) -> np.ndarray | None:
    """(K, 2) sub-pixel outline points of the polygon in a (C, H, W) image, or None if none is found.

    The score map is bilinearly interpolated `upsample` times finer between pixel centres, so the
    points lie about 1 / upsample pixel apart along the outline.
    """
    score = polygon_score(image, channel)
    region = largest_component(score > threshold)
    h, w = score.shape
    if region.sum() < min_area * h * w:
        return None
    # Outside the region nothing may rise above the threshold (another blob is not this outline);
    # a one-pixel zero border closes a region that touches the image's edge.
    field = np.pad(np.where(region, score, np.minimum(score, threshold)), 1)
    size = ((h + 1) * upsample + 1, (w + 1) * upsample + 1)
    fine = F.interpolate(torch.from_numpy(field)[None, None], size=size, mode="bilinear", align_corners=True)
    fine = fine[0, 0].numpy()
    above = fine > threshold
    points = []
    for axis in (0, 1):  # neighbours down the columns, then along the rows
        first, second = np.arange(fine.shape[axis] - 1), np.arange(1, fine.shape[axis])
        lo, hi = np.take(above, first, axis=axis), np.take(above, second, axis=axis)
        f_lo, f_hi = np.take(fine, first, axis=axis), np.take(fine, second, axis=axis)
        rows, cols = np.nonzero(lo != hi)
        a_val, b_val = f_lo[rows, cols], f_hi[rows, cols]
        t = np.clip((threshold - a_val) / np.where(a_val == b_val, 1.0, b_val - a_val), 0.0, 1.0)
        r, c = rows.astype(np.float64), cols.astype(np.float64)
        if axis == 0:
            r = r + t
        else:
            c = c + t
        # fine index k is padded pixel k / upsample, i.e. pixel k / upsample - 1, centred at +0.5
        points.append(np.stack([(c / upsample - 0.5) / w, (r / upsample - 0.5) / h], axis=1))
    return np.concatenate(points)


def polygon_outline(vertices: np.ndarray, spacing: float = 2e-3) -> np.ndarray:
    """Points along a closed polygon's edges, at most `spacing` apart (unit-square coordinates)."""
    out = []
    for a, b in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / spacing)))
        t = np.arange(n)[:, None] / n
        out.append(a + t * (b - a))
    return np.concatenate(out)


def directed_hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """max over points of `a` of the distance to the nearest point of `b`."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("Hausdorff distance needs two non-empty point sets")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    worst = 0.0
    for start in range(0, len(a), 1024):
        chunk = a[start : start + 1024]
        d2 = ((chunk[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        worst = max(worst, float(d2.min(axis=1).max()))
    return float(np.sqrt(worst))


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """The symmetric Hausdorff distance between two point sets."""
    return max(directed_hausdorff(a, b), directed_hausdorff(b, a))


@dataclass(frozen=True, eq=False)
class OutlineScores:
    """Per-image outline distances to the true polygons; NaN where no polygon was detected."""

    symmetric: np.ndarray
    truth_to_output: np.ndarray
    output_to_truth: np.ndarray
    detected: np.ndarray  # bool

    def summary(self) -> dict[str, float]:
        """Detected fraction, and mean and spread of each distance over the detected images."""
        out = {"detected_fraction": float(self.detected.mean()), "count": int(self.detected.size)}
        for name in ("symmetric", "truth_to_output", "output_to_truth"):
            values = getattr(self, name)[self.detected]
            out[f"{name}_mean"] = float(values.mean()) if values.size else float("nan")
            out[f"{name}_std"] = float(values.std()) if values.size else float("nan")
            out[f"{name}_median"] = float(np.median(values)) if values.size else float("nan")
        return out


def outline_scores(
    images: np.ndarray | torch.Tensor,
    polygons: list[np.ndarray],
    channel: int = 0,
    threshold: float = 0.5,
    min_area: float = 0.01,
) -> OutlineScores:
    """Hausdorff distances between each image's extracted outline and its true polygon's outline."""
    if len(images) != len(polygons):
        raise ValueError(f"got {len(images)} images for {len(polygons)} polygons")
    n = len(polygons)
    sym, t2o, o2t = (np.full(n, np.nan) for _ in range(3))
    detected = np.zeros(n, dtype=bool)
    for i, (image, vertices) in enumerate(zip(images, polygons, strict=True)):
        outline = extract_outline(image, channel, threshold, min_area)
        if outline is None:
            continue
        truth = polygon_outline(np.asarray(vertices, dtype=np.float64))
        detected[i] = True
        t2o[i] = directed_hausdorff(truth, outline)
        o2t[i] = directed_hausdorff(outline, truth)
        sym[i] = max(t2o[i], o2t[i])
    return OutlineScores(symmetric=sym, truth_to_output=t2o, output_to_truth=o2t, detected=detected)
