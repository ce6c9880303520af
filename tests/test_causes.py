"""The ablation variants that separate the candidate causes of the straight-through gates' gain:
gates drawn from q with a straight-through gradient (``sampled_ste``), λ = 0, a plain learned
hard mask with no latent (``gate.prior=learned_mask``), and the evaluation's gates drawn from q
(``gated_sampled``) beside the thresholded test-time gate."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pyro import poutine

from bayesncl_pyro import BayesNCL
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.distributions.gates import SampledStraightThroughBernoulli
from bayesncl_pyro.evaluation.evaluate import evaluate_run
from bayesncl_pyro.evaluation.gate_posterior import inspect_run
from bayesncl_pyro.training.loop import train

from .conftest import ROOT, tiny_run

Z_SCORE = 5.0


# ----------------------------------------------------------------------------- sampled_ste

def test_sampled_ste_opens_a_gate_with_probability_alpha():
    alpha = torch.tensor([0.03, 0.3, 0.5, 0.8, 0.97])
    draws = 40_000
    gate = SampledStraightThroughBernoulli(probs=alpha, threshold=0.5).rsample((draws,))
    assert set(gate.unique().tolist()) <= {0.0, 1.0}
    frequency = gate.mean(0)
    stderr = (alpha * (1 - alpha) / draws).sqrt()
    assert ((frequency - alpha).abs() <= Z_SCORE * stderr).all(), (frequency, alpha)
    # unlike ste, the threshold plays no part: α = 0.3 < 0.5 still opens about 30 % of the time
    assert frequency[1] > 0.25


def test_sampled_ste_gradient_is_the_gradient_of_alpha():
    """m + α − sg(α): whatever the draw, ∂(Σ w·m)/∂logit = w · α(1 − α)."""
    logits = torch.tensor([-2.0, -0.3, 0.0, 0.4, 2.5], dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64)
    alpha = torch.sigmoid(logits.detach())
    for seed in range(5):
        torch.manual_seed(seed)
        gate = SampledStraightThroughBernoulli(logits=logits, threshold=0.5).rsample()
        (grad,) = torch.autograd.grad((weights * gate).sum(), logits)
        torch.testing.assert_close(grad, weights * alpha * (1 - alpha), rtol=0, atol=1e-15)


@pytest.mark.parametrize("overrides", [("gate.prior=bernoulli", "gate.estimator=sampled_ste"),
                                       ("gate.prior=beta_bernoulli", "gate.estimator=sampled_ste"),
                                       ("gate.prior=learned_mask",),
                                       ("gate.prior=bernoulli", "gate.kl_weight=0")])
def test_variant_trains(tiny_config, overrides):
    cfg = tiny_config(*overrides, "train.steps=6", "train.epochs=1")
    summary = train(cfg, progress=False)
    records = [json.loads(line) for line in (Path(cfg.train.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) for r in records) and 0.0 <= summary["open_rate"] <= 1.0
    if cfg.gate.kl_weight == 0 or cfg.gate.prior == "learned_mask":
        assert all(r["kl"] == 0.0 for r in records)  # loss = InfoNCE exactly


# ----------------------------------------------------------------------------- λ = 0

def test_kl_weight_zero_masks_the_gate_sites_out_of_the_elbo(tiny_config):
    net = BayesNCL(tiny_config("gate.kl_weight=0"))
    z = torch.rand(8, 16)
    logits = torch.randn(8, 16)
    trace = poutine.trace(net.guide).get_trace(z, logits, lambda rows: rows.new_zeros(()))
    assert trace.nodes["gate"]["mask"] is False
    weighted = poutine.trace(BayesNCL(tiny_config("gate.kl_weight=0.5")).guide).get_trace(
        z, logits, lambda rows: rows.new_zeros(()))
    assert weighted.nodes["gate"]["scale"] == pytest.approx(0.5 / 8) and weighted.nodes["gate"]["mask"] is None


# ----------------------------------------------------------------------------- learned mask

def nt_xent_reference(rows: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE over [view 1; view 2] rows written as a loop (SPEC §3)."""
    n = rows.shape[0]
    sim = torch.exp(rows @ rows.T / tau)
    losses = []
    for i in range(n):
        partner = (i + n // 2) % n
        negatives = sum(sim[i, j] for j in range(n) if j not in (i, partner))
        losses.append(-torch.log(sim[i, partner] / (sim[i, partner] + negatives)))
    return torch.stack(losses).mean()


def test_learned_mask_has_no_latent_and_its_loss_is_infonce_of_the_masked_rows(tiny_config):
    cfg = tiny_config("gate.prior=learned_mask", "gate.kl_weight=0.5", "model.nonneg=relu")
    torch.manual_seed(0)
    net = BayesNCL(cfg).double()
    mask_logits = net.guide.mask_logits
    assert [name for name, _ in net.guide.named_parameters()] == ["mask_logits"]
    assert mask_logits.shape == (cfg.model.proj_dim,)
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(2))
    out = net.encode(torch.cat([x1, x2]))
    term_trace = poutine.trace(net.model).get_trace(out["z"], out["gate_logits"], lambda rows: rows.sum())
    guide_trace = poutine.trace(net.guide).get_trace(out["z"], out["gate_logits"], lambda rows: rows.sum())
    assert not [n for n, site in term_trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]]
    assert not [n for n, site in guide_trace.nodes.items() if site["type"] == "sample"]

    loss = net.loss(x1, x2)
    # reference: hard mask 1[σ(θ) > ½] in value, straight-through gradient of σ(θ); no KL at any λ
    z = torch.relu(net.projector(net.backbone(torch.cat([x1, x2]))))
    probs = torch.sigmoid(mask_logits)
    mask = (probs > 0.5).to(probs.dtype) + probs - probs.detach()
    reference = nt_xent_reference(F.normalize(F.normalize(z, dim=1) * mask, dim=1), cfg.model.temperature)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-10)
    (got,) = torch.autograd.grad(loss, mask_logits)
    (want,) = torch.autograd.grad(reference, mask_logits)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert got.abs().sum() > 0


def test_learned_mask_is_the_same_for_every_image_and_is_its_own_test_time_gate(tiny_config):
    torch.manual_seed(0)
    net = BayesNCL(tiny_config("gate.prior=learned_mask")).eval()
    x = torch.randn(5, 3, 32, 32)
    features = net.features(x, generator=torch.Generator().manual_seed(0))
    expected = (torch.sigmoid(net.guide.mask_logits.detach()) > 0.5).float()
    assert torch.equal(features["gate"], expected.expand(5, -1))
    assert 0 < expected.sum() < expected.numel()  # starts about half open, like the amortized gates
    # a point mass: the drawn gates are the mask itself
    assert torch.equal(features["gate_sampled"], features["gate"])
    assert torch.equal(features["gated_sampled"], features["gated"])


def test_inspecting_a_learned_mask_exports_its_gates_without_a_prior_group(tmp_path_factory):
    """The mask has no latent, so there is nothing to draw from a prior; the posterior group and
    the figures are written as for any gated run."""
    inspection = inspect_run(tiny_run(tmp_path_factory, "mask_inspect", "gate.prior=learned_mask"), draws=4,
                             progress=False)
    groups = inspection.idata.groups()
    assert "posterior" in groups and "prior" not in groups
    assert inspection.netcdf.is_file() and inspection.summary_md.is_file()
    with_prior = inspect_run(tiny_run(tmp_path_factory, "bernoulli_inspect"), draws=4, progress=False)
    assert "prior" in with_prior.idata.groups()


def test_learned_mask_refuses_a_gate_estimator(tiny_config):
    with pytest.raises(ConfigError, match="gate.estimator"):
        tiny_config("gate.prior=learned_mask", "gate.estimator=score")


# ----------------------------------------------------------------------------- gated_sampled

def test_drawn_test_time_gates_follow_q_and_are_seeded(tiny_config):
    torch.manual_seed(0)
    net = BayesNCL(tiny_config("gate.prior=bernoulli")).eval()
    x = torch.randn(6, 3, 32, 32).repeat(400, 1, 1, 1)  # 6 images, 400 draws each
    state = torch.get_rng_state()
    plain = net.features(x[:6])
    assert "gated_sampled" not in plain and torch.equal(torch.get_rng_state(), state)
    features = net.features(x, generator=torch.Generator().manual_seed(3))
    probs = features["gate_probs"].reshape(400, 6, -1)[0]
    frequency = features["gate_sampled"].reshape(400, 6, -1).mean(0)
    stderr = (probs * (1 - probs) / 400).sqrt().clamp_min(1e-3)
    assert ((frequency - probs).abs() <= Z_SCORE * stderr).all()
    z = features["z"]
    torch.testing.assert_close(features["gated_sampled"], F.normalize(z * features["gate_sampled"], dim=1))
    again = net.features(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again["gate_sampled"], features["gate_sampled"])


def test_eval_measures_every_run_with_thresholded_and_drawn_gates(tmp_path_factory):
    gated = evaluate_run(tiny_run(tmp_path_factory, "drawn"), progress=False)[0]
    assert gated["gate_draw_seed"] == 0
    assert set(gated["metrics"]["gated_sampled"]) == set(gated["metrics"]["gated"])
    ungated = evaluate_run(tiny_run(tmp_path_factory, "drawn_ungated", "gate.prior=none"), progress=False)[0]
    assert ungated["metrics"]["gated_sampled"] == ungated["metrics"]["gated"]


def test_cpu_causes_runs_with_the_cpu_seeds_settings_apart_from_the_method_keys():
    """Its runs pair with cpu_seeds' runs of the same seed: only the method's own keys differ."""
    from bayesncl_pyro.config import flatten
    from bayesncl_pyro.experiments.suite import load_suite, plan

    suites = ROOT / "configs" / "suites"
    reference = {(j.dataset, j.seed): j for j in plan(load_suite(suites / "cpu_seeds.yaml"))
                 if j.method == "bayesncl_ste"}
    causes = load_suite(suites / "cpu_causes.yaml")
    assert causes.seeds == [0, 1, 2] and set(causes.datasets) == {"scenes", "cifar10"}
    for job in plan(causes):
        old, new = flatten(reference[(job.dataset, job.seed)].cfg.to_dict()), flatten(job.cfg.to_dict())
        differing = {k for k in old if old[k] != new[k]} - {"train.out_dir"}
        assert differing <= {"gate.prior", "gate.estimator", "gate.kl_weight"}, (job.name, differing)
