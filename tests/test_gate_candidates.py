"""The gate candidates beyond the paper against independent references: the negatives-only InfoNCE
against a brute-force loop, the frequency-aware prior's loss against a hand computation, and the
DisARM estimator's value and gradient against exact enumeration of every gate configuration
(``tests/gate_enumeration.py``'s 4-row, 2-dimension problem) within five standard errors."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch

from bayesncl_pyro.config import GateConfig
from bayesncl_pyro.config.choices import ESTIMATORS, PRIORS
from bayesncl_pyro.guides.amortized_gates import AmortizedGates
from bayesncl_pyro.inference.contrastive import InfoNCE, RecordedLoss, gated_rows, two_view_ids
from bayesncl_pyro.inference.disarm import DisarmELBO
from bayesncl_pyro.inference.elbo import make_elbo
from bayesncl_pyro.models.frequency_bernoulli import FrequencyBernoulli
from bayesncl_pyro.models.negatives_gated import NegativesGated

from . import gate_enumeration
from .gate_enumeration import DIMS, Z_SCORE, assert_unbiased, spec_kl

TOLERANCE = 1e-9  # float64 references


@pytest.fixture
def tiny_problem():
    return gate_enumeration.tiny_problem()


def brute_force_negatives_gated(ungated: torch.Tensor, gated: torch.Tensor, ids: torch.Tensor, tau: float) -> float:
    """−mean_i log(pos_i / (pos_i + Σ_k neg_ik)), one row and one pair at a time, in Python floats."""
    rows = ungated.shape[0]
    total = 0.0
    for i in range(rows):
        positive = [j for j in range(rows) if j != i and ids[j] == ids[i]]
        pos = sum(math.exp(float(ungated[i] @ ungated[j]) / tau) for j in positive)
        neg = sum(math.exp(float(gated[i] @ gated[k]) / tau) for k in range(rows) if k != i and ids[k] != ids[i])
        total += -math.log(pos / (pos + neg))
    return total / rows


def test_candidates_are_registered():
    assert {"negatives_gated", "frequency_bernoulli"} <= set(PRIORS.names())
    assert "disarm" in ESTIMATORS.names()
    assert PRIORS.get("negatives_gated").uses_gate_estimator and PRIORS.get("frequency_bernoulli").uses_gate_estimator


def test_negatives_only_infonce_matches_a_loop():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(6, 5, generator=generator, dtype=torch.float64).relu()
    gate = (torch.rand(6, 5, generator=generator, dtype=torch.float64) > 0.4).to(torch.float64)
    ids, tau = two_view_ids(3), 0.3
    ungated, gated = gated_rows(z), gated_rows(z, gate)
    value = InfoNCE(tau)(gated, ids, positive_rows=ungated)
    assert abs(value.item() - brute_force_negatives_gated(ungated, gated, ids, tau)) < TOLERANCE
    # power: the paper's InfoNCE (positives gated too) differs on the same rows
    assert abs(InfoNCE(tau)(gated, ids).item() - value.item()) > 1e-3


def test_negatives_gated_loss_is_the_negatives_only_infonce_plus_kl(tiny_problem):
    """Through the ELBO with ste gates: InfoNCE⁻(z, 1[α > ½]) + λ mean_rows Σ_d KL(α ‖ ρ)."""
    z, logits, ids, infonce = tiny_problem
    z, logits = z.detach(), logits.detach()
    kl_weight, rho = 0.2, 0.8
    cfg = GateConfig(estimator="ste", kl_weight=kl_weight, prior_prob=rho)
    model, guide = NegativesGated(cfg), AmortizedGates(3, DIMS, cfg)
    loss = make_elbo(guide, cfg).differentiable_loss(model, guide, z, logits, RecordedLoss(functools.partial(infonce, ids=ids)))
    alpha = torch.sigmoid(logits)
    reference = brute_force_negatives_gated(gated_rows(z), gated_rows(z, (alpha > 0.5).double()), ids, infonce.temperature)
    reference += kl_weight * spec_kl(alpha, rho).mean().item()
    assert abs(loss.item() - reference) < 1e-6  # the guide computes α in float32


def test_frequency_prior_loss_matches_a_hand_computation():
    """ρ_d = ρ (1 − f_d) with f_d counted by hand; the loss is InfoNCE(1[α > ½]) + λ mean_rows
    Σ_d KL(α ‖ ρ_d), both probabilities clamped to [0.01, 0.99]."""
    z = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.0, 0.0], [2.0, 1.0, 0.0], [0.1, 0.0, 0.0]], dtype=torch.float64)
    logits = torch.tensor([[1.0, -1.0, 0.3], [0.2, 2.0, -0.5], [1.5, 0.1, -2.0], [0.7, -0.3, 1.0]], dtype=torch.float64)
    ids, infonce = two_view_ids(2), InfoNCE(0.5)
    kl_weight, rho = 0.3, 0.8
    cfg = GateConfig(estimator="ste", kl_weight=kl_weight, prior_prob=rho)
    model, guide = FrequencyBernoulli(cfg), AmortizedGates(3, 3, cfg)
    loss = make_elbo(guide, cfg).differentiable_loss(model, guide, z, logits, RecordedLoss(functools.partial(infonce, ids=ids)))
    # f = (4/4, 1/4, 1/4): column 0 fires on every row, so its prior open probability is 0 (clamped to 0.01)
    rho_d = [0.01, 0.8 * 0.75, 0.8 * 0.75]
    alpha = torch.sigmoid(logits).clamp(0.01, 0.99).tolist()
    kl = sum(a * math.log(a / r) + (1 - a) * math.log((1 - a) / (1 - r))
             for row in alpha for a, r in zip(row, rho_d)) / len(alpha)
    reference = infonce(gated_rows(z, (torch.sigmoid(logits) > 0.5).double()), ids).item() + kl_weight * kl
    assert abs(loss.item() - reference) < 1e-6


def test_disarm_is_unbiased(tiny_problem):
    """Mean value and mean gradient (z and gate logits) over many draws equal the exact ones within
    five standard errors; the straight-through gradient of the same problem is caught."""
    assert isinstance(assert_unbiased(tiny_problem, draws=1500, estimator="disarm"), DisarmELBO)


def test_disarm_pair_is_antithetic_with_exact_marginals():
    """Each of b, b̃ is Bern(α) (Monte-Carlo frequencies within five standard errors), and they are
    never both 1 when α < ½ nor both 0 when α > ½ (the antithetic coupling)."""
    probs = torch.tensor([0.1, 0.3, 0.5, 0.8, 0.95])
    estimator = ESTIMATORS.get("disarm")(probs=probs)
    torch.manual_seed(0)
    draws = 20000
    b, b_tilde = estimator.antithetic_pair((draws,))
    stderr = (probs * (1 - probs) / draws).sqrt()
    for sample in (b, b_tilde):
        assert torch.all((sample.mean(0) - probs).abs() <= Z_SCORE * stderr)
    low, high = probs < 0.5, probs > 0.5
    assert not torch.any((b * b_tilde)[:, low] == 1)
    assert not torch.any(((1 - b) * (1 - b_tilde))[:, high] == 1)


@pytest.mark.parametrize("overrides", [("gate.prior=negatives_gated",), ("gate.prior=frequency_bernoulli",),
                                       ("gate.estimator=disarm",)])
def test_a_candidate_trains(tiny_config, overrides):
    """Four steps of a tiny run end with finite losses logged."""
    from bayesncl_pyro.training.loop import train

    cfg = tiny_config(*overrides, "train.steps=4")
    train(cfg, progress=False)
    records = [json.loads(line) for line in (Path(cfg.train.out_dir) / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
