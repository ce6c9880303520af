"""The prior families: every prior × estimator trains, the registered KLs equal brute-force
references, each family's loss equals its objective written out by hand, Beta draws are clamped
before any logit, and the example of docs/adding_a_prior.md runs."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pyro import poutine

from bayesncl_pyro import BayesNCL
from bayesncl_pyro.config import GateConfig
from bayesncl_pyro.config.choices import PRIORS
from bayesncl_pyro.distributions import HardConcrete
from bayesncl_pyro.guides.amortized_gates import AmortizedGates
from bayesncl_pyro.guides.beta_bernoulli import CONCENTRATION_FLOOR, BetaBernoulliGates
from bayesncl_pyro.inference.contrastive import gated_rows, two_view_ids
from bayesncl_pyro.models.bernoulli import BernoulliGates
from bayesncl_pyro.models.beta_bernoulli import BetaBernoulli
from bayesncl_pyro.models.hard_concrete import STRETCH, prior_log_alpha
from bayesncl_pyro.training.loop import train

from .conftest import ROOT

COMBINATIONS = [
    *(("bernoulli", e, "l0") for e in ("ste", "concrete", "soft", "score")),
    *(("beta_bernoulli", e, "l0") for e in ("ste", "concrete", "soft", "score")),
    ("hard_concrete", "ste", "l0"),
    ("hard_concrete", "ste", "mc"),
    ("none", "ste", "l0"),
]
STEPS = 20




@pytest.mark.parametrize("prior,estimator,mode", COMBINATIONS)
def test_every_prior_and_estimator_trains(tiny_config, prior, estimator, mode):
    cfg = tiny_config(f"gate.prior={prior}", f"gate.estimator={estimator}", f"gate.hard_concrete_mode={mode}",
                      "gate.kl_weight=0.01", f"train.steps={STEPS}", "train.epochs=3", "gate.particles=3")
    summary = train(cfg, progress=False)
    records = [json.loads(line) for line in (Path(cfg.train.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["infonce"]) for r in records)
    assert summary["steps"] == STEPS and math.isfinite(summary["final_loss"])
    if prior != "none":
        assert 0.0 <= summary["open_rate"] <= 1.0


# ----------------------------------------------------------------------------- KL registrations

def _traces(model, guide, z, gate_logits):
    guide_trace = poutine.trace(guide).get_trace(z, gate_logits, lambda rows: rows.new_zeros(()))
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        z, gate_logits, lambda rows: rows.new_zeros(()))
    return model_trace, guide_trace


def _brute_force_bernoulli_kl(alpha: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Σ_d Σ_{m ∈ {0,1}} q(m) log(q(m)/p(m)) with α, ρ clamped to [0.01, 0.99] first (SPEC §3)."""
    a, r = alpha.double().clamp(0.01, 0.99), rho.double().clamp(0.01, 0.99)
    total = torch.zeros_like(a)
    for q_m, p_m in ((a, r), (1 - a, 1 - r)):
        total = total + q_m * (torch.log(q_m) - torch.log(p_m))
    return total.sum(-1)


@pytest.mark.parametrize("estimator", ["ste", "concrete", "soft", "score"])
def test_bernoulli_kl_at_the_gate_site_is_the_clamped_sum(estimator):
    cfg = GateConfig(estimator=estimator, prior_prob=0.995)
    generator = torch.Generator().manual_seed(0)
    z = torch.rand(6, 5, generator=generator)
    gate_logits = torch.tensor([[-8.0, -1.0, 0.0, 2.0, 9.0]]).repeat(6, 1) + torch.rand(6, 5, generator=generator)
    model_trace, guide_trace = _traces(BernoulliGates(cfg), AmortizedGates(3, 5, cfg), z, gate_logits)
    q, p = guide_trace.nodes["gate"]["fn"], model_trace.nodes["gate"]["fn"]
    kl = torch.distributions.kl_divergence(q, p)
    reference = _brute_force_bernoulli_kl(torch.sigmoid(gate_logits), torch.full((6, 5), 0.995))
    assert kl.shape == (6,)
    assert torch.allclose(kl.double(), reference, atol=1e-6, rtol=1e-5)


def test_beta_bernoulli_kls_match_numeric_integration_and_the_sum():
    """Global site: KL(Beta(α_d, β_d) ‖ Beta(a, b)) against adaptive quadrature of ∫ q log(q/p);
    local site: the clamped Bernoulli sum at the guide's draw of π."""
    integrate = pytest.importorskip("scipy.integrate")
    stats = pytest.importorskip("scipy.stats")
    guide_cfg = GateConfig(prior="beta_bernoulli", beta_a=0.7, beta_b=2.5)
    model_cfg = GateConfig(prior="beta_bernoulli", beta_a=4.0, beta_b=1.0)
    guide = BetaBernoulliGates(3, 4, guide_cfg)
    with torch.no_grad():
        guide.concentration1_raw[1:] += torch.tensor([0.5, 1.5, 3.0])
        guide.concentration0_raw[2:] -= torch.tensor([1.0, 2.0])
    z, gate_logits = torch.rand(6, 4), torch.randn(6, 4)
    model_trace, guide_trace = _traces(BetaBernoulli(model_cfg), guide, z, gate_logits)

    q, p = guide_trace.nodes["relevance"]["fn"], model_trace.nodes["relevance"]["fn"]
    kl = torch.distributions.kl_divergence(q, p)
    for d in range(4):
        qa, qb = q.concentration1[d].item(), q.concentration0[d].item()

        def integrand(x, qa=qa, qb=qb):
            log_q = stats.beta.logpdf(x, qa, qb)
            return math.exp(log_q) * (log_q - stats.beta.logpdf(x, 4.0, 1.0))

        reference, _ = integrate.quad(integrand, 0.0, 1.0, limit=200, epsabs=1e-10)
        assert kl[d].item() == pytest.approx(reference, rel=1e-4, abs=1e-6), d

    relevance = guide_trace.nodes["relevance"]["value"]
    local = torch.distributions.kl_divergence(guide_trace.nodes["gate"]["fn"], model_trace.nodes["gate"]["fn"])
    reference = _brute_force_bernoulli_kl(torch.sigmoid(gate_logits), relevance.expand(6, 4))
    assert torch.allclose(local.double(), reference, atol=1e-6, rtol=1e-5)


def test_beta_draws_are_clamped_before_any_logit():
    """π exactly 0 or 1 (float32 Beta draws reach both) gives finite gate-prior logits, KL and loss."""
    cfg = GateConfig(prior="beta_bernoulli", kl_weight=0.5)
    relevance = torch.tensor([0.0, 1.0, 0.0, 1.0])
    z = torch.rand(6, 4, requires_grad=True)
    conditioned = poutine.condition(BetaBernoulli(cfg), data={"relevance": relevance})
    trace = poutine.trace(conditioned).get_trace(z, None, lambda rows: rows.new_zeros(()))
    prior = trace.nodes["gate"]["fn"].base_dist
    assert torch.all((prior.probs > 0) & (prior.probs < 1))
    assert torch.all(torch.isfinite(prior.logits))
    assert torch.all(torch.isfinite(prior.log_prob(torch.tensor([1.0, 0.0, 0.0, 1.0]).expand(6, 4))))


def test_degenerate_beta_guide_gives_finite_loss_and_gradients(tiny_config):
    """Concentrations of 0.01 put a large share of the guide's float32 draws at the smallest normal
    number or within one ulp of 1."""
    cfg = tiny_config("gate.prior=beta_bernoulli", "gate.kl_weight=0.5")
    torch.manual_seed(0)
    net = BayesNCL(cfg)
    with torch.no_grad():
        raw = math.log(math.expm1(0.01 - CONCENTRATION_FLOOR))
        net.guide.concentration1_raw.fill_(raw)
        net.guide.concentration0_raw.fill_(raw)
    x1, x2 = torch.randn(2, 4, 3, 32, 32)
    draws = net.guide.relevance().rsample((200,))
    assert ((draws < 1e-30) | (draws > 1 - 1e-6)).float().mean() > 0.3
    for _ in range(5):
        net.zero_grad()
        loss = net.loss(x1, x2)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.all(torch.isfinite(p.grad)) for p in net.parameters() if p.grad is not None)


# ----------------------------------------------------------------------------- losses by hand

def _encode(net, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(2, 4, 3, 32, 32, generator=generator)
    out = net.encode(torch.cat([x1, x2]))
    return x1, x2, out["z"], out["gate_logits"], two_view_ids(4)


def test_beta_bernoulli_loss_is_its_objective(tiny_config):
    """InfoNCE(ste gates) + λ/rows Σ_d KL(Beta‖Beta) + λ mean_rows Σ_d KL(Bern(α) ‖ Bern(π)), π the
    guide's draw (reproduced from the same seed)."""
    kl_weight = 0.3
    cfg = tiny_config("gate.prior=beta_bernoulli", f"gate.kl_weight={kl_weight}", "gate.beta_a=2.0", "gate.beta_b=3.0")
    torch.manual_seed(0)
    net = BayesNCL(cfg)
    with torch.no_grad():
        net.guide.concentration1_raw.add_(torch.linspace(-1, 1, cfg.model.proj_dim))
    x1, x2, z, gate_logits, ids = _encode(net)
    torch.manual_seed(5)
    loss = net.loss(x1, x2)
    torch.manual_seed(5)
    q_relevance = net.guide.relevance()
    pi = q_relevance.rsample()
    alpha = torch.sigmoid(gate_logits / cfg.gate.temperature)
    gate = (alpha > cfg.gate.threshold).float()
    rows = z.shape[0]
    global_kl = torch.distributions.kl_divergence(q_relevance, torch.distributions.Beta(2.0, 3.0)).sum()
    local_kl = _brute_force_bernoulli_kl(alpha, pi.expand_as(alpha)).mean()
    reference = net.contrastive(gated_rows(z, gate), ids) + kl_weight / rows * global_kl + kl_weight * local_kl
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)


@pytest.mark.parametrize("mode", ["l0", "mc"])
def test_hard_concrete_loss_is_its_objective(tiny_config, mode):
    """l0: InfoNCE(m) + λ mean_rows Σ_d P(m ≠ 0); mc: InfoNCE(m) + λ/rows Σ (log q(m) − log p(m)),
    m the guide's hard-concrete draw (reproduced from the same seed)."""
    kl_weight, rho, beta = 0.2, 0.7, 0.5
    cfg = tiny_config("gate.prior=hard_concrete", f"gate.hard_concrete_mode={mode}", f"gate.kl_weight={kl_weight}",
                      f"gate.prior_prob={rho}", f"gate.hard_concrete_temperature={beta}", "gate.temperature=0.8")
    torch.manual_seed(0)
    net = BayesNCL(cfg)
    x1, x2, z, gate_logits, ids = _encode(net)
    torch.manual_seed(7)
    loss = net.loss(x1, x2)
    torch.manual_seed(7)
    q = HardConcrete(gate_logits / 0.8, beta, *STRETCH)
    m = q.rsample()
    assert torch.any((m > 0) & (m < 1)) and torch.any(m == 0)
    if mode == "l0":
        penalty = kl_weight * q.prob_nonzero().sum(1).mean()
    else:
        p = HardConcrete(torch.tensor(prior_log_alpha(rho, beta)), beta, *STRETCH)
        penalty = kl_weight / z.shape[0] * (q.log_prob(m) - p.log_prob(m)).sum()
    reference = net.contrastive(gated_rows(z, m), ids) + penalty
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)


def test_hard_concrete_prior_is_open_with_prior_prob():
    """P(m ≠ 0) = ρ under the prior, in closed form and in Monte-Carlo frequency."""
    for rho, beta in ((0.8, 2 / 3), (0.3, 0.4)):
        log_alpha = prior_log_alpha(rho, beta)
        prior = HardConcrete(torch.tensor(log_alpha, dtype=torch.float64), beta, *STRETCH)
        assert prior.prob_nonzero().item() == pytest.approx(rho, abs=1e-12)
        torch.manual_seed(0)
        n = 200_000
        frequency = (prior.sample((n,)) != 0).double().mean().item()
        assert abs(frequency - rho) < 5 * math.sqrt(rho * (1 - rho) / n)
    assert prior_log_alpha(0.8, 2 / 3) == pytest.approx(math.log(4) + 2 / 3 * math.log(0.1 / 1.1))


# ----------------------------------------------------------------------------- the documented example

@pytest.fixture
def documented_prior():
    text = (ROOT / "docs" / "adding_a_prior.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.splitlines()) <= 40
    namespace: dict = {"__name__": "bayesncl_pyro.models.ordered_bernoulli"}
    exec(compile(code, "docs/adding_a_prior.md", "exec"), namespace)
    yield namespace
    PRIORS._entries.pop("ordered_bernoulli", None)


def test_adding_a_prior_example_runs(tiny_config, documented_prior):
    """The documented prior: loss = InfoNCE(ste gates) + λ mean_rows Σ_d KL(Bern(α_d) ‖ Bern(ρ^(1+d/D))),
    and it trains with every estimator family member it claims (here: score)."""
    assert "ordered_bernoulli" in PRIORS
    kl_weight, rho = 0.4, 0.8
    cfg = tiny_config("gate.prior=ordered_bernoulli", f"gate.kl_weight={kl_weight}", f"gate.prior_prob={rho}")
    torch.manual_seed(0)
    net = BayesNCL(cfg)
    x1, x2, z, gate_logits, ids = _encode(net)
    loss = net.loss(x1, x2)
    dims = z.shape[1]
    rho_d = torch.tensor([rho ** (1 + d / dims) for d in range(dims)])
    alpha = torch.sigmoid(gate_logits / cfg.gate.temperature)
    gate = (alpha > cfg.gate.threshold).float()
    reference = net.contrastive(F.normalize(F.normalize(z, dim=1) * gate, dim=1), ids) \
        + kl_weight * _brute_force_bernoulli_kl(alpha, rho_d.expand_as(alpha)).mean()
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)

    summary = train(tiny_config("gate.prior=ordered_bernoulli", "gate.estimator=score", "train.steps=5"), progress=False)
    assert summary["steps"] == 5 and math.isfinite(summary["final_loss"])
