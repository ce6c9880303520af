"""Images as a user holds them (a file, a PIL image, a tensor) made into uint8 RGB.

Accepted by :func:`image_batches`, alone or in a list: a PIL image (any mode; converted to RGB
as :func:`pil_to_rgb` says), a tensor [3, H, W] or [B, 3, H, W] of uint8 (0..255) or floats in
[0, 1]; a grey tensor ([H, W], [1, H, W] or [B, 1, H, W]) is repeated to 3 channels, as the
datasets do. Images of different sizes stay in separate batches, since the evaluation transform
resizes each to the run's size.

:func:`decode_image_file` is the one decode of an image file that the datasets use:

- **Bit depth.** 16-bit images keep their top 8 bits (``v >> 8``: mid-grey 32768 becomes 128),
  for PNGs decoded by torchvision and for PIL's 16-bit grey modes (``I;16``, ``I;16B``, ...),
  as for its ``I`` mode (32-bit integers, read as 16-bit values, which is how PNG and TIFF
  store them; values outside 0..65535 are clipped). PIL's own ``convert("RGB")`` clips them at
  255 instead, and a plain cast to uint8 wraps around. Float images (mode ``F``) have no fixed
  range and are refused. Palette, grey + alpha, CMYK, YCbCr and the other PIL modes take PIL's
  conversion to RGB (alpha dropped).
- **Pixel limit.** The header is read before anything is decoded, and an image of more than
  :func:`max_image_pixels` pixels (width x height) is refused with a DataError naming the file,
  before its pixels are allocated. The limit is Pillow's default (89,478,485 pixels, about
  9459 x 9459: 256 MiB as RGB); the environment variable ``BAYESNCL_MAX_IMAGE_PIXELS`` sets
  another, for every command. Pillow refuses images above twice its own limit
  (``PIL.Image.MAX_IMAGE_PIXELS``) whatever this one says. The limit bounds what is decoded,
  not only the header: a side longer than :data:`DEFAULT_MAX_SIDE` is refused, an animated image
  is decoded as its first frame only (all frames of a 776 KB GIF of 60 frames of 4000 x 4000
  would take 2.9 GB).
- **Files.** An image file is read only when it is a regular file of at most
  :data:`MAX_FILE_BYTES`: a FIFO named ``x.png`` never hangs the decode, a link to ``/dev/zero``
  never fills the memory.
- **Downsizing.** With ``size`` (or ``reduce_to``), a JPEG at least twice that size in both sides
  is decoded at a reduced scale by libjpeg (PIL's ``draft``: 1/2, 1/4 or 1/8, the smallest that
  keeps both sides at least that size) before the antialiased resize, so a large photo costs a
  fraction of its full decode. ``reduce_to`` alone keeps the aspect ratio, for a caller that
  crops or resizes afterwards (the datasets: both ImageFolder paths decode through it, so the
  in-memory cache and the on-disk store hold the same pixels).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import pil_to_tensor, resize, to_dtype

from bayesncl_pyro.config.errors import DataError
from bayesncl_pyro.storage.atomic import read_regular

ALLOWED = ("PIL images, or tensors [3, H, W] / [B, 3, H, W] of uint8 (0..255) or floats in [0, 1], "
           "alone or in a list")
MAX_PIXELS_ENV = "BAYESNCL_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485
"""Pillow's default ``PIL.Image.MAX_IMAGE_PIXELS``: 256 MiB of RGB."""
TORCHVISION_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
"""What ``torchvision.io.decode_image`` decodes (releasing the GIL); PIL decodes the rest."""
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
DEFAULT_MAX_SIDE = 65_535
"""The longest side decoded (JPEG's and GIF's own limit; a PNG or TIFF may claim more)."""
MAX_FILE_BYTES = 1 << 30
"""The largest image file read (1 GiB: a 16-bit RGB TIFF at the default pixel limit is 537 MB)."""
REDUCIBLE_FORMATS = ("JPEG", "MPO")
"""What libjpeg can decode at a reduced scale (MPO: a camera's JPEG with extra frames, of which
the first is read)."""


def max_image_pixels() -> int:
    """The pixel limit of :func:`decode_image_file`: ``BAYESNCL_MAX_IMAGE_PIXELS`` when set, else
    :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{MAX_PIXELS_ENV}={text!r} is not allowed; allowed: a whole number of pixels >= 1 "
                        f"(width x height; default {DEFAULT_MAX_PIXELS})")
    return value


def pil_to_rgb(image: Image.Image) -> torch.Tensor:
    """A PIL image of any mode -> uint8 [3, H, W], 16-bit modes scaled to 8 bits (``v >> 8``)."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64, copy=False)
        grey = torch.from_numpy((np.clip(values, 0, 65535) >> 8).astype(np.uint8))
        return grey[None].expand(3, -1, -1).contiguous()
    if image.mode == "F":
        raise DataError(f"a 32-bit float image ({image.width}x{image.height}, PIL mode F) has no fixed range and "
                        "is not allowed; allowed: 8- or 16-bit images (save it as 8- or 16-bit PNG or TIFF)")
    return pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))


def _checked_header(data: bytes, path: Path, limit: int, max_side: int = DEFAULT_MAX_SIDE) -> Image.Image:
    """The opened (not yet decoded) image, its width x height checked against ``limit`` and each
    side against ``max_side``."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:  # above twice Pillow's own limit
        raise DataError(f"{path} is too large ({error}); allowed: at most {limit:,} pixels "
                        f"({MAX_PIXELS_ENV}) and at most twice PIL.Image.MAX_IMAGE_PIXELS") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image format that PIL or torchvision reads") from None
    width, height = image.size
    if width * height > limit:
        image.close()
        raise DataError(f"{path} is {width}x{height} = {width * height:,} pixels, above the limit of {limit:,}; "
                        f"allowed: at most {limit:,} pixels (set {MAX_PIXELS_ENV}=N to raise it, or resize the "
                        "image beforehand)")
    if max(width, height) > max_side:
        image.close()
        raise DataError(f"{path} is {width}x{height}, a side longer than {max_side:,} pixels; allowed: sides of at "
                        f"most {max_side:,} pixels (crop or resize the image beforehand)")
    return image


def _resized(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 [3, H, W] -> [3, size, size] (bilinear, antialiased); unchanged without ``size`` or
    when it is that size already."""
    if size is None or image.shape[-2:] == (size, size):
        return image
    return resize(image, [size, size], antialias=True)


def decode_image_file(path: str | Path, size: int | None = None, max_pixels: int | None = None,
                      reduce_to: int | None = None, max_side: int = DEFAULT_MAX_SIDE) -> torch.Tensor:
    """One image file -> uint8 [3, H, W] RGB (resized to ``size`` square when that is given),
    as the module docstring says: 16-bit images scaled to 8 bits, images above ``max_pixels``
    (default :func:`max_image_pixels`) refused before they are decoded, large JPEGs decoded at a
    reduced scale when downsizing (to ``reduce_to``, default ``size``: both sides stay at least
    that long).

    JPEG, PNG, WebP and GIF go through ``torchvision.io.decode_image`` (which releases the GIL,
    so threads overlap); PIL reads the other formats and is the second opinion before a file is
    called unreadable. Raises DataError naming the file when it is too large or not an image.
    """
    path = Path(path)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    data = read_regular(path, "image file", MAX_FILE_BYTES)
    with _checked_header(data, path, limit, max_side) as image:
        width, height = image.size
        least = size if reduce_to is None else reduce_to
        if least is not None and image.format in REDUCIBLE_FORMATS and min(width, height) >= 2 * least:
            image.draft("RGB", (least, least))
            return _resized(pil_to_rgb(image), size)
        if getattr(image, "is_animated", False):  # PIL decodes the current (first) frame alone
            return _resized(pil_to_rgb(image), size)
        if image.format in TORCHVISION_FORMATS:
            try:
                decoded = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            except RuntimeError:
                decoded = None
            if decoded is not None:
                if decoded.dtype != torch.uint8:  # 16-bit PNG: the top 8 bits
                    decoded = to_dtype(decoded, torch.uint8, scale=True)
                return _resized(decoded, size)
        return _resized(pil_to_rgb(image), size)


def _tensor_batch(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 2:
        images = images[None]
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"images of shape {tuple(images.shape)} are not allowed; allowed: {ALLOWED}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def image_batches(images: Any) -> list[torch.Tensor]:
    """``images`` -> batches [B, 3, H, W] (uint8 or floating point, values unchecked: the
    evaluation transform checks them); a single image is a batch of one."""
    if isinstance(images, Image.Image):
        return [pil_to_rgb(images)[None]]
    if isinstance(images, torch.Tensor):
        return [_tensor_batch(images)]
    if isinstance(images, (list, tuple)) and images:
        return [batch for item in images for batch in image_batches(item)]
    got = "an empty list" if isinstance(images, (list, tuple)) else type(images).__name__
    raise DataError(f"images must be {ALLOWED}; got {got}")
