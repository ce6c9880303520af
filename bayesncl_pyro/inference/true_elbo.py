"""The true negative ELBO of a trained network on a fixed batch, by Monte Carlo over exact gates.

A run's logged loss is the surrogate its estimator optimises: with ``ste`` the gate is the
deterministic 1[α > threshold], with ``soft`` it is α, with ``concrete`` a thresholded relaxed
draw. The objective they all stand in for is the negative ELBO of the Bernoulli(α) posterior,

    L = E_{m ~ Bern(α)}[InfoNCE(m)] + λ · mean_rows Σ_d KL(Bern(α) ‖ prior),

which is what this module estimates, from exact draws m ~ Bern(α) of the guide's own α. A
straight-through run can lower its surrogate while this value rises. For ``beta_bernoulli`` each
draw also draws π ~ q(π), and the global KL is included; for ``hard_concrete`` the draws come from
the hard-concrete guide (with its Monte-Carlo KL, or the expected-L0 penalty in ``l0`` mode); an
ungated network has no randomness (standard error 0).
"""
from __future__ import annotations

import functools
import math

import pyro
import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from bayesncl_pyro.distributions.gates import GateBernoulli, ScoreBernoulli
from bayesncl_pyro.inference.contrastive import RecordedLoss, two_view_ids
from bayesncl_pyro.inference.trace_terms import kl_terms, observed_log_prob


class ExactGates(Messenger):
    """Swaps every Bernoulli gate estimator in the guide for exact draws from the same Bern(α)."""

    def _pyro_sample(self, msg) -> None:
        fn, event_dims = msg["fn"], 0
        while isinstance(fn, Independent):
            event_dims += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        if isinstance(fn, GateBernoulli) and not isinstance(fn, ScoreBernoulli):
            msg["fn"] = ScoreBernoulli(probs=fn.probs, threshold=fn.threshold).to_event(event_dims)


def _fork_rng(device: torch.device):
    devices = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


@torch.no_grad()
def true_negative_elbo(net, x1: torch.Tensor, x2: torch.Tensor, samples: int = 64,
                       seed: int | None = 0) -> dict[str, float]:
    """Monte-Carlo estimate of the true negative ELBO of ``net`` on two views [B, 3, S, S].

    The network runs once, in eval mode; then ``samples`` independent draws of every latent from
    the guide (gates exact) each give −log p(data | m) + KL, where a KL is analytic when
    registered and log q − log p at the draw otherwise. With ``seed`` the draws are reproducible
    and the global random state is left untouched.

    Returns ``negative_elbo`` (the mean), ``stderr`` (its standard error, sd / √samples),
    ``infonce`` and ``kl`` (their means) and ``samples``.
    """
    if samples < 2:
        raise ValueError(f"samples={samples!r} is not allowed; allowed: an integer >= 2 (64 or more for a report)")
    was_training = net.training
    net.eval()
    try:
        with _fork_rng(x1.device):
            if seed is not None:
                torch.manual_seed(seed)
            out = net.encode(torch.cat([x1, x2]))
            z = out["z"].float()
            gate_logits = None if out["gate_logits"] is None else out["gate_logits"].float()
            ids = two_view_ids(x1.shape[0], device=x1.device)
            infonce, kl = [], []
            for _ in range(samples):
                term = RecordedLoss(functools.partial(net.contrastive, ids=ids))
                guide_trace = prune_subsample_sites(
                    poutine.trace(ExactGates()(net.guide)).get_trace(z, gate_logits, term))
                model_trace = prune_subsample_sites(
                    poutine.trace(poutine.replay(net.model, trace=guide_trace)).get_trace(z, gate_logits, term))
                infonce.append(-torch.as_tensor(observed_log_prob(model_trace), dtype=torch.float64))
                kl.append(torch.as_tensor(kl_terms(model_trace, guide_trace), dtype=torch.float64))
    finally:
        net.train(was_training)
    infonce_draws = torch.stack([v.cpu() for v in infonce])
    kl_draws = torch.stack([v.cpu() for v in kl])
    values = infonce_draws + kl_draws
    return {
        "negative_elbo": values.mean().item(),
        "stderr": values.std().item() / math.sqrt(samples),
        "infonce": infonce_draws.mean().item(),
        "kl": kl_draws.mean().item(),
        "samples": samples,
    }


def surrogate_negative_elbo(net, x1: torch.Tensor, x2: torch.Tensor, seed: int | None = 0) -> float:
    """The loss the estimator trains on (``net.loss``), in eval mode on the same batch: set beside
    :func:`true_negative_elbo`, it shows how far a straight-through surrogate is from the objective."""
    was_training = net.training
    net.eval()
    try:
        with _fork_rng(x1.device), torch.no_grad(), pyro.validation_enabled(False):
            if seed is not None:
                torch.manual_seed(seed)
            return float(net.loss(x1, x2))
    finally:
        net.train(was_training)
