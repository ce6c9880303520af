"""The amortized gate guide q(m | h) = Bernoulli(σ(ℓ(h) / T)), ℓ from an MLP on backbone features.

The MLP reads ``h.detach()``: gradient isolation, so the gates never push the backbone (the
paper's ablation loses 14 SC points without it). How a gate value is drawn from q, and how its
gradient flows, is the estimator (``gate.estimator``, see ``bayesncl_pyro.distributions.gates``).
"""
from __future__ import annotations

import pyro
import torch
from torch import nn

from bayesncl_pyro.config.choices import ESTIMATORS
from bayesncl_pyro.distributions.gates import GateBernoulli
from bayesncl_pyro.inference.plates import at_least_float32, gate_rows


def gate_network(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """F -> hidden -> ... -> D with ReLU between; ``layers`` linear layers (1 to 3)."""
    widths = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            modules.append(nn.ReLU(inplace=True))
        modules.append(nn.Linear(a, b))
    return nn.Sequential(*modules)


class AmortizedGates(nn.Module):
    """Guide for the local ``gate`` site, shape [rows, D], event dim D."""

    uses_gate_estimator = True
    """How a gate is drawn and differentiated is ``gate.estimator`` (validation asks this)."""

    def __init__(self, in_dim: int, out_dim: int, gate_cfg):
        super().__init__()
        self.net = gate_network(in_dim, gate_cfg.hidden, out_dim, gate_cfg.layers)
        self.estimator = ESTIMATORS.get(gate_cfg.estimator)
        self.gate_cfg = gate_cfg

    def gate_logits(self, h: torch.Tensor) -> torch.Tensor:
        """ℓ: [rows, D] logits from ``h.detach()``."""
        return self.net(h.detach())

    def posterior(self, gate_logits: torch.Tensor) -> GateBernoulli:
        """q(m | x) for every row and dimension: Bernoulli(σ(ℓ / T)), batch shape [rows, D]."""
        return self.estimator.from_config(at_least_float32(gate_logits) / self.gate_cfg.temperature, self.gate_cfg)

    def forward(self, z, gate_logits, contrastive) -> None:
        rows = z.shape[0]
        with gate_rows(rows, self.gate_cfg.kl_weight):
            pyro.sample("gate", self.posterior(gate_logits).to_event(1))
