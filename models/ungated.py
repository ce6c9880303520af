"""No gates: plain NCL (non-negative z) or SimCLR (``model.nonneg=none``), same machinery."""
from __future__ import annotations

import pyro

from bayesncl_pyro.config.choices import PRIORS
from bayesncl_pyro.guides.no_gates import NoGates
from bayesncl_pyro.inference.contrastive import gated_rows
from bayesncl_pyro.models.family import PriorFamily


class Ungated:
    """The contrastive factor alone; there is no latent site."""

    def __init__(self, gate_cfg=None):
        pass

    def __call__(self, z, gate_logits, contrastive):
        pyro.factor("contrastive", -contrastive(gated_rows(z)))


PRIORS.register("none", PriorFamily(model=Ungated, guide=NoGates))
