"""The scenes dataset: factor statistics against binomial/chi-square tolerances, and the rendered
geometry against the recorded factors (independent inverse warp, closed-form areas)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.data.scenes import (
    BACKGROUND_NAMES,
    COLOR_NAMES,
    SHAPE_NAMES,
    make_scenes,
    render_scenes,
    scenes_splits,
)

Z = 4.0
"""Standard deviations allowed for frequency checks; the data are seeded, so a pass is stable."""
SIZE = 32


@pytest.fixture(scope="module")
def layers():
    return render_scenes(2000, seed=11)


def binomial_ok(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= Z * math.sqrt(n * p * (1 - p)) + 1e-9


def chi_square_independence(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Pearson's statistic for the contingency table of two categorical samples, and its
    critical value at about z = 4 (Wilson-Hilferty approximation of the chi-square quantile)."""
    table = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    table.index_put_((a, b), torch.ones(a.shape[0], dtype=torch.float64), accumulate=True)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    df = (table.shape[0] - 1) * (table.shape[1] - 1)
    critical = df * (1 - 2 / (9 * df) + Z * math.sqrt(2 / (9 * df))) ** 3
    return statistic, critical


# ---------------------------------------------------------------- layout and determinism


@pytest.mark.parametrize("num_classes,image_size", [(10, 32), (3, 16)])
def test_shapes_dtypes_and_ranges(num_classes, image_size):
    data = make_scenes(300, seed=0, num_classes=num_classes, image_size=image_size)
    n = 300
    assert data.images.dtype == torch.uint8 and data.images.shape == (n, 3, image_size, image_size)
    assert data.labels.dtype == torch.int64 and data.labels.shape == (n,)
    assert data.classes == list(SHAPE_NAMES[:num_classes])
    assert set(data.labels.tolist()) == set(range(num_classes))
    assert data.factor_names == {"background": list(BACKGROUND_NAMES), "color": list(COLOR_NAMES)}
    assert len(COLOR_NAMES) == 8 and len(BACKGROUND_NAMES) == 6 and BACKGROUND_NAMES[0] == "sky"
    for name in ("background", "color"):
        assert data.factors[name].dtype == torch.int64 and data.factors[name].shape == (n,)
        assert 0 <= int(data.factors[name].min()) and int(data.factors[name].max()) < len(data.factor_names[name])
    for name in ("x", "y", "scale", "rotation"):
        assert data.factors[name].is_floating_point() and data.factors[name].shape == (n,)
    scale = data.factors["scale"]
    assert 0.4 <= float(scale.min()) and float(scale.max()) <= 0.8
    assert float(scale.max() - scale.min()) > 0.3
    assert float(data.factors["rotation"].abs().max()) <= math.pi / 8
    assert float(data.factors["rotation"].std()) > 0.05
    for name in ("x", "y"):
        assert float(data.factors[name].min()) > 0 and float(data.factors[name].max()) < image_size


def test_same_seed_same_data_and_different_seed_different_data():
    first, again, other = make_scenes(200, seed=5), make_scenes(200, seed=5), make_scenes(200, seed=6)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    for name in first.factors:
        assert torch.equal(first.factors[name], again.factors[name])
    assert not torch.equal(first.images, other.images)
    assert (first.images != other.images).flatten(1).any(1).all()
    assert not torch.equal(first.factors["x"], other.factors["x"])


def test_generation_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    make_scenes(50, seed=1)
    assert torch.equal(torch.rand(5), expected)


def test_chunk_size_does_not_change_the_result():
    whole = render_scenes(150, seed=3, chunk_size=4096)
    pieces = render_scenes(150, seed=3, chunk_size=13)
    assert torch.equal(whole.dataset.images, pieces.dataset.images)
    assert torch.equal(whole.object_masks, pieces.object_masks)
    assert torch.equal(whole.backgrounds, pieces.backgrounds)
    for name in whole.dataset.factors:
        assert torch.equal(whole.dataset.factors[name], pieces.dataset.factors[name])


def test_render_scenes_matches_make_scenes():
    layered = render_scenes(120, seed=9, shared_p=0.4)
    plain = make_scenes(120, seed=9, shared_p=0.4)
    assert torch.equal(layered.dataset.images, plain.images)
    assert layered.object_masks.shape == (120, SIZE, SIZE) and layered.backgrounds.shape == (120, 3, SIZE, SIZE)
    outside = layered.object_masks[:, None].expand_as(plain.images) == 0
    assert torch.equal(plain.images[outside], layered.backgrounds[outside])


def test_splits_differ_and_pass_options_through():
    train, test = scenes_splits(num_train=120, num_test=80, seed=0, num_classes=4)
    assert len(train) == 120 and len(test) == 80
    assert train.classes == test.classes == list(SHAPE_NAMES[:4])
    assert not torch.equal(train.images[:80], test.images)
    assert not torch.equal(train.factors["x"][:80], test.factors["x"])
    again, _ = scenes_splits(num_train=120, num_test=80, seed=0, num_classes=4)
    assert torch.equal(train.images, again.images)
    other, _ = scenes_splits(num_train=120, num_test=80, seed=1, num_classes=4)
    assert not torch.equal(train.images, other.images)


# ---------------------------------------------------------------- factor statistics


@pytest.mark.parametrize("shared_p", [0.0, 0.3, 0.7, 1.0])
def test_shared_background_share_and_the_other_textures_uniform(shared_p):
    n = 1500
    background = make_scenes(n, seed=2, shared_p=shared_p, image_size=16).factors["background"]
    shared = int((background == 0).sum())
    assert binomial_ok(shared, n, shared_p)
    others = background[background != 0]
    for texture in range(1, len(BACKGROUND_NAMES)):
        assert binomial_ok(int((others == texture).sum()), others.numel(), 1 / 5)


def test_class_balance(layers):
    labels, n = layers.dataset.labels, len(layers.dataset)
    for k in range(10):
        assert binomial_ok(int((labels == k).sum()), n, 1 / 10)


def test_nuisance_factors_independent_of_class(layers):
    data = layers.dataset
    for name in ("color", "background"):
        statistic, critical = chi_square_independence(data.labels, data.factors[name])
        assert statistic < critical, name
    for name in ("x", "y", "scale", "rotation"):
        values = data.factors[name].double()
        for k in range(10):
            group = values[data.labels == k]
            standard_error = values.std() / math.sqrt(group.numel())
            assert abs(float(group.mean() - values.mean())) < Z * float(standard_error), (name, k)


def test_color_tied_ties_colour_to_class_and_keeps_the_rest():
    tied = make_scenes(800, seed=4, color_tied=True)
    free = make_scenes(800, seed=4)
    assert torch.equal(tied.factors["color"], tied.labels % len(COLOR_NAMES))
    statistic, critical = chi_square_independence(tied.labels, tied.factors["color"])
    assert statistic > critical
    for name in ("background", "x", "y", "scale", "rotation"):
        assert torch.equal(tied.factors[name], free.factors[name])


# ---------------------------------------------------------------- rendering


def test_objects_lie_inside_the_frame(layers):
    masks, data = layers.object_masks, layers.dataset
    assert masks.min() >= 0 and masks.max() <= 1
    border = torch.ones(SIZE, SIZE, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert not (masks[:, border] > 0).any()
    assert (masks.flatten(1).sum(1) > 5).all()
    centre = torch.arange(SIZE, dtype=torch.float32) + 0.5
    distance = torch.sqrt(
        (centre[None, None, :] - data.factors["x"][:, None, None]) ** 2
        + (centre[None, :, None] - data.factors["y"][:, None, None]) ** 2
    )
    reach = data.factors["scale"][:, None, None] * SIZE / 2 + 1.0
    assert not ((masks > 0) & (distance > reach)).any()


def test_sky_images_are_never_pixel_equal():
    layered = render_scenes(600, seed=8, shared_p=1.0)
    assert torch.unique(layered.backgrounds.flatten(1), dim=0).shape[0] == 600
    assert torch.unique(layered.dataset.images.flatten(1), dim=0).shape[0] == 600


def test_backgrounds_have_their_colours(layers):
    mean = layers.backgrounds.double().mean((2, 3))
    background = layers.dataset.factors["background"]
    sky, grass = mean[background == 0], mean[background == 1]
    assert (sky[:, 2] > sky[:, 0] + 40).all()
    assert (grass[:, 1] > grass[:, 0] + 20).all() and (grass[:, 1] > grass[:, 2] + 20).all()
    per_image_spread = layers.backgrounds.double().flatten(1).std(1)
    assert (per_image_spread[background != 0] > 5).all()


def canonical_masks(masks: torch.Tensor, factors: dict, grid: int = 32) -> torch.Tensor:
    """Each object mask warped back into the object's own frame, [N, grid, grid] over
    u, v in [-1, 1] (u right, v up, unit = scale * S / 2), by inverting the recorded pose."""
    cells = torch.linspace(-1 + 1 / grid, 1 - 1 / grid, grid)
    u, v = cells[None, None, :], -cells[None, :, None]
    radius = (factors["scale"] * SIZE / 2)[:, None, None]
    cos, sin = torch.cos(factors["rotation"])[:, None, None], torch.sin(factors["rotation"])[:, None, None]
    column = factors["x"][:, None, None] + radius * (cos * u - sin * v)
    row = factors["y"][:, None, None] - radius * (sin * u + cos * v)
    sample_at = torch.stack([2 * column / SIZE - 1, 2 * row / SIZE - 1], dim=-1)
    return F.grid_sample(masks[:, None], sample_at, align_corners=False)[:, 0]


def reference_shapes(grid: int = 32) -> dict[str, torch.Tensor]:
    """The intended outlines, written as plain inequalities in the object's frame."""
    cells = torch.linspace(-1 + 1 / grid, 1 - 1 / grid, grid)
    u, v = cells[None, :], -cells[:, None]
    r = torch.sqrt(u**2 + v**2)

    def box(a, b):
        return (u.abs() < a) & (v.abs() < b)

    return {
        "circle": r < 0.92,
        "square": box(0.66, 0.66),
        "triangle": (v > -0.475) & (v < 0.95 - math.sqrt(3) * u.abs()),
        "diamond": u.abs() / 0.62 + v.abs() / 0.95 < 1,
        "cross": box(0.9, 0.27) | box(0.27, 0.9),
        "ring": (r > 0.47) & (r < 0.93),
        "horizontal bar": box(0.9, 0.3),
        "vertical bar": box(0.3, 0.9),
    }


def test_masks_match_the_intended_shapes_in_the_object_frame(layers):
    """The anti-aliased edge and the resampling blur the outline symmetrically, so the class
    mean's half-level set is the outline; a 5 % size error would bring the overlap to ~0.9."""
    canonical = canonical_masks(layers.object_masks, layers.dataset.factors)
    labels = layers.dataset.labels
    for name, reference in reference_shapes().items():
        drawn = canonical[labels == SHAPE_NAMES.index(name)].mean(0) > 0.5
        intersection_over_union = float((drawn & reference).sum() / (drawn | reference).sum())
        assert intersection_over_union > 0.95, name


def test_mask_areas_match_closed_form(layers):
    area_in_radius_units = {
        "circle": math.pi * 0.92**2,
        "square": 1.32**2,
        "triangle": 3 * math.sqrt(3) / 4 * 0.95**2,
        "diamond": 2 * 0.62 * 0.95,
        "cross": 2 * (1.8 * 0.54) - 0.54**2,
        "ring": math.pi * (0.93**2 - 0.47**2),
        "horizontal bar": 1.8 * 0.6,
        "vertical bar": 1.8 * 0.6,
    }
    radius = layers.dataset.factors["scale"] * SIZE / 2
    area = layers.object_masks.flatten(1).sum(1)
    for name, unit_area in area_in_radius_units.items():
        chosen = layers.dataset.labels == SHAPE_NAMES.index(name)
        expected = unit_area * radius[chosen] ** 2
        relative_error = (area[chosen] - expected).abs() / expected
        assert float(relative_error.max()) < 0.03, name


def test_the_ten_shapes_are_distinguishable(layers):
    canonical = canonical_masks(layers.object_masks, layers.dataset.factors).flatten(1)
    labels = layers.dataset.labels
    train, held_out = torch.arange(len(labels)) < 1000, torch.arange(len(labels)) >= 1000
    class_means = torch.stack([canonical[train & (labels == k)].mean(0) for k in range(10)])
    separation = torch.cdist(class_means, class_means) / math.sqrt(canonical.shape[1])
    assert float(separation[~torch.eye(10, dtype=torch.bool)].min()) > 0.1
    nearest = torch.cdist(canonical[held_out], class_means).argmin(1)
    assert float((nearest == labels[held_out]).float().mean()) > 0.98


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs,name,allowed",
    [
        ({"num_classes": 1}, "num_classes", "2..10"),
        ({"num_classes": 11}, "num_classes", "2..10"),
        ({"shared_p": -0.1}, "shared_p", "[0, 1]"),
        ({"shared_p": 1.5}, "shared_p", "[0, 1]"),
        ({"num_images": 0}, "num_images", ">= 1"),
        ({"image_size": 15}, "image_size", ">= 16"),
        ({"chunk_size": 0}, "chunk_size", ">= 1"),
    ],
)
def test_bad_arguments_raise_config_error_naming_them(kwargs, name, allowed):
    arguments = {"num_images": 10, "seed": 0, **kwargs}
    with pytest.raises(ConfigError) as error:
        make_scenes(**arguments)
    assert name in str(error.value) and allowed in str(error.value)
