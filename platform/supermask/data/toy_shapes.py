"""The toy shape-deformation dataset for image translation (GANimorph), generated from a seed.

Domain X: a centred regular polygon (3-7 sides, first vertex up) over a square grid of dots that is
deformed by a random 2x2 matrix h and displaced by d. Domain Y: the polygon deformed by the same h
and displaced by the same d, over the regular, centred grid. The grid's global deformation is the
only clue to the polygon a translation must draw, so shape change is required and measurable.

h = I + E with each entry of E uniform in [-max_deform, max_deform], determinant above 0.3 and
condition number at most `max_condition`; every dot and polygon vertex stays inside the image. Near
the identity, h is the only matrix in the family that explains a grid or a polygon (the square
grid's and the polygon's own symmetries map it far outside it), so both directions are well posed.

Coordinates are in the unit square: x to the right, y down, (0, 0) the image's top-left corner.
Images are float32 (3, R, R) in [0, 1]: white background, black dots, the polygon in pure red on
top, anti-aliased by supersampling. The polygon's own colour lets its outline be read from any image
(`supermask.core.translation.metrics.extract_outline` with channel `POLYGON_CHANNEL`).

Sample `index` of a split is a pure function of (config, split, index). Training stays unpaired:
X images come from split `train_x` and Y images from `train_y`, independent draws. Splits `test`
(and `val`, for tuning) keep pairs (X and Y of one shape) with their polygons, for evaluation only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from supermask.core.fields import check_fields, in_range

POLYGON_RGB = (1.0, 0.0, 0.0)
DOT_RGB = (0.0, 0.0, 0.0)
BACKGROUND_RGB = (1.0, 1.0, 1.0)
POLYGON_CHANNEL = 0  # the polygon is the only thing whose red exceeds its green and blue
DOMAINS = ("x", "y")
SPLITS = {"train_x": 1, "train_y": 2, "test": 3, "val": 4}  # salts: each split draws its own shapes
_MAX_TRIES = 1000


@dataclass(frozen=True)
class ToyShapesConfig:
    """How toy shapes are drawn; every length is in unit-square coordinates."""

    resolution: int = field(default=32, metadata=in_range(8))
    seed: int = field(default=0, metadata=in_range(0))
    min_sides: int = field(default=3, metadata=in_range(3))
    max_sides: int = field(default=7, metadata=in_range(3))
    radius: float = field(default=0.2, metadata=in_range(0.0, 0.5, lo_open=True))  # circumradius
    max_deform: float = field(default=0.35, metadata=in_range(0.0, 0.9))  # entries of h - I
    max_condition: float = field(default=2.5, metadata=in_range(1.0))
    max_shift: float = field(default=0.1, metadata=in_range(0.0, 0.4))  # each coordinate of d
    grid_dots: int = field(default=5, metadata=in_range(2))  # dots per side of the grid
    grid_half_width: float = field(default=0.28, metadata=in_range(0.0, 0.5, lo_open=True))
    dot_radius: float = field(default=0.025, metadata=in_range(0.0, 0.2, lo_open=True))
    margin: float = field(default=0.04, metadata=in_range(0.0, 0.25))  # dots and vertices stay inside
    supersample: int = field(default=4, metadata=in_range(1, 16))

    def __post_init__(self) -> None:
        check_fields(self, "toy_shapes.")
        if self.max_sides < self.min_sides:
            raise ValueError(
                f"toy_shapes.max_sides: got {self.max_sides}; must be >= min_sides ({self.min_sides})"
            )


@dataclass(frozen=True, eq=False)
class ToyShape:
    """One pair's parameters: the polygon's sides and radius, the deformation h and displacement d."""

    sides: int
    radius: float
    h: np.ndarray  # (2, 2)
    d: np.ndarray  # (2,)

    def regular_polygon(self) -> np.ndarray:
        """Domain X's polygon: (sides, 2) vertices, centred, first vertex straight up."""
        angles = 2.0 * np.pi * np.arange(self.sides) / self.sides
        return np.stack([0.5 + self.radius * np.sin(angles), 0.5 - self.radius * np.cos(angles)], axis=1)

    def deformed_polygon(self) -> np.ndarray:
        """Domain Y's polygon: the regular one deformed by h about the centre and displaced by d."""
        return 0.5 + (self.regular_polygon() - 0.5) @ self.h.T + self.d

    def polygon(self, domain: str) -> np.ndarray:
        """The polygon drawn in `domain` ('x' or 'y')."""
        _check_domain(domain)
        return self.regular_polygon() if domain == "x" else self.deformed_polygon()


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"domain: got {domain!r}; allowed: {', '.join(DOMAINS)}")


def _grid(config: ToyShapesConfig) -> np.ndarray:
    """The regular grid's dot centres relative to the image centre, (grid_dots**2, 2)."""
    ticks = np.linspace(-config.grid_half_width, config.grid_half_width, config.grid_dots)
    gx, gy = np.meshgrid(ticks, ticks)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def dot_centres(shape: ToyShape, domain: str, config: ToyShapesConfig) -> np.ndarray:
    """Where the grid's dots are drawn in `domain`: deformed and displaced in X, regular in Y."""
    _check_domain(domain)
    grid = _grid(config)
    return 0.5 + (grid @ shape.h.T + shape.d if domain == "x" else grid)


def draw_shape(config: ToyShapesConfig, rng: np.random.Generator) -> ToyShape:
    """Draw one shape's parameters, redrawing h and d until everything lies inside the image."""
    sides = int(rng.integers(config.min_sides, config.max_sides + 1))
    lo, hi = config.margin, 1.0 - config.margin
    for _ in range(_MAX_TRIES):
        h = np.eye(2) + rng.uniform(-config.max_deform, config.max_deform, size=(2, 2))
        d = rng.uniform(-config.max_shift, config.max_shift, size=2)
        if np.linalg.det(h) <= 0.3 or np.linalg.cond(h) > config.max_condition:
            continue
        shape = ToyShape(sides=sides, radius=config.radius, h=h, d=d)
        points = np.concatenate([shape.deformed_polygon(), dot_centres(shape, "x", config)])
        if points.min() >= lo and points.max() <= hi:
            return shape
    raise ValueError(
        f"no deformation within {_MAX_TRIES} draws keeps the grid and polygon inside the image; "
        "lower toy_shapes.max_deform, max_shift, grid_half_width or radius"
    )


def _convex_coverage(vertices: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Boolean (S, S) map of the sample points (pixel centres `coords`) inside a convex polygon."""
    x = coords[None, :]
    y = coords[:, None]
    edges = np.roll(vertices, -1, axis=0) - vertices
    area2 = float(
        np.sum(vertices[:, 0] * np.roll(vertices[:, 1], -1) - np.roll(vertices[:, 0], -1) * vertices[:, 1])
    )
    sign = 1.0 if area2 >= 0 else -1.0
    inside = np.ones((coords.size, coords.size), dtype=bool)
    for (vx, vy), (ex, ey) in zip(vertices, edges, strict=True):
        inside &= sign * (ex * (y - vy) - ey * (x - vx)) >= 0.0
    return inside


def render(polygon: np.ndarray, dots: np.ndarray, config: ToyShapesConfig) -> np.ndarray:
    """Rasterise dots and a filled polygon on white: float32 (3, R, R), anti-aliased by supersampling."""
    ss = config.supersample
    size = config.resolution * ss
    coords = (np.arange(size) + 0.5) / size
    poly = _convex_coverage(polygon, coords).astype(np.float32)
    dot = np.zeros((size, size), dtype=np.float32)
    reach = config.dot_radius * size
    for cx, cy in dots * size:  # each dot only touches a small window
        r0, r1 = max(0, math.floor(cy - reach)), min(size, math.ceil(cy + reach) + 1)
        c0, c1 = max(0, math.floor(cx - reach)), min(size, math.ceil(cx + reach) + 1)
        if r0 >= r1 or c0 >= c1:
            continue
        rows = np.arange(r0, r1)[:, None] + 0.5
        cols = np.arange(c0, c1)[None, :] + 0.5
        hit = (rows - cy) ** 2 + (cols - cx) ** 2 <= reach**2
        dot[r0:r1, c0:c1] = np.maximum(dot[r0:r1, c0:c1], hit)
    image = np.empty((3, size, size), dtype=np.float32)
    for c in range(3):
        channel = BACKGROUND_RGB[c] * (1.0 - dot) + DOT_RGB[c] * dot
        image[c] = channel * (1.0 - poly) + POLYGON_RGB[c] * poly
    r = config.resolution
    return image.reshape(3, r, ss, r, ss).mean(axis=(2, 4))


class ToyShapes:
    """The toy dataset at one resolution and seed: every image a pure function of (split, index)."""

    def __init__(self, config: ToyShapesConfig | None = None, **overrides: object) -> None:
        base = config or ToyShapesConfig()
        self.config = ToyShapesConfig(**{**base.__dict__, **overrides}) if overrides else base

    def shape(self, split: str, index: int) -> ToyShape:
        """The parameters of sample `index` of `split` ('train_x', 'train_y' or 'test')."""
        if split not in SPLITS:
            raise ValueError(f"split: got {split!r}; allowed: {', '.join(SPLITS)}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index: got {index!r}; must be a whole number >= 0")
        rng = np.random.default_rng([self.config.seed, SPLITS[split], int(index)])
        return draw_shape(self.config, rng)

    def image(self, shape: ToyShape, domain: str) -> np.ndarray:
        """`shape` drawn as domain `domain` ('x' or 'y'): float32 (3, R, R) in [0, 1]."""
        return render(shape.polygon(domain), dot_centres(shape, domain, self.config), self.config)

    def images(self, split: str, domain: str, count: int, start: int = 0) -> np.ndarray:
        """Samples start .. start+count-1 of `split` drawn as `domain`: float32 (count, 3, R, R)."""
        return np.stack([self.image(self.shape(split, i), domain) for i in range(start, start + count)])

    def unpaired(self, count: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Training images: X from split train_x and Y from train_y, drawn independently (unpaired)."""
        return self.images("train_x", "x", count, start), self.images("train_y", "y", count, start)

    def test_pairs(
        self, count: int, start: int = 0, split: str = "test"
    ) -> tuple[np.ndarray, np.ndarray, list[ToyShape]]:
        """Held-out pairs for evaluation only (split 'test', or 'val' for tuning): X and Y images of
        the same shapes, and the shapes."""
        if split not in ("test", "val"):
            raise ValueError(f"split: got {split!r}; held-out pairs come from 'test' or 'val'")
        shapes = [self.shape(split, i) for i in range(start, start + count)]
        xs = np.stack([self.image(s, "x") for s in shapes])
        ys = np.stack([self.image(s, "y") for s in shapes])
        return xs, ys, shapes
