"""Guide of the Beta-Bernoulli prior: mean-field Beta(α_d, β_d) over the relevance π_d of each
output dimension, plus the amortized local gates q(m | h) of :class:`AmortizedGates`.

The Beta concentrations are free parameters made positive by a softplus (plus a small floor, so a
concentration can never underflow to zero); they start at the prior's (a, b), where the global KL
is zero. ``relevance()`` is the posterior to inspect (e.g. in ArviZ): the probability that
dimension d is relevant at all.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from bayesncl_pyro.guides.amortized_gates import AmortizedGates
from bayesncl_pyro.inference.plates import kl_weighted_plate

RELEVANCE_SITE = "relevance"
CONCENTRATION_FLOOR = 1e-4


@contextmanager
def relevance_dims(dims: int, rows: int, kl_weight: float) -> Iterator[None]:
    """Plate "dims" over the D output dimensions for the global π_d, scaled by λ / rows.

    The scale is the one of the gate plate (:func:`bayesncl_pyro.plates.gate_rows`): the loss is
    the negative ELBO of the batch as if it were the whole data set, divided by the number of rows,
    with λ weighting every prior term, so the global KL is λ / rows · Σ_d KL(Beta(α_d, β_d) ‖
    Beta(a, b)). A zero weight masks the site out, as for the gates.
    """
    with kl_weighted_plate("dims", dims, kl_weight, rows):
        yield


def _positive_parameter(value: float, size: int) -> nn.Parameter:
    """A raw parameter whose softplus plus the floor equals ``value`` > 0."""
    shifted = value - CONCENTRATION_FLOOR
    return nn.Parameter(torch.full((size,), shifted + math.log(-math.expm1(-shifted))))


class BetaBernoulliGates(AmortizedGates):
    """Guide for the sites ``relevance`` [D] (plate "dims") and ``gate`` [rows, D] (event dim D)."""

    def __init__(self, in_dim: int, out_dim: int, gate_cfg):
        super().__init__(in_dim, out_dim, gate_cfg)
        self.concentration1_raw = _positive_parameter(gate_cfg.beta_a, out_dim)
        self.concentration0_raw = _positive_parameter(gate_cfg.beta_b, out_dim)

    def relevance(self) -> dist.Beta:
        """q(π_d) = Beta(α_d, β_d), batch shape [D]."""
        return dist.Beta(F.softplus(self.concentration1_raw) + CONCENTRATION_FLOOR,
                         F.softplus(self.concentration0_raw) + CONCENTRATION_FLOOR)

    def forward(self, z, gate_logits, contrastive) -> None:
        rows, dims = z.shape
        with relevance_dims(dims, rows, self.gate_cfg.kl_weight):
            pyro.sample(RELEVANCE_SITE, self.relevance())
        super().forward(z, gate_logits, contrastive)
