"""LARS against a step written out by hand; the warmup-cosine schedule against its closed form."""
from __future__ import annotations

import math

import torch
from torch import nn

from bayesncl_pyro.config import OptimConfig
from bayesncl_pyro.training.optimizers import LARS
from bayesncl_pyro.training.schedules import make_scheduler, warmup_cosine


def test_lars_matches_hand_written_step():
    torch.manual_seed(0)
    weight = torch.randn(5, 4, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    grad_w, grad_b = torch.randn(5, 4), torch.randn(5)
    lr, wd, eta, momentum = 0.5, 1e-2, 0.02, 0.9
    opt = LARS([weight, bias], lr=lr, weight_decay=wd, eta=eta, momentum=momentum, clip_lr=True)
    w0, b0 = weight.detach().clone(), bias.detach().clone()
    weight.grad, bias.grad = grad_w.clone(), grad_b.clone()
    opt.step()
    # by hand: decayed gradient, trust ratio, clipped by the group lr; bias: plain SGD, no decay
    g = grad_w + wd * w0
    trust = eta * w0.norm() / (grad_w.norm() + wd * w0.norm() + 1e-8)
    scale = min(trust.item() / lr, 1.0)
    assert torch.allclose(weight.detach(), w0 - lr * scale * g, atol=1e-6)
    assert torch.allclose(bias.detach(), b0 - lr * grad_b, atol=1e-6)
    assert opt.param_groups[0]["weight_decay"] == wd  # restored after the step


def test_lars_excluded_group_is_plain_sgd():
    p = torch.ones(3, 3, requires_grad=True)
    opt = LARS([{"params": [p], "lars_exclude": True, "weight_decay": 0.0}], lr=0.1, momentum=0.0)
    p.grad = torch.full((3, 3), 2.0)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3, 3), 0.8))


def test_warmup_cosine_closed_form():
    total, warmup = 100, 10
    assert math.isclose(warmup_cosine(0, total, warmup, 1.0, 0.0), 0.1)
    assert math.isclose(warmup_cosine(9, total, warmup, 1.0, 0.0), 1.0)
    assert math.isclose(warmup_cosine(10, total, warmup, 1.0, 0.0), 1.0)
    assert math.isclose(warmup_cosine(55, total, warmup, 1.0, 0.0), 0.5, abs_tol=1e-12)
    assert math.isclose(warmup_cosine(100, total, warmup, 1.0, 0.1), 0.1)


def test_scheduler_applies_per_group_base_lr():
    net = nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [net.weight], "lr": 0.4}, {"params": [net.bias], "lr": 0.1}], lr=0.4)
    sched = make_scheduler(opt, OptimConfig(warmup_epochs=1.0), total_steps=20, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert math.isclose(lrs[0][0], 0.4 / 5) and math.isclose(lrs[0][1], 0.1 / 5)
    assert math.isclose(lrs[4][0], 0.4) and math.isclose(lrs[4][1], 0.1)
    assert lrs[19][0] < lrs[10][0] < lrs[5][0]
