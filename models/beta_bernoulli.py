"""A Beta-Bernoulli gate prior: a global relevance π_d per output dimension, local gates given it.

    π_d ~ Beta(a, b)                               (plate "dims" over the D output dimensions)
    m_{i,d} | π ~ Bern(π_d)                        (plate over the 2B rows, event dim D)
    factor("contrastive", −InfoNCE(normalize(normalize(z) ⊙ m)))

With the guide's Beta(α_d, β_d) both KLs are analytic (Beta‖Beta from torch, the clamped
Bernoulli‖Bernoulli of ``bayesncl_pyro.distributions.gates``); the local KL is taken at one draw of
π from the guide, which is the pathwise estimate of E_q(π)[KL(q(m) ‖ Bern(π))].
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch.distributions.utils import clamp_probs

from bayesncl_pyro.config.choices import PRIORS
from bayesncl_pyro.distributions.gates import BernoulliGatePrior
from bayesncl_pyro.guides.beta_bernoulli import RELEVANCE_SITE, BetaBernoulliGates, relevance_dims
from bayesncl_pyro.inference.contrastive import gated_rows
from bayesncl_pyro.inference.plates import gate_rows
from bayesncl_pyro.models.family import PriorFamily


class BetaBernoulli:
    def __init__(self, gate_cfg):
        self.beta_a = gate_cfg.beta_a
        self.beta_b = gate_cfg.beta_b
        self.kl_weight = gate_cfg.kl_weight

    def __call__(self, z, gate_logits, contrastive):
        rows, dims = z.shape
        with relevance_dims(dims, rows, self.kl_weight):
            relevance = pyro.sample(RELEVANCE_SITE, dist.Beta(z.new_tensor(self.beta_a), z.new_tensor(self.beta_b)))
        # float32 Beta draws reach 0 and 1 exactly; the gate prior takes logit(π)
        relevance = clamp_probs(relevance)
        with gate_rows(rows, self.kl_weight):
            gate = pyro.sample("gate", BernoulliGatePrior(relevance).expand([rows, dims]).to_event(1))
        pyro.factor("contrastive", -contrastive(gated_rows(z, gate)))


PRIORS.register("beta_bernoulli", PriorFamily(model=BetaBernoulli, guide=BetaBernoulliGates))
