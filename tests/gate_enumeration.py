"""The exact-enumeration reference for gate estimators: a 4-row, 2-dimension problem (B = 2
images, two views each: the smallest InfoNCE with both positives and negatives) whose expected
loss under q(m) = Π Bern(α) is a sum over all 2^8 gate configurations, with the KL written from
SPEC §3; and the Monte-Carlo check that an estimator's value and gradients match it."""
from __future__ import annotations

import functools
import itertools

import pyro
import torch

from bayesncl_pyro.config import GateConfig
from bayesncl_pyro.guides.amortized_gates import AmortizedGates
from bayesncl_pyro.inference.contrastive import InfoNCE, RecordedLoss, gated_rows, two_view_ids
from bayesncl_pyro.inference.elbo import make_elbo
from bayesncl_pyro.models.bernoulli import BernoulliGates

ROWS, DIMS = 4, 2
Z_SCORE = 5.0  # Monte-Carlo tolerance: five standard errors


def all_gate_configurations(dtype=torch.float64) -> torch.Tensor:
    """[2^(ROWS·DIMS), ROWS, DIMS]: every binary gate matrix."""
    flat = torch.tensor(list(itertools.product([0.0, 1.0], repeat=ROWS * DIMS)), dtype=dtype)
    return flat.reshape(-1, ROWS, DIMS)


def spec_kl(alpha: torch.Tensor, rho: float) -> torch.Tensor:
    """Σ_d KL(Bern(α) ‖ Bern(ρ)) per row, both clamped to [0.01, 0.99] (SPEC §3)."""
    a = alpha.clamp(0.01, 0.99)
    r = torch.tensor(rho, dtype=alpha.dtype).clamp(0.01, 0.99)
    return (a * torch.log(a / r) + (1 - a) * torch.log((1 - a) / (1 - r))).sum(1)


def exact_negative_elbo(z, alpha, infonce, ids, kl_weight, rho) -> torch.Tensor:
    """Σ_m q(m) InfoNCE(m) + λ mean_rows Σ_d KL, by enumeration; differentiable in z and α."""
    configs = all_gate_configurations(z.dtype)
    q = (alpha * configs + (1 - alpha) * (1 - configs)).flatten(1).prod(1)
    losses = torch.stack([infonce(gated_rows(z, m), ids) for m in configs])
    return (q * losses).sum() + kl_weight * spec_kl(alpha, rho).mean()


def tiny_problem():
    """z [4, 2] ≥ 0, gate logits [4, 2] with the first column positive (so the straight-through
    gate keeps every row open and its gradient stays finite), ids of two views of two images,
    InfoNCE at τ = 0.5."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(ROWS, DIMS, generator=generator, dtype=torch.float64).abs().requires_grad_()
    logits = torch.randn(ROWS, DIMS, generator=generator, dtype=torch.float64)
    logits[:, 0] = logits[:, 0].abs() + 0.1
    return z, logits.requires_grad_(), two_view_ids(ROWS // 2), InfoNCE(0.5)


def assert_unbiased(problem, draws: int, kl_weight: float = 0.3, rho: float = 0.7, **gate):
    """The estimator of ``GateConfig(**gate)`` on ``problem``: its mean value and mean gradient (to
    z and the gate logits) over ``draws`` draws equal the exact ones within five standard errors,
    and the straight-through gradient of the same problem is caught by that tolerance (power).
    Returns the ELBO object, for checks of its type."""
    z, logits, ids, infonce = problem
    cfg = GateConfig(temperature=1.0, kl_weight=kl_weight, prior_prob=rho, **gate)
    model, guide = BernoulliGates(cfg), AmortizedGates(3, DIMS, cfg)
    elbo = make_elbo(guide, cfg)
    term = functools.partial(infonce, ids=ids)
    pyro.set_rng_seed(0)
    values, grad_z, grad_logits = [], [], []
    for _ in range(draws):
        loss = elbo.differentiable_loss(model, guide, z, logits, RecordedLoss(term))
        gz, gl = torch.autograd.grad(loss, (z, logits))
        values.append(loss.detach())
        grad_z.append(gz)
        grad_logits.append(gl)
    exact = exact_negative_elbo(z, torch.sigmoid(logits), infonce, ids, kl_weight, rho)
    exact_z, exact_logits = torch.autograd.grad(exact, (z, logits))
    for samples, target in ((torch.stack(values), exact.detach()), (torch.stack(grad_z), exact_z),
                            (torch.stack(grad_logits), exact_logits)):
        stderr = samples.std(0) / draws ** 0.5
        assert torch.all((samples.mean(0) - target).abs() <= Z_SCORE * stderr + 1e-9), (samples.mean(0), target)
    ste = GateConfig(estimator="ste", temperature=1.0, kl_weight=kl_weight, prior_prob=rho)
    ste_guide = AmortizedGates(3, DIMS, ste)
    ste_loss = make_elbo(ste_guide, ste).differentiable_loss(BernoulliGates(ste), ste_guide, z, logits,
                                                             RecordedLoss(term))
    ste_logits = torch.autograd.grad(ste_loss, logits)[0]
    stderr = torch.stack(grad_logits).std(0) / draws ** 0.5
    assert torch.any((ste_logits - exact_logits).abs() > Z_SCORE * stderr)
    return elbo
