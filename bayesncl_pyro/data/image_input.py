"""Images as a user holds them, made into the batches the evaluation transform takes.

Accepted, alone or in a list: a PIL image (any mode; converted to RGB), a tensor [3, H, W] or
[B, 3, H, W] of uint8 (0..255) or floats in [0, 1]; a grey tensor ([H, W], [1, H, W] or
[B, 1, H, W]) is repeated to 3 channels, as the datasets do. Images of different sizes stay in
separate batches, since the evaluation transform resizes each to the run's size.
"""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from bayesncl_pyro.config.errors import DataError

ALLOWED = ("PIL images, or tensors [3, H, W] / [B, 3, H, W] of uint8 (0..255) or floats in [0, 1], "
           "alone or in a list")


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
        return [pil_to_tensor(images.convert("RGB"))[None]]
    if isinstance(images, torch.Tensor):
        return [_tensor_batch(images)]
    if isinstance(images, (list, tuple)) and images:
        return [batch for item in images for batch in image_batches(item)]
    got = "an empty list" if isinstance(images, (list, tuple)) else type(images).__name__
    raise DataError(f"images must be {ALLOWED}; got {got}")
