"""Datasets held in memory as uint8 tensors, and the batched augmentations that run on the device."""
from .dataset import ImageDataset

__all__ = ["ImageDataset"]
