"""Mixed precision and memory format: the networks may run in bf16/fp16, the ELBO may not.

Under CPU autocast the backbone, projector and gate net produce low-precision activations; the
InfoNCE log-sum-exp and the gate KL must still be computed in float32. The check: the loss equals
the SPEC §3 objective evaluated in float64 on the very activations the step produced (1e-5),
while the same formula evaluated in the low-precision dtype is off by far more, so the
comparison can tell. channels_last must not change the loss (1e-5) or the gradients (beyond
float32 summation order).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bayesncl_pyro.config.device import autocast
from bayesncl_pyro.inference.bayesncl import BayesNCL

LOW = {"bf16": torch.bfloat16, "16": torch.float16}


def spec_objective(z, gate_logits, cfg, dtype):
    """SPEC §3 in ``dtype`` from the projector output z [2B, D] and gate logits [2B, D]
    (the ``ste`` forward value: m = 1[α > threshold])."""
    g = cfg.gate
    z, gate_logits = z.to(dtype), gate_logits.to(dtype)
    alpha = torch.sigmoid(gate_logits / g.temperature)
    m = (alpha > g.threshold).to(dtype)
    rows = F.normalize(F.normalize(z, dim=1) * m, dim=1)
    n = rows.shape[0]
    logits = (rows @ rows.T / cfg.model.temperature).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    partner = (torch.arange(n) + n // 2) % n
    infonce = (torch.logsumexp(logits, dim=1) - logits[torch.arange(n), partner]).mean()
    a = alpha.clamp(0.01, 0.99)
    r = torch.tensor(g.prior_prob, dtype=dtype).clamp(0.01, 0.99)
    kl = (a * torch.log(a / r) + (1 - a) * torch.log((1 - a) / (1 - r))).sum(dim=1).mean()
    return infonce, g.kl_weight * kl


def _views(batch=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    colour = 2 * torch.randn(batch, 3, 1, 1, generator=g)
    return [colour + torch.randn(batch, 3, size, size, generator=g) for _ in range(2)]


def _net(tiny_config, seed=0):
    cfg = tiny_config("gate.prior=bernoulli", "gate.estimator=ste", "gate.kl_weight=0.5")
    torch.manual_seed(seed)
    return BayesNCL(cfg), cfg


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_infonce_and_kl_stay_float32_under_autocast(tiny_config, precision):
    net, cfg = _net(tiny_config)
    x1, x2 = _views()
    with autocast(torch.device("cpu"), precision):
        out = net.step(x1, x2)
    assert out.z.dtype == LOW[precision], "autocast did not reach the network"
    assert out.gate_logits.dtype == LOW[precision]
    assert out.loss.dtype == out.infonce.dtype == torch.float32

    infonce, kl = spec_objective(out.z, out.gate_logits, cfg, torch.float64)
    assert abs(out.infonce.item() - infonce.item()) < 1e-5
    assert abs(out.kl.item() - kl.item()) < 1e-5
    low_infonce, low_kl = spec_objective(out.z, out.gate_logits, cfg, LOW[precision])
    assert abs(low_infonce.item() + low_kl.item() - infonce.item() - kl.item()) > 1e-4, \
        "the float64 check could not tell low-precision arithmetic apart"


@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_loss_is_close_to_float32(tiny_config, precision):
    """The activations are rounded to 8 (bf16) or 11 (fp16) significant bits, so the loss moves by
    a few parts in a thousand at most; 2 % is the stated bound."""
    net, _ = _net(tiny_config)
    x1, x2 = _views()
    full = net.loss(x1, x2).item()
    with autocast(torch.device("cpu"), precision):
        mixed = net.loss(x1, x2).item()
    assert mixed != full
    assert abs(mixed - full) < 0.02 * abs(full)


def _loss_and_grads(net, x1, x2):
    net.zero_grad(set_to_none=True)
    loss = net.loss(x1, x2)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


def test_channels_last_gives_the_same_loss_and_gradients(tiny_config):
    net, _ = _net(tiny_config)
    x1, x2 = _views()
    loss, grads = _loss_and_grads(net, x1, x2)

    net = net.to(memory_format=torch.channels_last)
    conv = net.backbone.net[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x1, x2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))
    loss_cl, grads_cl = _loss_and_grads(net, x1, x2)
    assert abs(loss_cl - loss) < 1e-5
    for name, want in grads.items():  # float32 sums in another order: 1e-4 of the largest entry
        assert (grads_cl[name] - want).abs().max() <= 1e-4 * want.abs().max() + 1e-5, name
