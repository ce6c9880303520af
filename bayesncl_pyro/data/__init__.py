"""Data: datasets held in memory as uint8 tensors (the ``data.name`` table, the generated
``scenes``, torchvision datasets and ImageFolder trees) and the batched augmentations that run
on the device. May import ``config`` and ``storage`` (atomic writes of decoded caches)."""
from bayesncl_pyro.data.dataset import ImageDataset

__all__ = ["ImageDataset"]
