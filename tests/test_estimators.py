"""Gate estimators against exact enumeration: the score-function ELBO is unbiased (value and
gradient), ``soft`` gates are α itself, and the true-ELBO estimate matches the exact expectation.

The reference (``tests/gate_enumeration.py``) enumerates all 2^8 gate configurations of a 4-row,
2-dimension problem (B = 2 images, two views each: the smallest InfoNCE with both positives and
negatives) and takes the expectation under q(m) = Π Bern(α) exactly; its KL is written from SPEC §3.
"""
from __future__ import annotations

import functools

import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from bayesncl_pyro import BayesNCL
from bayesncl_pyro.config import GateConfig
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.guides.amortized_gates import AmortizedGates
from bayesncl_pyro.inference.contrastive import RecordedLoss, gated_rows, two_view_ids
from bayesncl_pyro.inference.elbo import make_elbo
from bayesncl_pyro.inference.leave_one_out import LeaveOneOutELBO
from bayesncl_pyro.inference.true_elbo import true_negative_elbo
from bayesncl_pyro.models.bernoulli import BernoulliGates

from . import gate_enumeration
from .gate_enumeration import (DIMS, Z_SCORE, all_gate_configurations, assert_unbiased, exact_negative_elbo,
                               spec_kl)


@pytest.fixture
def tiny_problem():
    return gate_enumeration.tiny_problem()


def _model_guide(estimator: str, **gate):
    cfg = GateConfig(estimator=estimator, temperature=1.0, **gate)
    return cfg, BernoulliGates(cfg), AmortizedGates(3, DIMS, cfg)


def test_make_elbo_follows_the_estimator():
    for estimator in ("ste", "concrete", "soft"):
        cfg, _, guide = _model_guide(estimator)
        assert isinstance(make_elbo(guide, cfg), TraceMeanField_ELBO)
    cfg, _, guide = _model_guide("score", particles=3)
    elbo = make_elbo(guide, cfg)
    assert isinstance(elbo, LeaveOneOutELBO) and elbo.particles == 3


def test_score_estimator_is_unbiased(tiny_problem):
    """Mean value and mean gradient (w.r.t. z and the gate logits) over many draws equal the exact
    ones within five standard errors; the straight-through gradient of the same problem does not."""
    assert isinstance(assert_unbiased(tiny_problem, draws=1000, estimator="score", particles=8), LeaveOneOutELBO)


def test_score_loss_records_the_particle_mean_of_infonce(tiny_problem):
    z, logits, ids, infonce = tiny_problem
    cfg, model, guide = _model_guide("score", particles=5, kl_weight=0.0)
    term = RecordedLoss(functools.partial(infonce, ids=ids))
    loss = make_elbo(guide, cfg).differentiable_loss(model, guide, z, logits, term)
    assert term.value.shape == () and torch.isfinite(term.value)
    assert abs(loss.item() - term.value.item()) < 1e-12  # λ = 0: the loss is the InfoNCE average


def test_soft_gate_is_alpha_exactly(tiny_problem):
    """m = σ(ℓ / T) bit for bit, Pyro's validation passes on the relaxed value, and the loss is
    InfoNCE(normalize(normalize(z) ⊙ α)) + λ mean_rows Σ_d KL."""
    z, logits, ids, infonce = tiny_problem
    z, logits = z.detach().float(), logits.detach().float()  # the guide works in float32
    kl_weight, rho, temperature = 0.2, 0.8, 0.7
    cfg = GateConfig(estimator="soft", temperature=temperature, kl_weight=kl_weight, prior_prob=rho)
    model, guide = BernoulliGates(cfg), AmortizedGates(3, DIMS, cfg)
    alpha = torch.sigmoid(logits / temperature)
    trace = pyro.poutine.trace(guide).get_trace(z, logits, None)
    assert torch.equal(trace.nodes["gate"]["value"], alpha)
    assert not torch.all((alpha == 0) | (alpha == 1))
    with pyro.validation_enabled(True):
        loss = make_elbo(guide, cfg).differentiable_loss(model, guide, z, logits, RecordedLoss(functools.partial(infonce, ids=ids)))
    reference = infonce(gated_rows(z, alpha), ids) + kl_weight * spec_kl(alpha, rho).mean()
    assert abs(loss.item() - reference.item()) < 1e-6


def test_true_elbo_matches_exact_enumeration(tiny_config):
    """The Monte-Carlo true negative ELBO of a network (D = 2, B = 2) is within five of its own
    standard errors of the exact expectation, and the standard error is of the right size."""
    kl_weight, rho = 0.5, 0.8
    cfg = tiny_config("model.proj_dim=2", f"gate.kl_weight={kl_weight}", f"gate.prior_prob={rho}")
    torch.manual_seed(0)
    net = BayesNCL(cfg).double().eval()
    generator = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(2, 2, 3, 32, 32, generator=generator, dtype=torch.float64)
    samples = 800
    estimate = true_negative_elbo(net, x1, x2, samples=samples, seed=3)
    with torch.no_grad():
        out = net.encode(torch.cat([x1, x2]))
        alpha = torch.sigmoid(out["gate_logits"] / cfg.gate.temperature)
        ids = two_view_ids(2)
        exact = exact_negative_elbo(out["z"], alpha, net.contrastive, ids, kl_weight, rho)
        configs = all_gate_configurations()
        q = (alpha * configs + (1 - alpha) * (1 - configs)).flatten(1).prod(1)
        losses = torch.stack([net.contrastive(gated_rows(out["z"], m), ids) for m in configs])
        exact_sd = ((q * (losses - (q * losses).sum()) ** 2).sum()).sqrt()
    assert estimate["samples"] == samples
    assert abs(estimate["negative_elbo"] - exact.item()) <= Z_SCORE * estimate["stderr"] + 1e-9
    assert estimate["stderr"] == pytest.approx(exact_sd.item() / samples ** 0.5, rel=0.15)
    assert estimate["kl"] == pytest.approx(kl_weight * spec_kl(alpha, rho).mean().item(), rel=1e-6)
    again = true_negative_elbo(net, x1, x2, samples=samples, seed=3)
    assert again == estimate


def test_score_and_soft_need_bernoulli_gates(tiny_config):
    for estimator in ("score", "soft", "concrete"):
        with pytest.raises(ConfigError, match="gate.estimator.*hard_concrete"):
            tiny_config("gate.prior=hard_concrete", f"gate.estimator={estimator}")
    tiny_config("gate.prior=hard_concrete")
    tiny_config("gate.prior=beta_bernoulli", "gate.estimator=score")


def test_surrogate_of_deterministic_gates_is_their_plug_in_loss(tiny_config):
    """With ste the surrogate is InfoNCE at the thresholded gates + KL; the true objective averages
    InfoNCE over exact Bernoulli draws, so the two differ unless every gate is certain."""
    from bayesncl_pyro.inference.true_elbo import surrogate_negative_elbo

    torch.manual_seed(0)
    net = BayesNCL(tiny_config("gate.estimator=ste", "gate.kl_weight=0.1"))
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        plug_in = net.loss(x1, x2).item()
    assert surrogate_negative_elbo(net, x1, x2) == pytest.approx(plug_in, abs=1e-6)
    true = true_negative_elbo(net, x1, x2, samples=64, seed=0)
    assert abs(true["negative_elbo"] - plug_in) > 3 * true["stderr"]
