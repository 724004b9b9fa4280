"""The toy shape-deformation dataset, the unpaired folder loader and the outline metrics."""

import numpy as np
import pytest
import torch
from PIL import Image

from supermask.core.translation.metrics import (
    directed_hausdorff,
    extract_outline,
    hausdorff,
    largest_component,
    outline_scores,
    polygon_outline,
)
from supermask.data.toy_shapes import POLYGON_CHANNEL, ToyShapes, ToyShapesConfig, dot_centres
from supermask.data.unpaired_folders import load_unpaired_folders


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_images_have_the_resolution_and_the_three_colours(resolution):
    data = ToyShapes(resolution=resolution)
    x, y = data.unpaired(2)
    assert x.shape == y.shape == (2, 3, resolution, resolution)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    for img in (x[0], y[0]):
        pixels = img.reshape(3, -1).T
        assert np.any(np.all(pixels == [1.0, 0.0, 0.0], axis=1))  # pure red polygon
        assert np.any(np.all(pixels == [1.0, 1.0, 1.0], axis=1))  # white background
        assert np.any(np.all(pixels == [0.0, 0.0, 0.0], axis=1)) or resolution == 32  # dots (grey at 32 px)


def test_samples_are_a_pure_function_of_seed_split_and_index():
    a, b = ToyShapes(resolution=32, seed=3), ToyShapes(resolution=32, seed=3)
    np.testing.assert_array_equal(a.images("train_x", "x", 3, start=5), b.images("train_x", "x", 3, start=5))
    np.testing.assert_array_equal(
        a.images("train_x", "x", 1, start=6)[0], b.images("train_x", "x", 3, start=5)[1]
    )
    other = ToyShapes(resolution=32, seed=4)
    assert not np.array_equal(a.images("test", "y", 1), other.images("test", "y", 1))
    # Training is unpaired: the X and Y training splits draw different shapes.
    sx, sy = a.shape("train_x", 0), a.shape("train_y", 0)
    assert not np.allclose(sx.h, sy.h)
    # The same shape at another resolution has the same geometry.
    np.testing.assert_array_equal(ToyShapes(resolution=64, seed=3).shape("test", 2).h, a.shape("test", 2).h)


def test_x_has_the_regular_polygon_and_deformed_grid_y_the_opposite():
    config = ToyShapesConfig(resolution=64)
    shape = ToyShapes(config).shape("test", 0)
    regular = shape.regular_polygon()
    radii = np.linalg.norm(regular - 0.5, axis=1)
    np.testing.assert_allclose(radii, config.radius)
    np.testing.assert_allclose(regular[0], [0.5, 0.5 - config.radius])  # first vertex straight up
    np.testing.assert_allclose(shape.deformed_polygon(), 0.5 + (regular - 0.5) @ shape.h.T + shape.d)
    regular_grid = dot_centres(shape, "y", config) - 0.5
    np.testing.assert_allclose(dot_centres(shape, "x", config), 0.5 + regular_grid @ shape.h.T + shape.d)
    assert 3 <= shape.sides <= 7
    assert not np.allclose(shape.h, np.eye(2))


def test_every_sides_count_appears_and_everything_stays_inside():
    config = ToyShapesConfig(resolution=32)
    data = ToyShapes(config)
    shapes = [data.shape("train_x", i) for i in range(60)]
    assert {s.sides for s in shapes} == {3, 4, 5, 6, 7}
    for s in shapes:
        pts = np.concatenate([s.deformed_polygon(), dot_centres(s, "x", config)])
        assert pts.min() >= config.margin and pts.max() <= 1 - config.margin
        assert np.linalg.cond(s.h) <= config.max_condition


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="toy_shapes.max_sides"):
        ToyShapesConfig(min_sides=5, max_sides=4)
    with pytest.raises(ValueError, match="toy_shapes.resolution"):
        ToyShapesConfig(resolution=4)
    with pytest.raises(ValueError, match="split"):
        ToyShapes().shape("validation", 0)


def test_hausdorff_is_zero_for_the_truth_and_measures_a_shift():
    shape = ToyShapes(resolution=64).shape("test", 1)
    truth = polygon_outline(shape.deformed_polygon())
    assert hausdorff(truth, truth) == 0.0
    image = ToyShapes(resolution=64).image(shape, "y")
    outline = extract_outline(image, POLYGON_CHANNEL)
    assert hausdorff(outline, outline) == 0.0
    scores = outline_scores(np.stack([image]), [shape.deformed_polygon()])
    assert scores.detected.all()
    shifted = polygon_outline(shape.deformed_polygon() + [0.1, 0.0])
    assert hausdorff(truth, shifted) == pytest.approx(0.1, abs=1e-9)
    # One-sided: a polygon inside a larger copy of itself.
    big = polygon_outline(0.5 + 2.0 * (shape.regular_polygon() - 0.5))
    small = polygon_outline(shape.regular_polygon())
    r = shape.radius
    assert directed_hausdorff(big, small) == pytest.approx(r, abs=2e-3)
    assert directed_hausdorff(small, big) == pytest.approx(r * np.cos(np.pi / shape.sides), abs=2e-3)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_outline_extraction_recovers_a_drawn_polygon_within_one_pixel(resolution):
    data = ToyShapes(resolution=resolution)
    pixel = 1.0 / resolution
    for i in range(6):
        shape = data.shape("test", i)
        for domain in ("x", "y"):
            vertices = shape.polygon(domain)
            outline = extract_outline(data.image(shape, domain), POLYGON_CHANNEL)
            truth = polygon_outline(vertices)
            # Every extracted point lies within half a pixel of the true outline ...
            assert directed_hausdorff(outline, truth) <= 0.5 * pixel
            # ... and the whole outline is recovered within a pixel (the 0.5-coverage contour cuts
            # an acute tip of a deformed polygon a little shorter: at most 1.25 px measured here).
            limit = pixel if domain == "x" else 1.25 * pixel
            assert hausdorff(outline, truth) <= limit, (i, domain, hausdorff(outline, truth) / pixel)


def test_no_polygon_is_detected_in_an_image_without_red_and_only_the_largest_blob_counts():
    blank = np.ones((3, 32, 32), dtype=np.float32)
    assert extract_outline(blank) is None
    image = blank.copy()
    image[:, 4:14, 4:14] = np.array([1.0, 0.0, 0.0])[:, None, None]  # a 10 x 10 red square
    image[:, 25:27, 25:27] = np.array([1.0, 0.0, 0.0])[:, None, None]  # a small speck elsewhere
    outline = extract_outline(image)
    assert outline[:, 0].min() == pytest.approx(4 / 32, abs=1e-9)  # the square's edge, exactly
    assert outline[:, 0].max() == pytest.approx(14 / 32, abs=1e-9)
    mask = np.zeros((5, 5), dtype=bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours are not 4-connected
    assert largest_component(mask).sum() == 1
    scores = outline_scores(np.stack([blank, image]), [np.zeros((3, 2)), np.zeros((3, 2))])
    assert scores.detected.tolist() == [False, True]
    assert scores.summary()["detected_fraction"] == 0.5


def test_unpaired_folders_load_sorted_resized_and_cropped(tmp_path):
    for split in ("trainA", "trainB"):
        (tmp_path / split).mkdir()
        for k in range(3):
            img = np.zeros((20, 40, 3), dtype=np.uint8)
            img[..., 0] = 50 * k
            img[:, 10:30] = 255 if split == "trainA" else 0  # a white centre square in A, black in B
            Image.fromarray(img).save(tmp_path / split / f"{k}.png")
    a, b = load_unpaired_folders(tmp_path, resolution=16)
    assert a.shape == b.shape == (3, 3, 16, 16)
    assert a.dtype == torch.float32
    # The 20 x 20 centre of a 20 x 40 image: white in A, black in B (antialiasing blurs the outer columns).
    assert torch.allclose(a[1][:, :, 1:-1], torch.ones(3, 16, 14), atol=1e-5)
    assert torch.allclose(b[2][:, :, 1:-1], torch.zeros(3, 16, 14), atol=1e-5)
    assert a[2, 0, 0, 0].item() == pytest.approx(a[2, 0, 0, -1].item())  # cropped in the middle
    assert a[2, 0, 0, 0].item() > a[0, 0, 0, 0].item()  # files in name order: 2.png is redder at the edge
    with pytest.raises(FileNotFoundError, match="trainA/ trainB/ testA/ testB/"):
        load_unpaired_folders(tmp_path, resolution=16, split="test")
