"""A hard-concrete gate prior (Louizos, Welling and Kingma, ICLR 2018, "L0 regularization").

    m_{i,d} ~ HardConcrete(log_alpha_0, β)        (plate over the 2B rows, event dim D)
    factor("contrastive", −InfoNCE(normalize(normalize(z) ⊙ m)))

The prior's location is chosen so that a gate is non-zero with the Bernoulli prior's probability
ρ = ``gate.prior_prob``: from P(m ≠ 0) = sigmoid(log_alpha_0 − β log(−γ/ζ)),

    log_alpha_0 = logit(ρ) + β log(−γ/ζ)

(γ = −0.1, ζ = 1.1; for ρ = 0.8 and β = 2/3, log_alpha_0 ≈ −0.21), with β the guide's temperature
``gate.hard_concrete_temperature``. In ``l0`` mode the gate sites are masked out of the KL and the
prior only names the site; the penalty is the guide's (``guides.hard_concrete_gates``).
"""
from __future__ import annotations

import math

import pyro

from bayesncl_pyro.config.choices import HARD_CONCRETE_MODES, PRIORS
from bayesncl_pyro.distributions.hard_concrete import HardConcrete
from bayesncl_pyro.guides.hard_concrete_gates import HardConcreteGates
from bayesncl_pyro.inference.contrastive import gated_rows
from bayesncl_pyro.inference.plates import gate_rows
from bayesncl_pyro.models.family import PriorFamily

STRETCH = (-0.1, 1.1)


def prior_log_alpha(prior_prob: float, temperature: float, lower: float = STRETCH[0],
                    upper: float = STRETCH[1]) -> float:
    """The log_alpha at which P(m ≠ 0) = ``prior_prob``."""
    return math.log(prior_prob / (1 - prior_prob)) + temperature * math.log(-lower / upper)


class HardConcreteModel:
    def __init__(self, gate_cfg):
        self.temperature = gate_cfg.hard_concrete_temperature
        self.log_alpha = prior_log_alpha(gate_cfg.prior_prob, self.temperature)
        self.kl_weight = gate_cfg.kl_weight
        self.mode = HARD_CONCRETE_MODES.get(gate_cfg.hard_concrete_mode)

    def __call__(self, z, gate_logits, contrastive):
        rows, dims = z.shape
        prior = HardConcrete(z.new_tensor(self.log_alpha), self.temperature, *STRETCH)
        with gate_rows(rows, self.kl_weight), pyro.poutine.mask(mask=self.mode.gate_site_in_kl):
            gate = pyro.sample("gate", prior.expand([rows, dims]).to_event(1))
        pyro.factor("contrastive", -contrastive(gated_rows(z, gate)))


PRIORS.register("hard_concrete", PriorFamily(model=HardConcreteModel, guide=HardConcreteGates))
