"""Which ELBO trains a run, and the leave-one-out score-function ELBO of exact discrete gates.

The default is ``TraceMeanField_ELBO``: analytic KLs where registered, pathwise gradients through
the guide's ``rsample`` (``ste``, ``concrete``, ``soft``, hard concrete, Beta). A gate estimator
may ask for another ELBO (``estimator.make_elbo(gate_cfg)``); ``score`` asks for
:class:`LeaveOneOutELBO`.
"""
from __future__ import annotations

from typing import Any

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence
from torch.func import vmap

from .contrastive import RecordedLoss

MAX_PLATE_NESTING = 1


def mean_field_elbo() -> TraceMeanField_ELBO:
    """Analytic KL where registered, pathwise gradients; one plate level (the gate rows)."""
    return TraceMeanField_ELBO(max_plate_nesting=MAX_PLATE_NESTING)


def make_elbo(guide, gate_cfg) -> Any:
    """The ELBO the guide's gate estimator asks for (``estimator.make_elbo(gate_cfg)``); guides
    without an estimator (no gates, hard concrete) get :func:`mean_field_elbo`."""
    estimator = getattr(guide, "estimator", None)
    if estimator is not None:
        return estimator.make_elbo(gate_cfg)
    return mean_field_elbo()


def _latent_sites(model_trace) -> list[str]:
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
    for name in _latent_sites(model_trace):
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


def _silent(rows: torch.Tensor) -> torch.Tensor:
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
        discrete = {name: guide_trace.nodes[name] for name in _latent_sites(model_trace)
                    if not guide_trace.nodes[name]["fn"].has_rsample}
        if not discrete:
            raise ValueError("LeaveOneOutELBO: the guide has no non-reparameterised site to take a score gradient of")
        draws = {name: site["fn"].sample((self.particles,)) for name, site in discrete.items()}

        def replay_on(values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            trace = guide_trace.copy()
            for name, value in values.items():
                trace.nodes[name] = {**trace.nodes[name], "value": value}
            recorder = RecordedLoss(contrastive)
            particle_trace = poutine.trace(poutine.replay(model, trace=trace)).get_trace(z, gate_logits, recorder)
            recorded = recorder.value if recorder.value is not None else z.new_zeros(())
            return observed_log_prob(particle_trace), recorded

        log_likelihood, infonce = vmap(replay_on)(draws)
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
