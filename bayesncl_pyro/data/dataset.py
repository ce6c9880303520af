"""The in-memory image dataset every loader returns: uint8 pixels plus labels and known factors."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bayesncl_pyro.config.errors import DataError


@dataclass
class ImageDataset:
    """A whole split held in memory.

    images:  uint8 [N, 3, H, W] (grey data is repeated to 3 channels)
    labels:  int64 [N], class index
    classes: class names, ``len(classes)`` = number of classes
    factors: ground-truth nuisance labels per image (e.g. ``background``: int64 [N]), where known
    factor_names: for categorical factors, the names of their values
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    factor_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DataError(
                f"images must be uint8 [N, 3, H, W]; got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"labels must have shape ({self.images.shape[0]},); got {tuple(self.labels.shape)}"
            )
        for name, values in self.factors.items():
            if values.shape[0] != self.images.shape[0]:
                raise DataError(f"factor {name!r} has {values.shape[0]} rows for {len(self)} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor) -> "ImageDataset":
        return ImageDataset(
            self.images[index],
            self.labels[index],
            list(self.classes),
            {k: v[index] for k, v in self.factors.items()},
            dict(self.factor_names),
        )
