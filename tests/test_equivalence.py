"""The Pyro program equals the SPEC §3 objective, value and gradients, to 1e-6 in float64.

The reference below is written from the SPEC formulas alone; it shares no code with the package
beyond the network modules whose outputs it reads.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bayesncl_pyro import BayesNCL

TOL = 1e-6


def reference_objective(net: BayesNCL, x1, x2, cfg, gated: bool = True) -> torch.Tensor:
    """SPEC §3: z̃ = normalize(normalize(z) ⊙ m); L = InfoNCE(z̃; τ) + λ mean_rows Σ_d KL."""
    B = x1.shape[0]
    h = net.backbone(torch.cat([x1, x2]))
    z = torch.relu(net.projector(h))
    tau = cfg.model.temperature
    rows = F.normalize(z, dim=1)
    kl_term = torch.zeros((), dtype=z.dtype)
    if gated:
        alpha = torch.sigmoid(net.guide.net(h.detach()) / cfg.gate.temperature)
        m = (alpha > cfg.gate.threshold).to(alpha.dtype) + alpha - alpha.detach()
        rows = F.normalize(rows * m, dim=1)
        a = alpha.clamp(0.01, 0.99)
        r = torch.tensor(cfg.gate.prior_prob, dtype=z.dtype).clamp(0.01, 0.99)
        kl = a * torch.log(a / r) + (1 - a) * torch.log((1 - a) / (1 - r))
        kl_term = cfg.gate.kl_weight * kl.sum(dim=1).mean()
    sim = torch.exp(rows @ rows.T / tau)
    losses = []
    for i in range(2 * B):
        partner = (i + B) % (2 * B)
        pos = sim[i, partner]
        neg = sum(sim[i, j] for j in range(2 * B) if j != i and j != partner)
        losses.append(-torch.log(pos / (pos + neg)))
    return torch.stack(losses).mean() + kl_term


def plain_nt_xent(z: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent as usually written: cross-entropy over similarities, self excluded."""
    n = z.shape[0]
    rows = F.normalize(z, dim=1)
    logits = rows @ rows.T / tau
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    targets = (torch.arange(n) + n // 2) % n
    return F.cross_entropy(logits, targets)


def _grads(net, loss):
    net.zero_grad(set_to_none=True)
    loss.backward()
    return {name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for name, p in net.named_parameters()}


@pytest.fixture
def views():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64)
    x2 = torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64)
    return x1, x2


@pytest.mark.parametrize("kl_weight", [3e-5, 0.5])
def test_ste_loss_and_gradients_match_spec(tiny_config, views, kl_weight):
    cfg = tiny_config("gate.prior=bernoulli", "gate.estimator=ste", f"gate.kl_weight={kl_weight}",
                      "gate.temperature=0.7", "gate.prior_prob=0.8", "model.nonneg=relu")
    torch.manual_seed(1)
    net = BayesNCL(cfg).double()
    x1, x2 = views
    pyro_loss = net.loss(x1, x2)
    reference = reference_objective(net, x1, x2, cfg)
    assert abs(pyro_loss.item() - reference.item()) < TOL
    got, want = _grads(net, pyro_loss), _grads(net, reference)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], atol=TOL, rtol=0), name
    gate_grads = [got[n].abs().sum().item() for n in got if n.startswith("guide.")]
    assert sum(gate_grads) > 0, "the gate network receives no gradient"


def test_ungated_equals_nt_xent(tiny_config, views):
    cfg = tiny_config("gate.prior=none", "model.nonneg=none")
    torch.manual_seed(2)
    net = BayesNCL(cfg).double()
    x1, x2 = views
    pyro_loss = net.loss(x1, x2)
    z = net.projector(net.backbone(torch.cat([x1, x2])))
    reference = plain_nt_xent(z, cfg.model.temperature)
    assert abs(pyro_loss.item() - reference.item()) < TOL
    got, want = _grads(net, pyro_loss), _grads(net, reference)
    for name in want:
        assert torch.allclose(got[name], want[name], atol=TOL, rtol=0), name


def test_gates_never_push_the_backbone(tiny_config, views):
    """Gradient isolation: the KL weight changes the gate net's gradient, never the backbone's."""
    x1, x2 = views
    grads = []
    for kl_weight in (1e-4, 2.0):
        torch.manual_seed(3)
        net = BayesNCL(tiny_config(f"gate.kl_weight={kl_weight}")).double()
        grads.append(_grads(net, net.loss(x1, x2)))
    for name in grads[0]:
        if name.startswith(("backbone.", "projector.")):
            assert torch.allclose(grads[0][name], grads[1][name], atol=1e-12, rtol=0), name
    gate = [n for n in grads[0] if n.startswith("guide.")]
    assert any(not torch.allclose(grads[0][n], grads[1][n]) for n in gate)


def test_kl_weight_zero_leaves_infonce(tiny_config, views):
    torch.manual_seed(4)
    cfg = tiny_config("gate.kl_weight=0")
    net = BayesNCL(cfg).double()
    out = net.step(*views)
    assert abs(out.loss.item() - out.infonce.item()) < 1e-12
