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
from bayesncl_pyro.guides.amortized_gates import AmortizedGates
from bayesncl_pyro.inference.contrastive import gated_rows
from bayesncl_pyro.models.bernoulli import BernoulliGates
from bayesncl_pyro.models.family import PriorFamily


class NegativesGated(BernoulliGates):
    """The paper's prior; the likelihood sees the ungated rows in the positive pairs."""

    def __call__(self, z, gate_logits, contrastive):
        gate = self.draw_gates(z)
        pyro.factor("contrastive", -contrastive(gated_rows(z, gate), positive_rows=gated_rows(z)))


PRIORS.register("negatives_gated", PriorFamily(model=NegativesGated, guide=AmortizedGates))
