"""Where the negatives of the contrastive loss come from.

One small function: it takes this process's rows and their instance ids and returns the rows
every row is compared with. Today that is the local batch; a distributed run swaps in a
gathered batch (with gradients) without touching the model or the loss.
"""
from __future__ import annotations

from typing import Callable

import torch

Negatives = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, int]]


def local_batch(rows: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Compare with the rows of this batch only.

    rows: [R, D], ids: [R] instance ids (rows with the same id are positives).
    Returns (candidates [M, D], candidate ids [M], offset): ``rows[i]`` is ``candidates[offset + i]``.
    """
    return rows, ids, 0
