"""A plain learned hard mask: the non-Bayesian control of the gates (an ablation, not the method).

    m_d = 1[σ(θ_d / T) > threshold]      one learned logit θ_d per output dimension, the same for
                                         every image; straight-through gradient of σ(θ_d / T)
    factor("contrastive", −InfoNCE(normalize(normalize(z) ⊙ m)))

Why it is here: to ask what carries the SC gain of the paper's straight-through gates. It keeps
what ``ste`` does to the contrastive term — a hard 0/1 mask on the output dimensions with a
straight-through gradient — and drops everything that makes the method Bayesian: there is no
latent, so no sample site, no prior and no KL (``gate.kl_weight`` and ``gate.prior_prob`` do not
enter), and nothing is amortized (the mask does not depend on the image). If this control
reproduces ``ste``'s gain, the gain does not need the Bayesian formulation.

The mask's logits live in the guide module (:class:`bayesncl_pyro.guides.learned_mask.MaskLogits`),
the network's home for gate parameters, and reach the model as ``gate_logits`` [rows, D].
"""
from __future__ import annotations

import pyro
import torch

from bayesncl_pyro.config.choices import PRIORS
from bayesncl_pyro.distributions.gates import straight_through
from bayesncl_pyro.guides.learned_mask import MaskLogits
from bayesncl_pyro.inference.contrastive import gated_rows
from bayesncl_pyro.inference.plates import at_least_float32
from bayesncl_pyro.models.family import PriorFamily


def straight_through_mask(mask_logits: torch.Tensor, temperature: float, threshold: float) -> torch.Tensor:
    """1[σ(θ / T) > threshold] in value, gradient of σ(θ / T); any shape."""
    probs = torch.sigmoid(at_least_float32(mask_logits) / temperature)
    return straight_through((probs > threshold).to(probs.dtype), probs)


class LearnedMask:
    has_prior = False
    """No latent and no prior: ``bayesncl-inspect`` writes no prior group for it."""

    def __init__(self, gate_cfg):
        self.temperature = gate_cfg.temperature
        self.threshold = gate_cfg.threshold

    def __call__(self, z, gate_logits, contrastive):
        mask = straight_through_mask(gate_logits, self.temperature, self.threshold)
        pyro.factor("contrastive", -contrastive(gated_rows(z, mask)))


PRIORS.register("learned_mask", PriorFamily(model=LearnedMask, guide=MaskLogits))
