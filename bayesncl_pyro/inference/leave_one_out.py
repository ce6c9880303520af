"""The leave-one-out score-function ELBO for exact discrete gates (the ``score`` estimator).

Departs from Pyro idiom on purpose: ``TraceGraph_ELBO`` would give a score-function gradient with
a learned or decaying-average baseline, but not K vectorised particles with the leave-one-out
baseline of Kool et al., which is what keeps the estimator unbiased with low variance here.
"""
from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from bayesncl_pyro.inference.trace_terms import kl_terms, latent_sites, replay_particles


def _silent(rows: torch.Tensor, **kwargs) -> torch.Tensor:
    return rows.new_zeros(())


class LeaveOneOutELBO:
    """Negative ELBO E_q[InfoNCE(m)] + λ·KL with exact discrete gates and an unbiased gradient.

    For the guide's non-reparameterised sites (the ``score`` gates, shape [rows, D]) K = ``particles``
    exact draws m_1..m_K are made at once and the model is replayed on all of them in one vectorised
    call (``torch.func.vmap``), giving f_k = log p(data | m_k) = −InfoNCE(m_k). Then

        value    = −(1/K) Σ_k f_k + KL                     (the Monte-Carlo estimate of the true loss)
        gradient = −(1/K) Σ_k [∇f_k + (f_k − b_k) ∇ log q(m_k)] + ∇KL,   b_k = mean_{j≠k} f_j,

    the score-function (REINFORCE) estimator with the leave-one-out baseline of Kool, van Hoof and
    Welling (2019): b_k does not depend on m_k, so the baseline leaves the gradient unbiased while
    cancelling most of its variance. With K = 1 there is no baseline (plain REINFORCE).

    log q(m_k) is unscaled and unmasked: the λ / rows scale of the gate plate weights the KL, not
    the expectation over q that InfoNCE is averaged under. KLs stay analytic (:func:`kl_terms`);
    they are taken on one guide draw of every site, which is exact for the local gates (their KL
    does not depend on the gate value) and a one-sample pathwise estimate for global latents (π_d).
    Discrete sites must feed only the likelihood, not other latents' priors.

    Called like ``TraceMeanField_ELBO.differentiable_loss(model, guide, z, gate_logits, contrastive)``;
    ``contrastive.value``, when the term records one, is set to the particle mean of InfoNCE.
    """

    def __init__(self, particles: int):
        if particles < 1:
            raise ValueError(f"particles={particles!r} is not allowed; allowed: an integer >= 1")
        self.particles = particles

    def differentiable_loss(self, model, guide, z, gate_logits, contrastive) -> torch.Tensor:
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(z, gate_logits, contrastive))
        model_trace = prune_subsample_sites(
            poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(z, gate_logits, _silent))
        discrete = {name: guide_trace.nodes[name] for name in latent_sites(model_trace)
                    if not guide_trace.nodes[name]["fn"].has_rsample}
        if not discrete:
            raise ValueError("LeaveOneOutELBO: the guide has no non-reparameterised site to take a score gradient of")
        draws = {name: site["fn"].sample((self.particles,)) for name, site in discrete.items()}

        log_likelihood, infonce = replay_particles(model, guide_trace, z, gate_logits, contrastive, draws)
        log_q = sum(site["fn"].log_prob(draws[name]).reshape(self.particles, -1).sum(1)
                    for name, site in discrete.items())
        if self.particles > 1:
            baseline = (log_likelihood.sum() - log_likelihood) / (self.particles - 1)
        else:
            baseline = torch.zeros_like(log_likelihood)
        surrogate = ((log_likelihood - baseline).detach() * log_q).mean()
        if hasattr(contrastive, "value"):
            contrastive.value = infonce.mean()
        elbo = log_likelihood.mean() + (surrogate - surrogate.detach()) - kl_terms(model_trace, guide_trace)
        return -elbo
