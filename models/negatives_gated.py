"""Gates on the negatives only: the paper's text ("filtered out in negative pairs"), taken literally.

    m_{i,d} ~ Bern(ρ)                              (plate over the 2B rows, event dim D)
    factor("contrastive", −InfoNCE⁻(z, m))

    InfoNCE⁻ = −mean_i log( pos_i / (pos_i + Σ_k neg_ik) ),
    pos_i  = exp(ẑ_i · ẑ_j⁺ / τ)                   ẑ = normalize(z): the positive pair sees every dimension
    neg_ik = exp(z̃_i · z̃_k / τ)                    z̃ = normalize(normalize(z) ⊙ m): negatives see the gated rows

Why: with gates on both terms the gate can make a positive pair agree by closing the dimensions
in which its two views differ, which rewards closing object dimensions as much as background ones;
gating only the negatives leaves that shortcut out, so a gate pays off only by removing what the
images of a batch share (the shared background) from their repulsion. The prior, guide and KL are
the paper's (:class:`bayesncl_pyro.models.bernoulli.BernoulliGates`); only the likelihood differs.
"""
from __future__ import annotations

import pyro

from bayesncl_pyro.config.choices import PRIORS
from bayesncl_pyro.distributions.gates import BernoulliGatePrior
from bayesncl_pyro.guides.amortized_gates import AmortizedGates
from bayesncl_pyro.inference.contrastive import gated_rows
from bayesncl_pyro.inference.plates import gate_rows
from bayesncl_pyro.models.family import PriorFamily


class NegativesGated:
    def __init__(self, gate_cfg):
        self.prior_prob = gate_cfg.prior_prob
        self.kl_weight = gate_cfg.kl_weight

    def __call__(self, z, gate_logits, contrastive):
        rows, dims = z.shape
        with gate_rows(rows, self.kl_weight):
            prior = BernoulliGatePrior(z.new_tensor(self.prior_prob)).expand([rows, dims]).to_event(1)
            gate = pyro.sample("gate", prior)
        pyro.factor("contrastive", -contrastive(gated_rows(z, gate), positive_rows=gated_rows(z)))


PRIORS.register("negatives_gated", PriorFamily(model=NegativesGated, guide=AmortizedGates))
