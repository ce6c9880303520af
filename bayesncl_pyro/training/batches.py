"""Shuffled mini-batches of an in-memory dataset; the order is a function of (seed, epoch) alone,
so a resumed run sees exactly the batches the uninterrupted run would have seen."""
from __future__ import annotations

from typing import Iterator

import torch


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


def train_batches(num_items: int, batch_size: int, seed: int, epoch: int,
                  start: int = 0) -> Iterator[torch.Tensor]:
    """Index tensors of the full batches of one epoch (the last partial batch is dropped),
    beginning at batch ``start``."""
    order = epoch_order(num_items, seed, epoch)
    for b in range(start, num_items // batch_size):
        yield order[b * batch_size:(b + 1) * batch_size]


def steps_per_epoch(num_items: int, batch_size: int) -> int:
    return num_items // batch_size
