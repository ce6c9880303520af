"""The shape of the Pyro program: sites, plates, factor placement, and the gate estimators."""
from __future__ import annotations

import functools
import math

import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.distributions import kl_divergence

from bayesncl_pyro import BayesNCL
from bayesncl_pyro.distributions.gates import (
    ConcreteBernoulli,
    StraightThroughBernoulli,
)
from bayesncl_pyro.inference.contrastive import RecordedLoss, two_view_ids


def _traces(net, batch=4):
    x = torch.randn(2 * batch, 3, 32, 32)
    out = net.encode(x)
    term = RecordedLoss(functools.partial(net.contrastive, ids=two_view_ids(batch)))
    args = (out["z"], out["gate_logits"], term)
    guide_trace = poutine.trace(net.guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(net.model, trace=guide_trace)).get_trace(*args)
    return model_trace, guide_trace, out


def test_gate_site_shape_plate_and_factor_outside_plate(tiny_config):
    net = BayesNCL(tiny_config())
    model_trace, guide_trace, out = _traces(net, batch=4)
    rows, dims = 8, net.cfg.model.proj_dim
    for trace in (model_trace, guide_trace):
        site = trace.nodes["gate"]
        assert site["value"].shape == (rows, dims)
        assert site["fn"].batch_shape == (rows,) and site["fn"].event_shape == (dims,)
        assert [f.name for f in site["cond_indep_stack"]] == ["rows"]
        assert site["scale"] == pytest.approx(net.cfg.gate.kl_weight / rows)
    factor = model_trace.nodes["contrastive"]
    assert factor["is_observed"] and factor["cond_indep_stack"] == ()
    assert factor["scale"] == 1.0


def test_ungated_model_has_no_latent_site(tiny_config):
    net = BayesNCL(tiny_config("gate.prior=none"))
    model_trace, guide_trace, out = _traces(net)
    latent = [n for n, s in model_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
    assert latent == [] and out["gate_logits"] is None


def test_backbone_runs_once_per_step(tiny_config):
    net = BayesNCL(tiny_config())
    calls = []
    net.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    net.loss(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    assert calls == [8]


def test_views_get_their_own_gates(tiny_config):
    """Gates are per row: the two views of an image can differ (a shared mask would leak the pair)."""
    torch.manual_seed(0)
    net = BayesNCL(tiny_config("gate.hidden=64")).eval()
    x1 = torch.randn(4, 3, 32, 32)
    x2 = x1 + 0.5 * torch.randn(4, 3, 32, 32)  # a second "view" of the same images
    out = net.encode(torch.cat([x1, x2]))
    term = RecordedLoss(functools.partial(net.contrastive, ids=two_view_ids(4)))
    gates = poutine.trace(net.guide).get_trace(out["z"], out["gate_logits"], term).nodes["gate"]["value"]
    assert gates.shape == (8, net.cfg.model.proj_dim)
    own = [net.guide.posterior(net.encode(v)["gate_logits"]).hard_gate() for v in (x1, x2)]
    assert torch.equal(gates[:4], own[0]) and torch.equal(gates[4:], own[1])
    assert not torch.equal(gates[:4], gates[4:])


def test_clamped_kl_matches_brute_force_sum():
    alpha = torch.tensor([0.001, 0.2, 0.5, 0.93, 0.999], dtype=torch.float64)
    rho = torch.tensor(0.8, dtype=torch.float64)
    q = StraightThroughBernoulli(probs=alpha)
    got = kl_divergence(q, dist.Bernoulli(rho))
    a = alpha.clamp(0.01, 0.99)
    want = torch.tensor([sum(p * math.log(p / r) for p, r in ((ai, 0.8), (1 - ai, 0.2))) for ai in a.tolist()],
                        dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-12)


def test_ste_value_is_the_exact_hard_gate_with_probability_gradient():
    probs = torch.tensor([0.2, 0.5, 0.51, 0.9], requires_grad=True)
    m = StraightThroughBernoulli(probs=probs, threshold=0.5).rsample()
    assert torch.equal(m, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    (m * torch.arange(4.0)).sum().backward()
    assert torch.equal(probs.grad, torch.arange(4.0))


@pytest.mark.parametrize("relax_temperature", [0.3, 1.0, 2.5])
def test_concrete_open_frequency_equals_alpha(relax_temperature):
    """With Logistic noise, P(σ((logit α + L)/λ) > 1/2) = P(L > −logit α) = α for every λ.
    (A single Gumbel draw would give exp(−exp(−logit α)) instead.)"""
    torch.manual_seed(0)
    alpha = torch.tensor([0.1, 0.35, 0.5, 0.8, 0.97])
    n = 200_000
    q = ConcreteBernoulli(probs=alpha, threshold=0.5, relax_temperature=relax_temperature)
    freq = q.sample((n,)).mean(0)
    sd = (alpha * (1 - alpha) / n).sqrt()
    assert torch.all((freq - alpha).abs() < 5 * sd), (freq, alpha)


def test_concrete_gradient_flows_through_relaxed_sample():
    logits = torch.zeros(3, requires_grad=True)
    m = ConcreteBernoulli(logits=logits).rsample()
    assert set(m.tolist()) <= {0.0, 1.0}
    m.sum().backward()
    assert torch.all(logits.grad > 0)


def test_gate_distribution_expands_with_its_threshold():
    q = StraightThroughBernoulli(probs=torch.tensor([0.3, 0.7]), threshold=0.6).expand([5, 2])
    assert q.batch_shape == (5, 2) and q.threshold == 0.6
    assert torch.equal(q.hard_gate()[0], torch.tensor([0.0, 1.0]))
