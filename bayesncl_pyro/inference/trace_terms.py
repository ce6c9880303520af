"""The terms of a negative ELBO read off a pair of Pyro traces: the scaled KL of every latent site
and the scaled log-probability of the observed sites (the contrastive factor).

Shared by the score-function ELBO (:mod:`.leave_one_out`), the DisARM ELBO (:mod:`.disarm`) and
the Monte-Carlo true ELBO (:mod:`.true_elbo`), which assemble the loss from traces themselves
instead of through ``TraceMeanField_ELBO``.
"""
from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from torch.distributions import kl_divergence
from torch.func import vmap

from bayesncl_pyro.inference.contrastive import RecordedLoss


def latent_sites(model_trace) -> list[str]:
    return [name for name, site in model_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]]


def _site_log_prob(site: dict, value: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled and masked log-density of a site at its value (or at ``value``), summed."""
    log_prob = site["fn"].log_prob(site["value"] if value is None else value)
    return scale_and_mask(log_prob, site["scale"], site["mask"]).sum()


def kl_terms(model_trace, guide_trace) -> torch.Tensor | float:
    """Σ over latent sites of the scaled KL(q ‖ p): analytic where registered, otherwise the
    one-sample estimate log q(v) − log p(v) at the guide's value v (pathwise sites only); plus the
    guide's own factors (e.g. the expected-L0 penalty), which enter the loss like a KL."""
    total: torch.Tensor | float = 0.0
    for name in latent_sites(model_trace):
        model_site, guide_site = model_trace.nodes[name], guide_trace.nodes[name]
        try:
            kl = kl_divergence(guide_site["fn"], model_site["fn"])
            kl = scale_and_mask(kl, guide_site["scale"], guide_site["mask"]).sum()
        except NotImplementedError:
            if not guide_site["fn"].has_rsample:
                raise ValueError(
                    f"site {name!r}: no registered KL and its guide distribution is not reparameterised"
                ) from None
            kl = _site_log_prob(guide_site) - _site_log_prob(model_site)
        total = total + kl
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and name not in model_trace.nodes:
            total = total + _site_log_prob(site)
    return total


def observed_log_prob(model_trace) -> torch.Tensor | float:
    """Σ of the scaled log-probabilities of the observed sites (here: −InfoNCE)."""
    total: torch.Tensor | float = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            total = total + _site_log_prob(site)
    return total


def replay_particles(model, guide_trace, z, gate_logits, contrastive,
                     draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The model replayed on ``guide_trace`` with the latent values ``draws`` put in, vectorised
    over their leading (particle) dimension in one ``vmap`` call: per particle, the scaled
    log-probability of the observed sites and the InfoNCE the contrastive factor recorded (0 for a
    model that records none)."""

    def replay_on(values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        trace = guide_trace.copy()
        for name, value in values.items():
            trace.nodes[name] = {**trace.nodes[name], "value": value}
        recorder = RecordedLoss(contrastive)
        particle_trace = poutine.trace(poutine.replay(model, trace=trace)).get_trace(z, gate_logits, recorder)
        recorded = recorder.value if recorder.value is not None else z.new_zeros(())
        return observed_log_prob(particle_trace), recorded

    return vmap(replay_on)(draws)
