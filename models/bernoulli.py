"""The paper's model: a Bernoulli(ρ) gate on every dimension of every row, then InfoNCE.

    m_{i,d} ~ Bern(ρ)                          (plate over the 2B rows, event dim D)
    factor("contrastive", −InfoNCE(normalize(normalize(z) ⊙ m)))

The factor stands outside the row plate: InfoNCE couples all rows through the negatives.
"""
from __future__ import annotations

import pyro

from bayesncl_pyro.config.choices import PRIORS
from bayesncl_pyro.distributions.gates import BernoulliGatePrior
from bayesncl_pyro.guides.amortized_gates import AmortizedGates
from bayesncl_pyro.inference.contrastive import gated_rows
from bayesncl_pyro.inference.plates import gate_rows
from bayesncl_pyro.models.family import PriorFamily


class BernoulliGates:
    def __init__(self, gate_cfg):
        self.prior_prob = gate_cfg.prior_prob
        self.kl_weight = gate_cfg.kl_weight

    def draw_gates(self, z):
        """The ``gate`` site: one Bern(ρ) gate per row and dimension, its KL scaled by λ."""
        rows, dims = z.shape
        with gate_rows(rows, self.kl_weight):
            prior = BernoulliGatePrior(z.new_tensor(self.prior_prob)).expand([rows, dims]).to_event(1)
            return pyro.sample("gate", prior)

    def __call__(self, z, gate_logits, contrastive):
        gate = self.draw_gates(z)
        pyro.factor("contrastive", -contrastive(gated_rows(z, gate)))


PRIORS.register("bernoulli", PriorFamily(model=BernoulliGates, guide=AmortizedGates))
