"""The ``scenes`` dataset: one shape on a textured background, with every nuisance factor known.

The class is the object's shape. Colour, position, scale, rotation and background are drawn
independently of the class, and with probability ``shared_p`` the background is one shared
"sky", a feature most images of every class have in common.

The spurious-background variant (``background_class_rate`` r > 0) ties the background to the
class in the training split only: with probability r an image gets its class's paired background
``PAIRED_BACKGROUND[class]`` (a fixed map onto the non-shared textures, two classes per texture),
otherwise the background is drawn as above; the test split keeps independent backgrounds. Both
splits then record ``paired_background`` per image, so an evaluation can score the images whose
background agrees with the training pairing apart from those whose background does not. Because each factor is recorded per
image, one can ask of every learned dimension which factor it encodes.

Images are rendered in chunks, all on a coordinate grid: each shape is a signed distance
function of grid coordinates that were translated, rotated and scaled into the object's frame,
and the object's coverage is that distance clipped to a one-pixel ramp (anti-aliased edges).
All randomness is drawn per image up front (or hashed from a per-image key for per-pixel noise),
so the result depends on the seed alone, never on the chunk size.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.data.dataset import ImageDataset

SHAPE_NAMES = (
    "circle", "square", "triangle", "diamond", "star",
    "cross", "ring", "heart", "horizontal bar", "vertical bar",
)
BACKGROUND_NAMES = ("sky", "grass", "sand", "stripes", "checker", "noise")
SHARED_BACKGROUND = 0
COLOR_NAMES = ("red", "orange", "yellow", "green", "blue", "magenta", "white", "black")
PALETTE_RGB = (
    (0.90, 0.12, 0.12), (1.00, 0.55, 0.05), (0.98, 0.88, 0.15), (0.15, 0.75, 0.25),
    (0.12, 0.18, 0.80), (0.85, 0.20, 0.75), (0.98, 0.98, 0.98), (0.06, 0.06, 0.06),
)

SCALE_RANGE = (0.4, 0.8)
"""Diameter of the object's enclosing circle, as a fraction of the frame side."""
MAX_ROTATION = math.pi / 12
EDGE_MARGIN_PX = 1.5
"""Gap between enclosing circle and frame edge; covers the anti-aliasing ramp at sharp corners."""
TEXTURE_UNIFORMS = 12
"""Per-image uniforms each background texture reads its random variation from."""
MIN_IMAGE_SIZE = 16
PAIRED_BACKGROUND = tuple(1 + c % (len(BACKGROUND_NAMES) - 1) for c in range(len(SHAPE_NAMES)))
"""Class -> its background in the spurious variant: grass, sand, stripes, checker, noise, then
again; never the shared sky, which every class already shows."""


@dataclass
class SceneLayers:
    """What a scene image is composed of, for checks that need the ground truth per pixel.

    object_masks: float32 [N, S, S], the object's coverage in [0, 1] (0 = pure background)
    backgrounds:  uint8 [N, 3, S, S], the background alone, before the object was drawn
    """

    dataset: ImageDataset
    object_masks: torch.Tensor
    backgrounds: torch.Tensor


def make_scenes(
    num_images: int,
    seed: int,
    num_classes: int = 10,
    shared_p: float = 0.7,
    color_tied: bool = False,
    image_size: int = 32,
    chunk_size: int = 2048,
    background_class_rate: float | None = None,
) -> ImageDataset:
    """``num_images`` scenes of the first ``num_classes`` shapes, deterministic from ``seed``.

    factors: ``background`` and ``color`` (int64 ids, names in ``factor_names``), ``x`` and ``y``
    (object centre in pixels, x along columns, pixel j spanning [j, j+1]), ``scale`` (enclosing
    circle diameter / frame side) and ``rotation`` (radians, counter-clockwise), each [N].
    With ``color_tied`` the colour is the class index modulo the palette size. With
    ``background_class_rate`` r (None: no pairing) the background is the class's paired one with
    probability r, and the factor ``paired_background`` records that paired background (r = 0:
    recorded, never imposed).
    """
    _check_arguments(num_images, num_classes, shared_p, image_size, chunk_size, background_class_rate)
    factors = _sample_factors(num_images, seed, num_classes, shared_p, color_tied, image_size, background_class_rate)
    images = torch.cat([chunk[0] for chunk in _render_chunks(factors, image_size, chunk_size)])
    return _as_dataset(images, factors, num_classes)


def render_scenes(
    num_images: int,
    seed: int,
    num_classes: int = 10,
    shared_p: float = 0.7,
    color_tied: bool = False,
    image_size: int = 32,
    chunk_size: int = 2048,
    background_class_rate: float | None = None,
) -> SceneLayers:
    """The same scenes as :func:`make_scenes` with the same arguments, plus their object masks
    and bare backgrounds."""
    _check_arguments(num_images, num_classes, shared_p, image_size, chunk_size, background_class_rate)
    factors = _sample_factors(num_images, seed, num_classes, shared_p, color_tied, image_size, background_class_rate)
    images, masks, backgrounds = [], [], []
    for image, mask, background in _render_chunks(factors, image_size, chunk_size):
        images.append(image)
        masks.append(mask)
        backgrounds.append(_to_uint8(background))
    dataset = _as_dataset(torch.cat(images), factors, num_classes)
    return SceneLayers(dataset, torch.cat(masks), torch.cat(backgrounds))


def scenes_splits(
    num_train: int = 20000, num_test: int = 5000, seed: int = 0, background_class_rate: float = 0.0, **kwargs
) -> tuple[ImageDataset, ImageDataset]:
    """Train and test splits drawn from seeds derived from ``seed``, so the two never coincide.

    ``background_class_rate`` r > 0 ties the background to the class at rate r in the training
    split only; the test split keeps independent backgrounds, and both record the pairing."""
    train_rate, test_rate = (background_class_rate, 0.0) if background_class_rate > 0 else (None, None)
    train = make_scenes(num_train, _derived_seed(seed, "train"), background_class_rate=train_rate, **kwargs)
    test = make_scenes(num_test, _derived_seed(seed, "test"), background_class_rate=test_rate, **kwargs)
    return train, test


def _derived_seed(seed: int, split: str) -> int:
    digest = hashlib.sha256(f"scenes/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _check_arguments(num_images, num_classes, shared_p, image_size, chunk_size, background_class_rate=None) -> None:
    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(num_images) or num_images < 1:
        raise ConfigError(f"num_images must be an integer >= 1; got {num_images!r}")
    if not integer(num_classes) or not 2 <= num_classes <= len(SHAPE_NAMES):
        raise ConfigError(f"num_classes must be an integer in 2..{len(SHAPE_NAMES)}; got {num_classes!r}")
    if not isinstance(shared_p, (int, float)) or not 0.0 <= shared_p <= 1.0:
        raise ConfigError(f"shared_p must be a probability in [0, 1]; got {shared_p!r}")
    if not integer(image_size) or image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}; got {image_size!r}")
    if not integer(chunk_size) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be an integer >= 1; got {chunk_size!r}")
    if background_class_rate is not None and (
            not isinstance(background_class_rate, (int, float)) or isinstance(background_class_rate, bool)
            or not 0.0 <= background_class_rate <= 1.0):
        raise ConfigError(f"background_class_rate must be a probability in [0, 1] or None; got {background_class_rate!r}")


def _sample_factors(
    num_images: int, seed: int, num_classes: int, shared_p: float, color_tied: bool, image_size: int,
    background_class_rate: float | None = None,
) -> dict[str, torch.Tensor]:
    """Every random choice of every image, [N] or [N, k]; the draws do not depend on
    ``shared_p``, ``color_tied`` or ``background_class_rate``, so changing those changes only what
    they control (the pairing's draw comes last: without it the scenes are the same as before)."""
    n = num_images
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    color = torch.randint(len(PALETTE_RGB), (n,), generator=gen)
    if color_tied:
        color = labels % len(PALETTE_RGB)
    scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * torch.rand(n, generator=gen)
    rotation = MAX_ROTATION * (2 * torch.rand(n, generator=gen) - 1)
    low = scale * image_size / 2 + EDGE_MARGIN_PX
    x = low + (image_size - 2 * low) * torch.rand(n, generator=gen)
    y = low + (image_size - 2 * low) * torch.rand(n, generator=gen)
    shared = torch.rand(n, generator=gen) < shared_p
    other = torch.randint(1, len(BACKGROUND_NAMES), (n,), generator=gen)
    background = torch.where(shared, torch.full_like(other, SHARED_BACKGROUND), other)
    factors = {
        "labels": labels,
        "background": background,
        "color": color,
        "x": x,
        "y": y,
        "scale": scale,
        "rotation": rotation,
        "texture_uniforms": torch.rand(n, TEXTURE_UNIFORMS, generator=gen),
        "noise_key": torch.randint(0, 2**31 - 1, (n,), generator=gen),
    }
    if background_class_rate is not None:
        paired = torch.tensor(PAIRED_BACKGROUND)[labels]
        tied = torch.rand(n, generator=gen) < background_class_rate
        factors["background"] = torch.where(tied, paired, background)
        factors["paired_background"] = paired
    return factors


def _as_dataset(images: torch.Tensor, factors: dict[str, torch.Tensor], num_classes: int) -> ImageDataset:
    public = ("background", "color", "x", "y", "scale", "rotation", "paired_background")
    names = {"background": list(BACKGROUND_NAMES), "color": list(COLOR_NAMES)}
    if "paired_background" in factors:
        names["paired_background"] = list(BACKGROUND_NAMES)
    return ImageDataset(
        images=images,
        labels=factors["labels"],
        classes=list(SHAPE_NAMES[:num_classes]),
        factors={name: factors[name] for name in public if name in factors},
        factor_names=names,
    )


def _render_chunks(
    factors: dict[str, torch.Tensor], image_size: int, chunk_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images uint8 [n, 3, S, S], object masks float [n, S, S], backgrounds float [n, 3, S, S])
    per chunk of at most ``chunk_size`` images.

    The object's outermost pixel is darkened, so that an object stays visible on a background
    of its own colour (a green shape on grass, a blue one on the sky).
    """
    num_images = factors["labels"].shape[0]
    for start in range(0, num_images, chunk_size):
        chunk = {name: values[start:start + chunk_size] for name, values in factors.items()}
        background = _backgrounds(chunk, image_size)
        signed_distance = _object_signed_distance(chunk, image_size)
        coverage = (0.5 - signed_distance).clamp(0.0, 1.0)
        rim = (signed_distance + 1.2).clamp(0.0, 1.0)
        palette = torch.tensor(PALETTE_RGB, dtype=torch.float32)
        color = palette[chunk["color"]][:, :, None, None] * (1 - 0.35 * rim[:, None])
        image = background + coverage[:, None] * (color - background)
        yield _to_uint8(image), coverage, background


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image * 255).round_().clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------- shapes


def _object_signed_distance(chunk: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Signed distance to the object's outline in pixels, [n, S, S] (negative inside).

    The grid is moved into the object's frame: origin at its centre, y up, rotated by
    ``-rotation`` and divided by the enclosing radius, so every shape lives in the unit disc.
    """
    pixel = torch.arange(size, dtype=torch.float32) + 0.5
    distance = torch.empty(chunk["labels"].shape[0], size, size)
    for shape_id, shape in enumerate(SHAPES):
        index = (chunk["labels"] == shape_id).nonzero().squeeze(1)
        if index.numel():
            radius = (chunk["scale"][index] * size / 2)[:, None, None]
            rotation = chunk["rotation"][index][:, None, None]
            cos, sin = torch.cos(rotation) / radius, torch.sin(rotation) / radius
            dx = pixel[None, None, :] - chunk["x"][index][:, None, None]
            dy = chunk["y"][index][:, None, None] - pixel[None, :, None]
            u = cos * dx + sin * dy
            v = cos * dy - sin * dx
            distance[index] = shape(u, v) * radius
    return distance


def _box(u, v, half_u: float, half_v: float):
    du, dv = u.abs() - half_u, v.abs() - half_v
    outside = torch.sqrt(du.clamp(min=0) ** 2 + dv.clamp(min=0) ** 2)
    return outside + torch.maximum(du, dv).clamp(max=0)


def _star(u, v, radius: float, points: int, spikiness: float):
    """Regular star (``spikiness`` = 2: regular polygon) with a vertex pointing up; exact."""
    sector = math.pi / points
    tip = (math.cos(sector), math.sin(sector))
    edge = (math.cos(math.pi / spikiness), math.sin(math.pi / spikiness))
    angle = torch.remainder(torch.atan2(u, v), 2 * sector) - sector
    length = torch.sqrt(u * u + v * v)
    a = length * torch.cos(angle) - radius * tip[0]
    b = length * torch.sin(angle).abs() - radius * tip[1]
    t = (-(a * edge[0] + b * edge[1])).clamp(0.0, radius * tip[1] / edge[1])
    a, b = a + t * edge[0], b + t * edge[1]
    return torch.sqrt(a * a + b * b) * torch.sign(a)


def _rhombus(u, v, half_u: float, half_v: float):
    u, v = u.abs(), v.abs()
    h = ((half_u * (half_u - 2 * u) - half_v * (half_v - 2 * v)) / (half_u**2 + half_v**2)).clamp(-1, 1)
    du, dv = u - 0.5 * half_u * (1 - h), v - 0.5 * half_v * (1 + h)
    return torch.sqrt(du * du + dv * dv) * torch.sign(u * half_v + v * half_u - half_u * half_v)


HEART_CENTRE = 0.55
HEART_SIZE = 0.95 / (math.hypot(0.25, 0.75 - HEART_CENTRE) + math.sqrt(2) / 4)


def _heart(u, v):
    """Heart with its tip down; the canonical heart spans y in [0, 1.1], so it is recentred and
    scaled to fit the unit disc."""
    p, q = (u / HEART_SIZE).abs(), v / HEART_SIZE + HEART_CENTRE
    lobe = torch.sqrt((p - 0.25) ** 2 + (q - 0.75) ** 2) - math.sqrt(2) / 4
    t = 0.5 * (p + q).clamp(min=0)
    body = torch.sqrt(torch.minimum(p**2 + (q - 1) ** 2, (p - t) ** 2 + (q - t) ** 2)) * torch.sign(p - q)
    return torch.where(p + q > 1, lobe, body) * HEART_SIZE


SHAPES: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    lambda u, v: torch.sqrt(u * u + v * v) - 0.92,
    lambda u, v: _box(u, v, 0.66, 0.66),
    lambda u, v: _star(u, v, 0.95, 3, 2.0),
    lambda u, v: _rhombus(u, v, 0.62, 0.95),
    lambda u, v: _star(u, v, 0.95, 5, 3.0),
    lambda u, v: torch.minimum(_box(u, v, 0.9, 0.27), _box(u, v, 0.27, 0.9)),
    lambda u, v: (torch.sqrt(u * u + v * v) - 0.7).abs() - 0.23,
    _heart,
    lambda u, v: _box(u, v, 0.9, 0.3),
    lambda u, v: _box(u, v, 0.3, 0.9),
)
"""Signed distance in units of the enclosing radius, one per entry of ``SHAPE_NAMES``."""


# ---------------------------------------------------------------- backgrounds


def _backgrounds(chunk: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Float RGB in [0, 1], [n, 3, S, S]; each texture reads its variation from
    ``texture_uniforms`` [n, TEXTURE_UNIFORMS] and per-pixel noise from ``noise_key`` [n]."""
    n = chunk["labels"].shape[0]
    pixel = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    ys, xs = pixel[:, None].expand(size, size), pixel[None, :].expand(size, size)
    out = torch.empty(n, 3, size, size)
    for background_id, texture in enumerate(TEXTURES):
        index = (chunk["background"] == background_id).nonzero().squeeze(1)
        if index.numel():
            uniforms = chunk["texture_uniforms"][index]
            noise = _PixelNoise(chunk["noise_key"][index], size)
            out[index] = texture(uniforms, xs, ys, noise).clamp(0.0, 1.0)
    return out


class _PixelNoise:
    """Uniform [0, 1) noise per (image, channel, cell), hashed from a per-image key, so an
    image's noise is the same whatever chunk it is rendered in."""

    def __init__(self, keys: torch.Tensor, size: int):
        self.image_hash = _hash32(keys)[:, None, None, None]
        self.size = size

    def __call__(self, channel: int | torch.Tensor, row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        cell = (channel * 4 * self.size + row) * 4 * self.size + column
        return _hash_uniform(self.image_hash + cell)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing hash (lowbias32) on int64 tensors, kept free of int64 overflow."""
    x = x & 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mul32(x: torch.Tensor, factor: int) -> torch.Tensor:
    low, high = x & 0xFFFF, x >> 16
    return (low * factor + (((high * factor) & 0xFFFF) << 16)) & 0xFFFFFFFF


def _hash_uniform(x: torch.Tensor) -> torch.Tensor:
    return (_hash32(x) >> 8).to(torch.float32) / float(1 << 24)


def _rgb(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[None, :, None, None]


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values[:, None, None, None]


def _sky(uniforms, xs, ys, noise):
    """Vertical blue gradient with three soft clouds at random places."""
    top, bottom = _rgb(0.22, 0.42, 0.82), _rgb(0.62, 0.78, 0.96)
    base = top + (bottom - top) * ys
    clear = torch.ones_like(base[:, :1])
    for cloud in range(3):
        cx = _per_image(uniforms[:, cloud])
        cy = _per_image(0.8 * uniforms[:, 3 + cloud])
        width = _per_image(0.08 + 0.14 * uniforms[:, 6 + cloud])
        opacity = _per_image(0.55 + 0.35 * uniforms[:, 9 + cloud])
        across = torch.exp(-0.5 * ((xs[:1] - cx) / width) ** 2)
        down = torch.exp(-0.5 * ((ys[:, :1] - cy) / (0.45 * width)) ** 2)
        clear = clear * (1 - (opacity * down) * across)
    return base + (1 - clear) * (_rgb(0.97, 0.97, 0.97) - base)


def _grass(uniforms, xs, ys, noise):
    """Vertical blades: noise stretched over rows, each column shifted by its own offset."""
    size = xs.shape[-1]
    column = torch.arange(size)[None, :]
    row = torch.arange(size)[:, None]
    shift = (noise(3, torch.zeros_like(column), column) * 3).long()
    blades = noise(0, (row + shift) // 3, column)
    grain = noise(1, row, column)
    dark, light = _rgb(0.10, 0.32, 0.07), _rgb(0.36, 0.66, 0.20)
    light = light * _per_image(0.85 + 0.3 * uniforms[:, 0])
    mix = 0.2 * ys + 0.55 * blades + 0.25 * grain
    return dark + mix * (light - dark)


def _sand(uniforms, xs, ys, noise):
    """Beige with fine grain and soft ripples of random direction, frequency and phase."""
    size = xs.shape[-1]
    angle = _per_image(math.pi * uniforms[:, 0])
    frequency = _per_image(3 + 3 * uniforms[:, 1])
    phase = _per_image(2 * math.pi * uniforms[:, 2])
    ripple = torch.sin(2 * math.pi * frequency * (xs * torch.cos(angle) + ys * torch.sin(angle)) + phase)
    grain = noise(0, torch.arange(size)[:, None], torch.arange(size)[None, :])
    shade = (0.92 + 0.12 * _per_image(uniforms[:, 3])) * (1 + 0.07 * ripple) * (0.9 + 0.2 * grain)
    return _rgb(0.86, 0.74, 0.50) * shade


def _stripes(uniforms, xs, ys, noise):
    """Two-colour soft stripes of random angle, period (4-8 px) and phase."""
    size = xs.shape[-1]
    angle = _per_image(math.pi * uniforms[:, 0])
    period = _per_image((4 + 4 * uniforms[:, 1]) / size)
    phase = _per_image(uniforms[:, 2])
    wave = torch.sin(2 * math.pi * ((xs * torch.cos(angle) + ys * torch.sin(angle)) / period + phase))
    mix = (0.5 + 1.5 * wave).clamp(0, 1)
    return _rgb(0.25, 0.25, 0.50) + mix * (_rgb(0.92, 0.90, 0.82) - _rgb(0.25, 0.25, 0.50))


def _checker(uniforms, xs, ys, noise):
    """Two-colour checkerboard with random cell size (3-7 px) and offset."""
    size = xs.shape[-1]
    cell = _per_image((3 + 4 * uniforms[:, 0]) / size)
    cx = torch.floor(xs / cell + _per_image(uniforms[:, 1]))
    cy = torch.floor(ys / cell + _per_image(uniforms[:, 2]))
    parity = torch.remainder(cx + cy, 2)
    return _rgb(0.42, 0.34, 0.28) + parity * (_rgb(0.80, 0.74, 0.62) - _rgb(0.42, 0.34, 0.28))


def _noise(uniforms, xs, ys, noise):
    """Per-pixel colour noise around a random grey level with a random contrast."""
    size = xs.shape[-1]
    row, column = torch.arange(size)[:, None], torch.arange(size)[None, :]
    grey = noise(3, row, column)
    colour = noise(torch.arange(3)[:, None, None], row, column)
    level = _per_image(0.35 + 0.3 * uniforms[:, 0])
    contrast = _per_image(0.5 + 0.4 * uniforms[:, 1])
    return level + contrast * (0.6 * (grey - 0.5) + 0.4 * (colour - 0.5))


TEXTURES = (_sky, _grass, _sand, _stripes, _checker, _noise)
"""One texture per entry of ``BACKGROUND_NAMES``."""
