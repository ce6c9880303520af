"""The plate and KL weight shared by every gate site, so that model and guide agree exactly.

Departs from Pyro idiom on purpose: the plate also carries λ as a ``poutine.scale`` (and masks
the sites out when λ = 0, since Pyro's scale must be positive), so that the ELBO of the program
equals the paper's loss InfoNCE + λ · mean_rows Σ_d KL with no hand-written weighting.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pyro
import torch
from pyro import poutine

ROWS_DIM = -1


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Gate probabilities and KLs are computed in float32 (bf16/fp16 under autocast are promoted)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@contextmanager
def kl_weighted_plate(name: str, size: int, kl_weight: float, rows: int) -> Iterator[None]:
    """A plate whose sites enter the ELBO scaled by λ / rows (every prior term of the gates is
    weighted the same way). A zero weight masks the sites out (Pyro's scale must be positive)."""
    with pyro.plate(name, size, dim=ROWS_DIM):
        if kl_weight > 0:
            with poutine.scale(scale=kl_weight / rows):
                yield
        else:
            with poutine.mask(mask=False):
                yield


def gate_rows(rows: int, kl_weight: float):
    """Plate over the 2B rows, scaled by λ / rows: the ELBO's KL term is then
    λ · mean_rows(Σ_d KL), as in SPEC §3."""
    return kl_weighted_plate("rows", rows, kl_weight, rows)
