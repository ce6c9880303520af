"""A training session: the data, network, step module, optimizer and schedule of one run, built
from its config, and how they are saved to and restored from the run's checkpoint."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.choices import OPTIMIZERS
from bayesncl_pyro.config.device import resolve_device
from bayesncl_pyro.config.errors import BayesNCLError, CheckpointError, clip
from bayesncl_pyro.data.augment import BatchAugment, EvalTransform
from bayesncl_pyro.data.sources import load_split, normalization
from bayesncl_pyro.inference.bayesncl import BayesNCL
from bayesncl_pyro.networks.classifier import online_classifier
from bayesncl_pyro.storage import checkpoints
from bayesncl_pyro.storage.run_directory import LAST_CHECKPOINT
from bayesncl_pyro.training.batches import Prefetcher, steps_per_epoch
from bayesncl_pyro.training.distributed import DistributedContext, rank_batches, wrap_ddp
from bayesncl_pyro.training.optimizers import param_groups
from bayesncl_pyro.training.schedules import make_scheduler

AUGMENT_STREAM = 1 << 40
"""Offset of the augmentation generator's seed from ``train.seed`` (a stream apart from the global one)."""


@dataclass
class Session:
    """Everything one run trains and steps, built from the config."""

    cfg: Config
    ctx: DistributedContext
    net: BayesNCL
    classifier: nn.Linear
    step_module: nn.Module
    augment: BatchAugment
    eval_transform: EvalTransform
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    train_set: Any
    test_set: Any
    steps_per_epoch: int
    total_steps: int
    augment_generator: torch.Generator

    def generators(self) -> dict[str, torch.Generator]:
        """The run's own random streams, saved with the checkpoint."""
        return {"augment": self.augment_generator}

    def seed_streams(self, step: int) -> None:
        """Seed the augmentation stream from ``train.seed``, this rank and ``step``. It is its own
        generator, so the views of a seed are the same for every method (whatever random numbers
        the gate estimator or the network's initialisation consume): runs pair by seed."""
        self.augment_generator.manual_seed(self.ctx.seed(self.cfg.train.seed) + AUGMENT_STREAM + step)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def batches(self, epoch: int, start: int = 0) -> Prefetcher:
        """This rank's batches of ``epoch`` from batch ``start`` on, gathered ahead of the step by
        a background thread (pinned for a CUDA device); the order is that of
        :func:`~.distributed.rank_batches`, a function of (seed, epoch, rank) alone."""
        indices = rank_batches(len(self.train_set), self.cfg.data.batch_size, self.cfg.train.seed, epoch, start,
                               self.ctx.rank, self.ctx.world_size)
        return Prefetcher(self.train_set.images, self.train_set.labels, indices, pin=self.device.type == "cuda")

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net, "classifier": self.classifier}

    def save(self, run: Path, step: int) -> None:
        """Write ``last.pt``: every module, the optimizer, schedule, gradient scaler, RNG and step."""
        checkpoints.save(run / LAST_CHECKPOINT, modules=self.modules(), optimizer=self.optimizer,
                         scheduler=self.scheduler, scaler=self.scaler, step=step,
                         epoch=step // self.steps_per_epoch, config=self.cfg.to_dict(),
                         generators=self.generators())

    def restore(self, state: dict[str, Any], path: Path) -> int:
        """Load a checkpoint's ``state`` (read from ``path``) into this session; returns the step
        it was saved at. A state that does not fit this run is one CheckpointError naming ``path``."""
        checkpoints.check_config(state, self.cfg.to_dict(), path)
        checkpoints.restore_modules(state, self.modules(), path)
        checkpoints.check_state_types(state["scheduler"], self.scheduler.state_dict(), "learning-rate schedule", path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            checkpoints.check_optimizer_fits(self.optimizer, path)
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
            checkpoints.set_rng_state(state["rng"], self.generators())
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            detail = clip(exc, 200)
            raise CheckpointError(f"checkpoint {path} does not fit this run: its optimizer, schedule or "
                                  f"random state cannot be restored ({type(exc).__name__}: {detail})") from None
        return int(state["step"])


def build(cfg: Config, ctx: DistributedContext | None = None, resume: bool = False) -> Session:
    """Data, network, step module (DDP-wrapped under torchrun), optimizer and schedule.

    Under torchrun each rank takes ``data.batch_size`` images of a global batch of
    ``world_size × data.batch_size``; the learning rate scales with the global batch. A session
    that will ``resume`` does not read ``model.weights``: its checkpoint holds the weights. With
    ``model.freeze_backbone`` the optimizer holds no backbone parameter.
    """
    t = cfg.train
    ctx = ctx or DistributedContext(device=resolve_device(t.device))
    device = ctx.device
    pyro.set_rng_seed(t.seed)
    train_set = load_split(cfg.data, "train")
    test_set = load_split(cfg.data, "test")
    mean, std = normalization(cfg.data, train_set)
    net = BayesNCL(cfg, negatives=ctx.negatives, load_weights=not resume).to(device)
    if t.channels_last:
        net = net.to(memory_format=torch.channels_last)
    classifier = online_classifier(net.feature_dim, train_set.num_classes, t.seed).to(device)
    step_module = wrap_ddp(net, ctx, t.sync_bn, classifier)
    if t.compile:
        net.backbone.compile()
    global_batch = ctx.world_size * cfg.data.batch_size
    groups = param_groups(
        encoder=itertools.chain(net.backbone.parameters(), net.projector.parameters()),
        gate=net.guide.parameters(), classifier=classifier.parameters(),
        cfg=cfg.optim, batch_size=global_batch,
    )
    optimizer = OPTIMIZERS.get(cfg.optim.name)(groups, cfg.optim)
    per_epoch = steps_per_epoch(len(train_set), global_batch)
    if per_epoch == 0:
        raise BayesNCLError(
            f"data.batch_size={cfg.data.batch_size} × {ctx.world_size} process(es) is larger than the "
            f"training set ({len(train_set)} images)"
        )
    scheduled = t.epochs * per_epoch
    total = min(scheduled, t.steps) if t.steps else scheduled
    scheduler = make_scheduler(optimizer, cfg.optim, scheduled, per_epoch)
    scaler = torch.amp.GradScaler(device.type) if t.precision == "16" else None
    if ctx.active:  # ranks must not draw alike
        pyro.set_rng_seed(ctx.seed(t.seed))
    session = Session(
        cfg, ctx, net, classifier, step_module,
        BatchAugment(cfg.data.augment, cfg.data.image_size, mean, std).to(device),
        EvalTransform(cfg.data.image_size, mean, std).to(device),
        optimizer, scheduler, scaler, train_set, test_set, per_epoch, total,
        torch.Generator(device=device),
    )
    session.seed_streams(0)
    return session
