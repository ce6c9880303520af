"""Two-view contrastive augmentations done on whole batches, on the device the images live on.

Per-sample PIL pipelines spend their time in Python and in data-loader workers; here every
random choice for a batch is drawn at once and each operation is one batched tensor op, so a
training step can make its two views on the GPU (or on the CPU) right after the batch arrives.

The augmentations are those of SPEC §3 (CIFAR, the authors' configuration), in the order of the
authors' pipeline: RandomResizedCrop → ColorJitter (p) → RandomGrayscale (p) → GaussianBlur (p)
→ horizontal flip (p) → normalisation. Each op agrees with the matching
``torchvision.transforms.v2.functional`` kernel on float images for the same parameters. One
deliberate difference: colour jitter runs in the fixed order brightness → contrast → saturation
→ hue, where torchvision's ColorJitter draws a random order per image.

All images are float32 in [0, 1] between the ops, shape [B, 3, H, W].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from bayesncl_pyro.config.errors import ConfigError, DataError
from bayesncl_pyro.config.schema import AugmentConfig
from bayesncl_pyro.data.imagefolder_store import fit

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
_CROP_ATTEMPTS = 10


@dataclass
class AugmentParams:
    """Every random choice for one view of a batch of B images.

    boxes:          int64 [B, 4], crop (top, left, height, width) in input pixels
    jitter_mask:    bool [B], colour jitter applied
    brightness_factors, contrast_factors, saturation_factors: float32 [B], multiplicative factors
    hue_factors:    float32 [B], hue shift in turns, in [-0.5, 0.5]
    gray_mask:      bool [B], converted to grey
    blur_mask:      bool [B], blurred
    blur_sigmas:    float32 [B], Gaussian sigma in output pixels
    flip_mask:      bool [B], flipped left-right
    """

    boxes: torch.Tensor
    jitter_mask: torch.Tensor
    brightness_factors: torch.Tensor
    contrast_factors: torch.Tensor
    saturation_factors: torch.Tensor
    hue_factors: torch.Tensor
    gray_mask: torch.Tensor
    blur_mask: torch.Tensor
    blur_sigmas: torch.Tensor
    flip_mask: torch.Tensor


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] in 0..255 → float32 in [0, 1]; float input is cast to float32 as is."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise DataError(f"images must be uint8 (0..255) or floating point (0..1); got {images.dtype}")
    return images.to(torch.float32)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """[B] → [B, 1, 1, 1], to broadcast one value per image over channels and pixels."""
    return values.reshape(-1, 1, 1, 1)


def _uniform(shape: tuple[int, ...], low: float, high: float, device, generator) -> torch.Tensor:
    return torch.rand(shape, device=device, generator=generator) * (high - low) + low


# --------------------------------------------------------------------------------------------
# Crop and resize


def sample_crop_boxes(
    batch_size: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    device: torch.device | str = "cpu",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Crop boxes with torchvision ``RandomResizedCrop.make_params`` semantics, for a whole batch.

    Each image gets 10 attempts of (area fraction ~ U(scale), log aspect ~ U(log ratio)); the first
    attempt whose rounded box fits is kept, with a uniform integer position. Images with no fitting
    attempt get torchvision's central fallback crop. Returns int64 [B, 4] = (top, left, h, w).
    """
    shape = (batch_size, _CROP_ATTEMPTS)
    area_fractions = _uniform(shape, scale[0], scale[1], device, generator).double()
    log_ratios = _uniform(shape, math.log(ratio[0]), math.log(ratio[1]), device, generator).double()
    position = torch.rand((batch_size, 2), device=device, generator=generator).double()

    target_areas = area_fractions * (height * width)
    aspect = torch.exp(log_ratios)
    crop_w = torch.round(torch.sqrt(target_areas * aspect))
    crop_h = torch.round(torch.sqrt(target_areas / aspect))
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first_fit = fits.to(torch.int8).argmax(dim=1, keepdim=True)
    any_fit = fits.any(dim=1)
    crop_w = crop_w.gather(1, first_fit).squeeze(1)
    crop_h = crop_h.gather(1, first_fit).squeeze(1)
    top = torch.floor(position[:, 0] * (height - crop_h + 1)).clamp_(max=height - crop_h)
    left = torch.floor(position[:, 1] * (width - crop_w + 1)).clamp_(max=width - crop_w)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    fallback = torch.tensor(
        [(height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h, fallback_w],
        dtype=torch.float64,
        device=device,
    )
    boxes = torch.stack((top, left, crop_h, crop_w), dim=1)
    return torch.where(any_fit[:, None], boxes, fallback).to(torch.int64)


def _resize_weights(
    starts: torch.Tensor, lengths: torch.Tensor, in_size: int, out_size: int, antialias: bool
) -> torch.Tensor:
    """Bilinear resampling matrices [B, out_size, in_size] from the span [start, start+length).

    The triangle-filter weights reproduce ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` on the cropped span, including its edge clamping (weights outside the
    span are dropped and the row renormalised); with ``antialias`` the triangle is widened by the
    downscale factor, as in ``interpolate(..., antialias=True)``.
    """
    lengths = lengths.to(torch.float32).reshape(-1, 1, 1)
    starts = starts.to(torch.float32).reshape(-1, 1, 1)
    scale = lengths / out_size
    centers = scale * (torch.arange(out_size, device=lengths.device, dtype=torch.float32).reshape(1, -1, 1) + 0.5)
    pixels = torch.arange(in_size, device=lengths.device, dtype=torch.float32).reshape(1, 1, -1) - starts
    support = scale.clamp(min=1.0) if antialias else torch.ones_like(scale)
    weights = (1.0 - (pixels + 0.5 - centers).abs() / support).clamp_(min=0.0)
    weights = weights * ((pixels >= 0) & (pixels < lengths))
    return weights / weights.sum(dim=-1, keepdim=True)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """Crop each image to its own box and resize it to size×size, bilinear, in one batched op.

    images: float [B, C, H, W]; boxes: int [B, 4] = (top, left, height, width).
    Returns float [B, C, size, size], equal to ``v2.functional.resized_crop(image, *box, [size,
    size], antialias=antialias)`` per image. Bilinear resampling is separable, so the op is two
    batched matrix products with per-image resampling matrices.
    """
    _, _, height, width = images.shape
    rows = _resize_weights(boxes[:, 0], boxes[:, 2], height, size, antialias).to(images.dtype)
    cols = _resize_weights(boxes[:, 1], boxes[:, 3], width, size, antialias).to(images.dtype)
    return rows.unsqueeze(1) @ images @ cols.transpose(1, 2).unsqueeze(1)


# --------------------------------------------------------------------------------------------
# Colour


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601-2 weights, as torchvision) of float [B, 3, H, W], repeated to 3 channels."""
    return _luma(images).expand_as(images)


def _luma(images: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] → [B, 1, H, W]."""
    r, g, b = images.unbind(dim=-3)
    return r.mul(_GRAY_WEIGHTS[0]).add_(g, alpha=_GRAY_WEIGHTS[1]).add_(b, alpha=_GRAY_WEIGHTS[2]).unsqueeze(-3)


def _blend(images: torch.Tensor, other: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """ratio·images + (1 − ratio)·other per image, clamped to [0, 1]; ratios [B]."""
    ratios = _per_sample(ratios)
    return (images * ratios).add_(other * (1.0 - ratios)).clamp_(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale intensities by one factor per image ([B]), clamped to [0, 1]."""
    return (images * _per_sample(factors)).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each image with the mean of its grey version, one factor per image ([B])."""
    means = _luma(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, means, factors)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grey version, one factor per image ([B])."""
    return _blend(images, _luma(images), factors)


def _rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] RGB → HSV with hue in turns [0, 1); torchvision's (Pillow's) formulas."""
    r, g, _ = images.unbind(dim=-3)
    min_c, max_c = torch.aminmax(images, dim=-3)
    grey = max_c == min_c
    ones = torch.ones_like(max_c)
    chroma = max_c - min_c
    saturation = chroma / torch.where(grey, ones, max_c)
    rc, gc, bc = ((max_c.unsqueeze(-3) - images) / torch.where(grey, ones, chroma).unsqueeze(-3)).unbind(dim=-3)
    max_is_r = max_c == r
    max_is_g = (max_c == g) & ~max_is_r
    max_is_b = ~max_is_r & ~max_is_g
    hue = (bc - gc) * max_is_r + (rc + 2.0 - bc) * max_is_g + (gc + 4.0 - rc) * max_is_b
    hue = (hue * (1.0 / 6.0) + 1.0).fmod(1.0)
    return torch.stack((hue, saturation, max_c), dim=-3)


def _hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_rgb_to_hsv`, float [B, 3, H, W].

    Uses the closed form channel_n = v − v·s·clamp(min(k, 4 − k), 0, 1) with k = (n + 6h) mod 6
    and n = 5, 3, 1 for R, G, B; it equals torchvision's sector-table form up to rounding and
    needs no gather.
    """
    hue, saturation, value = images.unbind(dim=-3)
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1)
    k = (offsets + hue.unsqueeze(-3) * 6.0).remainder(6.0)
    chroma = (value * saturation).unsqueeze(-3)
    return value.unsqueeze(-3) - chroma * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def adjust_hue(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by its factor ([B], in turns, within [-0.5, 0.5])."""
    hsv = _rgb_to_hsv(images)
    hue = (hsv[:, 0] + factors.reshape(-1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=-3))


def jitter(
    images: torch.Tensor,
    brightness_factors: torch.Tensor,
    contrast_factors: torch.Tensor,
    saturation_factors: torch.Tensor,
    hue_factors: torch.Tensor,
) -> torch.Tensor:
    """Colour jitter with per-image factors ([B] each), in the fixed order brightness → contrast →
    saturation → hue (torchvision's ColorJitter draws a random order per call; a fixed order keeps
    the batched op a single pass)."""
    images = adjust_brightness(images, brightness_factors)
    images = adjust_contrast(images, contrast_factors)
    images = adjust_saturation(images, saturation_factors)
    return adjust_hue(images, hue_factors)


# --------------------------------------------------------------------------------------------
# Blur and flip


def blur_kernel_size(sigma_max: float, image_size: int) -> int:
    """Odd kernel size covering ±3·sigma_max, capped so that reflect padding fits in the image."""
    radius = min(math.ceil(3.0 * sigma_max), image_size - 1)
    return 2 * max(radius, 0) + 1


def _gaussian_kernels(sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian taps [B, kernel_size] for sigmas [B], computed as torchvision does."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    offsets = torch.linspace(-lim, lim, steps=kernel_size, dtype=torch.float32, device=sigmas.device)
    return torch.softmax((offsets / sigmas.to(torch.float32).reshape(-1, 1)).pow(2).neg(), dim=-1)


def blur(images: torch.Tensor, sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur with one sigma per image ([B]) and reflect padding, as ``v2.functional.
    gaussian_blur(image, kernel_size, sigma)`` per image.

    The separable kernel is applied as two depthwise convolutions over the batch folded into
    channels (groups = B·C), so every image has its own kernel. images: float [B, C, H, W].
    """
    batch, channels, height, width = images.shape
    taps = _gaussian_kernels(sigmas, kernel_size).to(images.dtype).repeat_interleave(channels, dim=0)
    pad = kernel_size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    padded = padded.reshape(1, batch * channels, height + 2 * pad, width + 2 * pad)
    out = F.conv2d(padded, taps.reshape(batch * channels, 1, 1, kernel_size), groups=batch * channels)
    out = F.conv2d(out, taps.reshape(batch * channels, 1, kernel_size, 1), groups=batch * channels)
    return out.reshape(batch, channels, height, width)


def flip(images: torch.Tensor, flip_mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose ``flip_mask`` ([B] bool) is set."""
    return torch.where(_per_sample(flip_mask), images.flip(-1), images)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(images − mean) / std per channel; mean, std: [C]."""
    return (images - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)


# --------------------------------------------------------------------------------------------
# Modules


def _check_normalisation(size: int, mean, std) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"size={size!r} is not allowed; allowed: a positive integer")
    if len(mean) != 3:
        raise ConfigError(f"mean={tuple(mean)!r} is not allowed; allowed: 3 per-channel values")
    if len(std) != 3 or any(not s > 0 for s in std):
        raise ConfigError(f"std={tuple(std)!r} is not allowed; allowed: 3 positive per-channel values")


def _check_images(images: torch.Tensor) -> None:
    """Reject what the pipeline cannot treat as a batch of RGB images, with a DataError."""
    if not isinstance(images, torch.Tensor):
        raise DataError(f"images must be a torch.Tensor [B, 3, H, W]; got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise DataError(f"images must be [B, 3, H, W]; got shape {tuple(images.shape)}")
    if images.shape[0] < 1 or images.shape[2] < 1 or images.shape[3] < 1:
        raise DataError(f"images must hold at least one pixel of one image; got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise DataError(f"images must be uint8 (0..255) or floating point (0..1); got {images.dtype}")
    if images.is_floating_point():  # uint8, the training path, needs no look at the values
        if not bool(torch.isfinite(images).all()):
            raise DataError("floating-point images hold NaN or infinite values; allowed: finite values in [0, 1]")
        low, high = images.min().item(), images.max().item()
        if low < 0 or high > 1:
            raise DataError(f"floating-point images range over [{low:.4g}, {high:.4g}]; allowed: [0, 1]")


class BatchAugment(torch.nn.Module):
    """One random training view of a batch: call it twice for the two contrastive views.

    forward: uint8 or float [B, 3, H, W] (float in [0, 1]) → float32 [B, 3, size, size],
    normalised by the dataset mean/std. Random numbers come from ``generator`` when given, else
    from the global torch RNG of the images' device, so ``torch.manual_seed`` makes a run
    reproducible and the RNG state checkpoints with the rest of training (a ``generator`` must
    live on the images' device).
    """

    def __init__(self, cfg: AugmentConfig, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.cfg = cfg.validate()
        _check_normalisation(size, mean, std)
        self.size = size
        self.kernel_size = blur_kernel_size(cfg.blur_sigma_max, size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def sample_params(
        self, batch_size: int, height: int, width: int, device: torch.device | str = "cpu",
        generator: Optional[torch.Generator] = None,
    ) -> AugmentParams:
        """Draw every random choice for one view of a batch of ``batch_size`` H×W images."""
        cfg = self.cfg

        def coin(p: float) -> torch.Tensor:
            return torch.rand(batch_size, device=device, generator=generator) < p

        def factor(strength: float) -> torch.Tensor:
            return _uniform((batch_size,), max(0.0, 1.0 - strength), 1.0 + strength, device, generator)

        boxes = sample_crop_boxes(
            batch_size, height, width, (cfg.crop_scale_min, cfg.crop_scale_max),
            (cfg.crop_ratio_min, cfg.crop_ratio_max), device, generator,
        )
        return AugmentParams(
            boxes=boxes,
            jitter_mask=coin(cfg.jitter_prob),
            brightness_factors=factor(cfg.brightness),
            contrast_factors=factor(cfg.contrast),
            saturation_factors=factor(cfg.saturation),
            hue_factors=_uniform((batch_size,), -cfg.hue, cfg.hue, device, generator),
            gray_mask=coin(cfg.gray_prob),
            blur_mask=coin(cfg.blur_prob),
            blur_sigmas=_uniform((batch_size,), cfg.blur_sigma_min, cfg.blur_sigma_max, device, generator),
            flip_mask=coin(cfg.flip_prob),
        )

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply the choices in ``params`` to images [B, 3, H, W] → normalised float32 [B, 3, size, size].

        Masked-off ops are computed and discarded with ``torch.where``, which keeps the batch shape
        fixed and avoids host-device synchronisation on the GPU.
        """
        x = crop_resize(to_float_images(images), params.boxes, self.size)
        jittered = jitter(
            x, params.brightness_factors, params.contrast_factors, params.saturation_factors, params.hue_factors
        )
        x = torch.where(_per_sample(params.jitter_mask), jittered, x)
        x = torch.where(_per_sample(params.gray_mask), rgb_to_grayscale(x), x)
        x = torch.where(_per_sample(params.blur_mask), blur(x, params.blur_sigmas, self.kernel_size), x)
        x = flip(x, params.flip_mask)
        return normalize(x, self.mean.to(x.device), self.std.to(x.device))

    def forward(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        _check_images(images)
        batch, _, height, width = images.shape
        return self.apply(images, self.sample_params(batch, height, width, images.device, generator))


class EvalTransform(torch.nn.Module):
    """Deterministic evaluation view: uint8 or float [B, 3, H, W] → normalised float32
    [B, 3, size, size], resized (bilinear, antialiased) only when H×W is not size×size.

    With ``store_size`` (a run trained on ``data.store_size``), an image not ``store_size``
    square first becomes what the run's image store holds: short side resized to
    ``store_size`` and the centre square kept (:func:`~.imagefolder_store.fit`, the store's own
    code; uint8 images bit for bit), so a raw photo is seen as the run's test images were, not
    squashed. The store decodes a JPEG at least twice ``store_size`` on both sides at a reduced
    scale (libjpeg's draft) first; a PIL image handed in already decoded skips that step."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...], store_size: int = 0):
        super().__init__()
        _check_normalisation(size, mean, std)
        if isinstance(store_size, bool) or not isinstance(store_size, int) or (store_size and store_size < size):
            raise ConfigError(f"store_size={store_size!r} is not allowed; allowed: 0 (no store) or an integer "
                              f">= size ({size})")
        self.size, self.store_size = size, store_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        if self.store_size:
            images = fit(images, "crop", self.store_size)
        x = to_float_images(images)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return normalize(x, self.mean.to(x.device), self.std.to(x.device))
