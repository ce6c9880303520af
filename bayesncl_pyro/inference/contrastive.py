"""InfoNCE (NT-Xent) over two views, as in SPEC §3: the contrastive likelihood of the model."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bayesncl_pyro.inference.negatives import Negatives, local_batch


def two_view_ids(batch: int, device: torch.device | None = None, first: int = 0) -> torch.Tensor:
    """Instance ids of rows stacked as [view 1; view 2]: row i and row i + B share an id."""
    ids = torch.arange(first, first + batch, device=device)
    return torch.cat([ids, ids])


class InfoNCE(nn.Module):
    """−mean_i log(pos_i / (pos_i + neg_i)), sim = exp(z_i·z_j / τ) on already normalised rows.

    For row i, positives are the other rows with its instance id, negatives all rows with another
    id; the row itself is left out. Computed in float32 with a log-sum-exp.
    """

    def __init__(self, temperature: float, negatives: Negatives = local_batch):
        super().__init__()
        self.temperature = temperature
        self.negatives = negatives

    def forward(self, rows: torch.Tensor, ids: torch.Tensor,
                positive_rows: torch.Tensor | None = None) -> torch.Tensor:
        """rows: [R, D] unit-norm (or zero) rows; ids: [R] instance ids. Returns a scalar.

        With ``positive_rows`` [R, D] the similarities of positive pairs are taken between those
        rows instead (``rows`` then serve the negatives only): −log(pos⁺ / (pos⁺ + neg)), where
        pos⁺ comes from ``positive_rows`` and neg from ``rows``.
        """
        dtype = torch.promote_types(rows.dtype, torch.float32)
        rows = rows.to(dtype)
        candidates, candidate_ids, offset = self.negatives(rows, ids)
        logits = rows @ candidates.T / self.temperature
        own = torch.arange(rows.shape[0], device=rows.device) + offset
        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[torch.arange(rows.shape[0], device=rows.device), own] = True
        is_positive = (ids[:, None] == candidate_ids[None, :]) & ~is_self
        if positive_rows is not None:
            positive_rows = positive_rows.to(dtype)
            positive_candidates, _, _ = self.negatives(positive_rows, ids)
            logits = torch.where(is_positive, positive_rows @ positive_candidates.T / self.temperature, logits)
        logits = logits.masked_fill(is_self, float("-inf"))
        log_all = torch.logsumexp(logits, dim=1)
        log_pos = torch.logsumexp(logits.masked_fill(~is_positive, float("-inf")), dim=1)
        return (log_all - log_pos).mean()


class RecordedLoss:
    """A rows -> loss callable that remembers its last value: the model hands it to
    ``pyro.factor``, and the caller reads the value back for logging."""

    def __init__(self, loss: Callable[[torch.Tensor], torch.Tensor]):
        self.loss = loss
        self.value: torch.Tensor | None = None

    def __call__(self, rows: torch.Tensor, **kwargs) -> torch.Tensor:
        self.value = self.loss(rows, **kwargs)
        return self.value


def gated_rows(z: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    """z̃ = normalize(normalize(z) ⊙ m); without a gate, normalize(z). Shapes [R, D]."""
    rows = F.normalize(z, dim=1)
    if gate is None:
        return rows
    return F.normalize(rows * gate, dim=1)
