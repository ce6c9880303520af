"""Optimizers (LARS as in SPEC §3, SGD, Adam), their parameter groups and the warmup-cosine schedule."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from .config import OptimConfig
from .registries import OPTIMIZERS


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


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, min_lr: float) -> float:
    """Learning rate at ``step`` (0-based): linear warmup from base/warmup to base over ``warmup``
    steps, then cosine decay to ``min_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule for every group, through ``LambdaLR`` (its factor times the group's lr)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch)) if cfg.scheduler == "warmup_cosine" else 0
    factors = []
    for group in optimizer.param_groups:
        base = group["lr"]
        if cfg.scheduler == "constant":
            factors.append(lambda step: 1.0)
        else:
            floor = min(cfg.min_lr, base) / base
            factors.append(lambda step, floor=floor: warmup_cosine(step, total_steps, warmup, 1.0, floor))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
