"""The DisARM ELBO for exact discrete gates drawn in antithetic pairs (the ``disarm`` estimator).

Departs from Pyro idiom on purpose, like :mod:`.leave_one_out`: Pyro has no antithetic
estimator, so the two draws are replayed through the model in one vectorised call and the
gradient is attached through a surrogate term.
"""
from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.poutine.util import prune_subsample_sites

from bayesncl_pyro.inference.trace_terms import kl_terms, latent_sites, replay_particles


def _silent(rows: torch.Tensor, **kwargs) -> torch.Tensor:
    return rows.new_zeros(())


def disarm_weights(logits: torch.Tensor, b: torch.Tensor, b_tilde: torch.Tensor,
                   f: torch.Tensor, f_tilde: torch.Tensor) -> torch.Tensor:
    """The DisARM estimate of ∇_θ E_{b ~ Bern(σ(θ))}[f(b)] for independent Bernoulli coordinates:

        ½ (f(b) − f(b̃)) · (−1)^{b̃} · 1[b ≠ b̃] · σ(|θ|)

    with (b, b̃) one antithetic pair (:meth:`DisarmBernoulli.antithetic_pair`), f and f̃ scalars.
    Shapes: logits, b, b̃ the same; returns that shape, without gradient."""
    sign = 1 - 2 * b_tilde
    return (0.5 * (f - f_tilde) * sign * (b != b_tilde).to(logits.dtype) * torch.sigmoid(logits.abs())).detach()


def _base(fn):
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn


class DisarmELBO:
    """Negative ELBO E_q[InfoNCE(m)] + λ·KL with exact discrete gates and the DisARM gradient.

    For every antithetic site of the guide (shape [rows, D]) one pair (b, b̃) is drawn and the
    model replayed on both in one ``vmap`` call, giving f = log p(data | b), f̃ = log p(data | b̃).

        value    = −½ (f + f̃) + KL
        gradient = −[½ (∇f + ∇f̃) + Σ_sites disarm_weights · ∇θ] + ∇KL

    where ∇f is the pathwise part through z and θ the guide's gate logits: unbiased for
    ∇ E_q[log p(data | m)], with the variance reduction of the antithetic pair. KLs are analytic
    (:func:`kl_terms`). Called like ``TraceMeanField_ELBO.differentiable_loss``.
    """

    def differentiable_loss(self, model, guide, z, gate_logits, contrastive) -> torch.Tensor:
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(z, gate_logits, contrastive))
        model_trace = prune_subsample_sites(
            poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(z, gate_logits, _silent))
        sites = {name: _base(guide_trace.nodes[name]["fn"]) for name in latent_sites(model_trace)
                 if getattr(_base(guide_trace.nodes[name]["fn"]), "antithetic", False)}
        if not sites:
            raise ValueError("DisarmELBO: the guide has no antithetic site to take a DisARM gradient of")
        pairs = {name: fn.antithetic_pair() for name, fn in sites.items()}
        draws = {name: torch.stack(pair) for name, pair in pairs.items()}

        log_likelihood, infonce = replay_particles(model, guide_trace, z, gate_logits, contrastive, draws)
        f, f_tilde = log_likelihood.detach()
        surrogate = sum((disarm_weights(fn.logits, *pairs[name], f, f_tilde) * fn.logits).sum()
                        for name, fn in sites.items())
        if hasattr(contrastive, "value"):
            contrastive.value = infonce.mean()
        elbo = log_likelihood.mean() + (surrogate - surrogate.detach()) - kl_terms(model_trace, guide_trace)
        return -elbo
