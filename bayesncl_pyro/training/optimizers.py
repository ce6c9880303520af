"""Optimizers (LARS as in SPEC §3, SGD, Adam) and their parameter groups; ``optim.name`` picks one."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from bayesncl_pyro.config import OptimConfig
from bayesncl_pyro.config.choices import OPTIMIZERS


class LARS(torch.optim.SGD):
    """SGD with layer-wise adaptive rate scaling (You et al., 2017), the solo-learn variant.

    Per parameter tensor: trust ratio η·‖w‖ / (‖g‖ + wd·‖w‖ + ε), optionally clipped so the
    effective rate never exceeds the group's (``clip_lr``). One-dimensional tensors (biases,
    norm scales) get neither weight decay nor adaptation when ``exclude_bias_n_norm``; a group can
    opt out of adaptation entirely with ``lars_exclude=True``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.02, clip_lr: bool = True, exclude_bias_n_norm: bool = True, eps: float = 1e-8):
        defaults_extra = dict(eta=eta, clip_lr=clip_lr, exclude_bias_n_norm=exclude_bias_n_norm,
                              lars_exclude=False, lars_eps=eps)
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        for group in self.param_groups:
            for key, value in defaults_extra.items():
                group.setdefault(key, value)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        saved_decay = []
        for group in self.param_groups:
            decay = group["weight_decay"]
            saved_decay.append(decay)
            group["weight_decay"] = 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["exclude_bias_n_norm"] and p.ndim <= 1:
                    continue
                grad = p.grad
                if group["lars_exclude"]:
                    if decay:
                        grad.add_(p, alpha=decay)
                    continue
                p_norm = torch.linalg.vector_norm(p)
                g_norm = torch.linalg.vector_norm(grad)
                trust = group["eta"] * p_norm / (g_norm + decay * p_norm + group["lars_eps"])
                if group["clip_lr"]:
                    trust = torch.clamp(trust / group["lr"], max=1.0)
                scale = torch.where((p_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                if decay:
                    grad.add_(p, alpha=decay)
                grad.mul_(scale)
        try:
            super().step()
        finally:
            for group, decay in zip(self.param_groups, saved_decay):
                group["weight_decay"] = decay
        return loss


def param_groups(encoder: Iterable[nn.Parameter], gate: Iterable[nn.Parameter],
                 classifier: Iterable[nn.Parameter], cfg: OptimConfig, batch_size: int) -> list[dict]:
    """Backbone+projector at lr × batch/256 (when ``scale_lr``), the gate net at ``gate_lr`` (not
    scaled), the online classifier at ``classifier_lr`` without weight decay or adaptation."""
    lr = cfg.lr * batch_size / 256 if cfg.scale_lr else cfg.lr
    groups = [
        {"name": "encoder", "params": [p for p in encoder if p.requires_grad], "lr": lr},
        {"name": "gate", "params": [p for p in gate if p.requires_grad], "lr": cfg.gate_lr},
        {"name": "classifier", "params": [p for p in classifier if p.requires_grad],
         "lr": cfg.classifier_lr, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]


@OPTIMIZERS.register("lars")
def make_lars(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return LARS(groups, lr=groups[0]["lr"], momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                eta=cfg.eta, clip_lr=cfg.clip_lr, exclude_bias_n_norm=cfg.exclude_bias_n_norm)


@OPTIMIZERS.register("sgd")
def make_sgd(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(_plain(groups), lr=groups[0]["lr"], momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adam")
def make_adam(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(_plain(groups), lr=groups[0]["lr"], weight_decay=cfg.weight_decay)


def _plain(groups: list[dict]) -> list[dict]:
    return [{k: v for k, v in g.items() if k != "lars_exclude"} for g in groups]
