"""Batched augmentations against torchvision.transforms.v2.functional applied image by image.

Reference checks use the same per-image parameters on float images. Colour ops, blur and flip
agree to 1e-5 (only float summation order differs). crop_resize is compared with
``resized_crop`` on the exact same integer boxes, also to 1e-5: both evaluate the same bilinear
(triangle) filter, ours as two matrix products, torchvision's as a direct gather. Probabilities
are checked by Monte-Carlo frequency over 4000 draws against p within 4 binomial standard
deviations.
"""
import math
from dataclasses import replace

import pytest
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.data.augment import (
    AugmentConfig,
    BatchAugment,
    EvalTransform,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur,
    blur_kernel_size,
    crop_resize,
    flip,
    jitter,
    rgb_to_grayscale,
    sample_crop_boxes,
)

COLOUR_TOL = 1e-5
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.247, 0.243, 0.261)


def _images(batch=12, height=16, width=16, seed=0):
    """Random float images plus rows that stress edge cases: grey pixels, saturated pixels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, height, width, generator=g)
    images[0, :, :4] = images[0, :1, :4]  # r = g = b
    images[1, :, :, :3] = 1.0
    images[2, 1] = 0.0
    images[3, :, 2:5] = torch.tensor([1.0, 1.0, 0.0]).reshape(3, 1, 1)  # max shared by r and g
    return images


def _per_image(fn, images, *params):
    return torch.stack([fn(images[i], *[float(p[i]) for p in params]) for i in range(images.shape[0])])


def test_spec_defaults():
    cfg = AugmentConfig()
    assert (cfg.crop_scale_min, cfg.crop_scale_max) == (0.08, 1.0)
    assert (cfg.crop_ratio_min, cfg.crop_ratio_max) == pytest.approx((0.75, 4 / 3))
    assert (cfg.jitter_prob, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue) == (0.8, 0.8, 0.8, 0.8, 0.2)
    assert (cfg.gray_prob, cfg.blur_prob, cfg.flip_prob) == (0.2, 0.5, 0.5)
    assert (cfg.blur_sigma_min, cfg.blur_sigma_max) == (0.1, 2.0)
    assert cfg.validate() is cfg


@pytest.mark.parametrize(
    "ours, theirs, low, high",
    [
        (adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_colour_op_matches_torchvision(ours, theirs, low, high):
    images = _images()
    factors = torch.linspace(low, high, images.shape[0])
    torch.testing.assert_close(ours(images, factors), _per_image(theirs, images, factors), rtol=0, atol=COLOUR_TOL)


def test_grayscale_matches_torchvision():
    images = _images()
    expected = torch.stack([TF.rgb_to_grayscale(im, num_output_channels=3) for im in images])
    torch.testing.assert_close(rgb_to_grayscale(images), expected, rtol=0, atol=COLOUR_TOL)


def test_jitter_is_brightness_contrast_saturation_hue_in_order():
    images = _images()
    g = torch.Generator().manual_seed(1)
    b, c, s = (torch.rand(3, images.shape[0], generator=g) * 1.6 + 0.2).unbind(0)
    h = torch.rand(images.shape[0], generator=g) * 0.4 - 0.2
    expected = torch.stack(
        [
            TF.adjust_hue(
                TF.adjust_saturation(
                    TF.adjust_contrast(TF.adjust_brightness(images[i], float(b[i])), float(c[i])), float(s[i])
                ),
                float(h[i]),
            )
            for i in range(images.shape[0])
        ]
    )
    torch.testing.assert_close(jitter(images, b, c, s, h), expected, rtol=0, atol=COLOUR_TOL)


@pytest.mark.parametrize("kernel_size", [13, 5])
def test_blur_matches_torchvision(kernel_size):
    images = _images(height=20, width=14)
    sigmas = torch.linspace(0.1, 2.0, images.shape[0])
    expected = torch.stack(
        [TF.gaussian_blur(im, [kernel_size, kernel_size], [float(s), float(s)]) for im, s in zip(images, sigmas)]
    )
    torch.testing.assert_close(blur(images, sigmas, kernel_size), expected, rtol=0, atol=COLOUR_TOL)


def test_blur_kernel_size_covers_three_sigma_and_fits_the_image():
    assert blur_kernel_size(2.0, 32) == 13
    assert blur_kernel_size(0.5, 32) == 5
    assert blur_kernel_size(2.0, 4) == 7  # reflect padding of 3 needs at least 4 pixels
    tiny = torch.rand(2, 3, 4, 4)
    assert blur(tiny, torch.tensor([1.0, 2.0]), blur_kernel_size(2.0, 4)).shape == tiny.shape


def test_flip_matches_torchvision_on_masked_images_only():
    images = _images()
    mask = torch.arange(images.shape[0]) % 3 == 0
    out = flip(images, mask)
    for i in range(images.shape[0]):
        expected = TF.horizontal_flip(images[i]) if mask[i] else images[i]
        assert torch.equal(out[i], expected)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("height, width, size", [(32, 32, 32), (40, 28, 16), (9, 13, 24)])
def test_crop_resize_matches_resized_crop_on_the_same_boxes(antialias, height, width, size):
    images = _images(batch=20, height=height, width=width)
    g = torch.Generator().manual_seed(3)
    sampled = sample_crop_boxes(16, height, width, (0.08, 1.0), (3 / 4, 4 / 3), generator=g)
    edge_cases = torch.tensor(
        [[0, 0, height, width], [0, 0, 1, 1], [height - 1, width - 1, 1, 1], [height - 3, 0, 3, width]]
    )
    boxes = torch.cat([sampled, edge_cases])
    expected = torch.stack(
        [TF.resized_crop(im, *box.tolist(), [size, size], antialias=antialias) for im, box in zip(images, boxes)]
    )
    torch.testing.assert_close(crop_resize(images, boxes, size, antialias=antialias), expected, rtol=0, atol=COLOUR_TOL)


def test_crop_boxes_lie_inside_the_image_with_allowed_area_and_ratio():
    height, width, scale, ratio = 48, 40, (0.2, 0.7), (0.6, 1.5)
    boxes = sample_crop_boxes(4000, height, width, scale, ratio, generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.double().unbind(1)
    assert boxes.dtype == torch.int64
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # h and w are rounded from exact values, so each is within 0.5 of a box that meets the ranges.
    area = height * width
    assert ((h + 0.5) * (w + 0.5) >= scale[0] * area).all()
    assert ((h - 0.5) * (w - 0.5) <= scale[1] * area).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    # positions are uniform over the free range: mean of top / (H - h) is 1/2
    free = height - h
    rel = top[free > 0] / free[free > 0]
    assert abs(rel.mean().item() - 0.5) < 4 * rel.std().item() / math.sqrt(rel.numel())


def test_crop_boxes_fall_back_to_torchvision_central_crop():
    height, width = 30, 20
    boxes = sample_crop_boxes(50, height, width, (1.0, 1.0), (2.0, 3.0), generator=torch.Generator().manual_seed(0))
    # no attempt fits (w = sqrt(600 * r) > 20); width/height = 2/3 < 2, so full width, h = round(20 / 2)
    expected = torch.tensor([(height - 10) // 2, 0, 10, width])
    assert torch.equal(boxes, expected.expand(50, 4))


def test_crop_box_distribution_matches_torchvision_random_resized_crop():
    n, height, width = 4000, 32, 32
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    ours = sample_crop_boxes(n, height, width, scale, ratio, generator=torch.Generator().manual_seed(5)).double()
    torch.manual_seed(6)
    image = torch.zeros(3, height, width)
    theirs = torch.tensor([RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)]).double()
    for name, stat in [
        ("area", lambda b: b[:, 2] * b[:, 3] / (height * width)),
        ("log aspect", lambda b: torch.log(b[:, 3] / b[:, 2])),
        ("top", lambda b: b[:, 0]),
        ("width", lambda b: b[:, 3]),
    ]:
        a, b = stat(ours), stat(theirs)
        sd = math.sqrt(a.var().item() / n + b.var().item() / n)
        assert abs(a.mean().item() - b.mean().item()) < 4 * sd, name


def _single_op_config(**on):
    off = dict(jitter_prob=0.0, gray_prob=0.0, blur_prob=0.0, flip_prob=0.0)
    off.update(crop_scale_min=1.0, crop_ratio_min=1.0, crop_ratio_max=1.0)
    return replace(AugmentConfig(), **{**off, **on})


@pytest.mark.parametrize("op, p", [("flip_prob", 0.5), ("gray_prob", 0.2), ("jitter_prob", 0.8), ("blur_prob", 0.5)])
def test_each_op_is_applied_with_its_probability(op, p):
    n, size = 4000, 8
    g = torch.Generator().manual_seed(11)
    image = 0.3 + 0.3 * torch.rand(1, 3, size, size, generator=g)
    # sigma >= 1 so that every applied blur changes the image detectably
    cfg = _single_op_config(**{op: p}, blur_sigma_min=1.0)
    augment = BatchAugment(cfg, size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    torch.manual_seed(12)
    out = augment(image.expand(n, -1, -1, -1))
    changed = (out - image).abs().flatten(1).amax(1) > 1e-4
    if op == "flip_prob":
        assert torch.allclose(out[changed], image.flip(-1).expand_as(out[changed]), atol=1e-6)
    if op == "gray_prob":
        assert torch.allclose(out[changed][:, 0], out[changed][:, 2], atol=1e-6)
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(changed.double().mean().item() - p) < 4 * sd


def test_sampled_parameters_respect_config_ranges_and_probabilities():
    cfg = AugmentConfig()
    n = 4000
    augment = BatchAugment(cfg, 32, CIFAR_MEAN, CIFAR_STD)
    params = augment.sample_params(n, 32, 32, generator=torch.Generator().manual_seed(2))
    for name, p in [("jitter_mask", 0.8), ("gray_mask", 0.2), ("blur_mask", 0.5), ("flip_mask", 0.5)]:
        freq = getattr(params, name).double().mean().item()
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n), name
    for name, low, high in [
        ("brightness_factors", 0.2, 1.8),
        ("contrast_factors", 0.2, 1.8),
        ("saturation_factors", 0.2, 1.8),
        ("hue_factors", -0.2, 0.2),
        ("blur_sigmas", 0.1, 2.0),
    ]:
        values = getattr(params, name)
        assert values.min() >= low and values.max() <= high, name
        assert abs(values.mean().item() - (low + high) / 2) < 4 * (high - low) / math.sqrt(12 * n), name


def _reference_view(image, params, i, size, kernel_size):
    """One view of one float image with torchvision kernels, following the same choices."""
    x = TF.resized_crop(image, *params.boxes[i].tolist(), [size, size], antialias=True)
    if params.jitter_mask[i]:
        x = TF.adjust_brightness(x, float(params.brightness_factors[i]))
        x = TF.adjust_contrast(x, float(params.contrast_factors[i]))
        x = TF.adjust_saturation(x, float(params.saturation_factors[i]))
        x = TF.adjust_hue(x, float(params.hue_factors[i]))
    if params.gray_mask[i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if params.blur_mask[i]:
        sigma = float(params.blur_sigmas[i])
        x = TF.gaussian_blur(x, [kernel_size, kernel_size], [sigma, sigma])
    if params.flip_mask[i]:
        x = TF.horizontal_flip(x)
    return TF.normalize(x, list(CIFAR_MEAN), list(CIFAR_STD))


def test_forward_equals_torchvision_pipeline_with_the_same_choices():
    batch, size = 48, 24
    images = (torch.rand(batch, 3, 30, 30, generator=torch.Generator().manual_seed(4)) * 255).to(torch.uint8)
    augment = BatchAugment(AugmentConfig(), size, CIFAR_MEAN, CIFAR_STD)
    torch.manual_seed(7)
    params = augment.sample_params(batch, 30, 30)
    torch.manual_seed(7)
    out = augment(images)
    expected = torch.stack(
        [_reference_view(images[i].float() / 255, params, i, size, augment.kernel_size) for i in range(batch)]
    )
    # outputs are divided by std ~ 0.25, so the 1e-5 per-op tolerance becomes ~4e-5
    torch.testing.assert_close(out, expected, rtol=0, atol=5e-5)
    assert params.jitter_mask.any() and params.gray_mask.any() and params.blur_mask.any() and params.flip_mask.any()


def test_output_shape_dtype_and_normalisation_of_a_constant_image():
    values = torch.tensor([200, 90, 17], dtype=torch.uint8)
    images = values.reshape(1, 3, 1, 1).expand(16, 3, 20, 24).contiguous()
    augment = BatchAugment(replace(AugmentConfig(), jitter_prob=0.0, gray_prob=0.0), 32, CIFAR_MEAN, CIFAR_STD)
    out = augment(images)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    mean, std = torch.tensor(CIFAR_MEAN, dtype=torch.float64), torch.tensor(CIFAR_STD, dtype=torch.float64)
    expected = (values.double() / 255 - mean) / std
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)).double(), expected, rtol=0, atol=1e-5)
    assert out.std(dim=(0, 2, 3)).max() < 1e-5


def test_uint8_and_float_inputs_give_the_same_view():
    images = (torch.rand(8, 3, 32, 32) * 255).to(torch.uint8)
    augment = BatchAugment(AugmentConfig(), 32, CIFAR_MEAN, CIFAR_STD)
    torch.manual_seed(3)
    from_uint8 = augment(images)
    torch.manual_seed(3)
    from_float = augment(images.float() / 255)
    torch.testing.assert_close(from_uint8, from_float, rtol=0, atol=1e-5)


def test_seeded_views_repeat_and_two_calls_differ():
    images = (torch.rand(16, 3, 32, 32) * 255).to(torch.uint8)
    augment = BatchAugment(AugmentConfig(), 32, CIFAR_MEAN, CIFAR_STD)
    torch.manual_seed(123)
    first, second = augment(images), augment(images)
    torch.manual_seed(123)
    assert torch.equal(augment(images), first)
    assert torch.equal(augment(images), second)
    assert not torch.allclose(first, second)
    state = torch.get_rng_state()
    third = augment(images)
    torch.set_rng_state(state)
    assert torch.equal(augment(images), third)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(augment(images, generator=g1), augment(images, generator=g2))


@pytest.mark.parametrize("height, width", [(32, 32), (48, 40)])
def test_eval_transform_normalises_and_resizes_only_when_needed(height, width):
    images = (torch.rand(4, 3, height, width) * 255).to(torch.uint8)
    out = EvalTransform(32, CIFAR_MEAN, CIFAR_STD)(images)
    x = images.float() / 255
    if (height, width) != (32, 32):
        x = TF.resize(x, [32, 32], antialias=True)
    torch.testing.assert_close(out, TF.normalize(x, list(CIFAR_MEAN), list(CIFAR_STD)), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "key, value",
    [
        ("gray_prob", 1.5),
        ("flip_prob", -0.1),
        ("jitter_prob", float("nan")),
        ("crop_scale_min", 0.0),
        ("crop_scale_max", 1.2),
        ("crop_ratio_min", 0.0),
        ("brightness", -0.5),
        ("hue", 0.6),
        ("blur_sigma_min", 0.0),
        ("blur_prob", "half"),
    ],
)
def test_validate_names_the_bad_key(key, value):
    with pytest.raises(ConfigError, match=rf"^data\.augment\.{key}=.* is not allowed; allowed: "):
        replace(AugmentConfig(), **{key: value}).validate()


@pytest.mark.parametrize(
    "changes, key",
    [
        (dict(crop_scale_min=0.6, crop_scale_max=0.5), "crop_scale_max"),
        (dict(crop_ratio_min=2.0, crop_ratio_max=1.0), "crop_ratio_max"),
        (dict(blur_sigma_min=3.0, blur_sigma_max=2.0), "blur_sigma_max"),
    ],
)
def test_validate_rejects_inverted_ranges(changes, key):
    with pytest.raises(ConfigError, match=rf"^train\.views\.{key}="):
        replace(AugmentConfig(), **changes).validate(prefix="train.views")


def test_batch_augment_validates_its_config():
    with pytest.raises(ConfigError, match=r"data\.augment\.gray_prob=1.5 is not allowed; allowed: \[0, 1\]"):
        BatchAugment(replace(AugmentConfig(), gray_prob=1.5), 32, CIFAR_MEAN, CIFAR_STD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_view_matches_cpu_for_the_same_choices():
    images = (torch.rand(32, 3, 32, 32) * 255).to(torch.uint8)
    augment = BatchAugment(AugmentConfig(), 32, CIFAR_MEAN, CIFAR_STD)
    params = augment.sample_params(32, 32, 32, generator=torch.Generator().manual_seed(0))
    on_cuda = type(params)(**{k: v.cuda() for k, v in vars(params).items()})
    out = augment.to("cuda").apply(images.to("cuda"), on_cuda)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), augment.cpu().apply(images, params), rtol=0, atol=1e-4)
    torch.manual_seed(0)
    assert augment(images.to("cuda")).device.type == "cuda"
