"""Per-step learning-rate schedules (``optim.scheduler``): warmup then cosine decay, or constant.

Each is a factor of every group's base rate per step, applied through ``LambdaLR``, so the
gate network and the online classifier follow the same shape at their own rates.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from bayesncl_pyro.config.choices import SCHEDULERS
from bayesncl_pyro.config.schema import OptimConfig

Factor = Callable[[int], float]


def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, min_lr: float) -> float:
    """Learning rate at ``step`` (0-based): linear warmup from base/warmup to base over ``warmup``
    steps, then cosine decay to ``min_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@SCHEDULERS.register("warmup_cosine")
def warmup_cosine_factor(cfg: OptimConfig, base_lr: float, total_steps: int, steps_per_epoch: int) -> Factor:
    """``optim.warmup_epochs`` of linear warmup, then cosine decay to ``optim.min_lr``."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    floor = min(cfg.min_lr, base_lr) / base_lr
    return lambda step: warmup_cosine(step, total_steps, warmup, 1.0, floor)


@SCHEDULERS.register("constant")
def constant_factor(cfg: OptimConfig, base_lr: float, total_steps: int, steps_per_epoch: int) -> Factor:
    """The base rate throughout."""
    return lambda step: 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule for every group, through ``LambdaLR`` (its factor times the group's lr)."""
    factor = SCHEDULERS.get(cfg.scheduler)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [factor(cfg, group["lr"], total_steps, steps_per_epoch) for group in optimizer.param_groups])
