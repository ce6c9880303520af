"""The training loop: batch -> two views -> backbone once -> negative ELBO (+ online probe) -> step.

Logging, checkpointing and the end-of-run summary sit beside the loop, not inside the step.
``python -m bayesncl_pyro.train`` is the same as the ``bayesncl-train`` command.
"""
from __future__ import annotations

import itertools
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyro
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint, run_dir
from .batches import steps_per_epoch
from .config import Config
from .data.augment import BatchAugment, EvalTransform
from .data.sources import load_split, normalization
from .device import autocast, resolve_device
from .distributed import DistributedContext, rank_batches, setup_distributed, wrap_ddp
from .errors import BayesNCLError
from .features import extract
from .io import atomic_write_bytes, atomic_write_json
from .network import BayesNCL
from .optim import make_scheduler, param_groups
from .registries import OPTIMIZERS
from .summary import summarize

SUMMARY_FILE = "summary.json"


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

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net, "classifier": self.classifier}


def build(cfg: Config, ctx: DistributedContext | None = None) -> Session:
    """Data, network, step module (DDP-wrapped under torchrun), optimizer and schedule.

    Under torchrun each rank takes ``data.batch_size`` images of a global batch of
    ``world_size × data.batch_size``; the learning rate scales with the global batch.
    """
    t = cfg.train
    ctx = ctx or DistributedContext(device=resolve_device(t.device))
    device = ctx.device
    pyro.set_rng_seed(t.seed)
    train_set = load_split(cfg.data, "train")
    test_set = load_split(cfg.data, "test")
    mean, std = normalization(cfg.data, train_set)
    net = BayesNCL(cfg, negatives=ctx.negatives).to(device)
    if t.channels_last:
        net = net.to(memory_format=torch.channels_last)
    classifier = nn.Linear(net.feature_dim, train_set.num_classes).to(device)
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
    if ctx.active:  # ranks must not crop alike
        pyro.set_rng_seed(ctx.seed(t.seed))
    return Session(
        cfg, ctx, net, classifier, step_module,
        BatchAugment(cfg.data.augment, cfg.data.image_size, mean, std).to(device),
        EvalTransform(cfg.data.image_size, mean, std).to(device),
        optimizer, scheduler, scaler, train_set, test_set, per_epoch, total,
    )


class NonFiniteStep(BayesNCLError, FloatingPointError):
    """A step's loss or gradient is NaN or infinite; the optimizer did not move."""


class TrainingInterrupted(BayesNCLError):
    """SIGTERM or SIGINT arrived; the run saved a checkpoint at the last finished step."""


def _grad_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(p.grad) for g in optimizer.param_groups for p in g["params"]
             if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def train_step(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """One optimisation step on a batch of uint8 images [B, 3, H, W] and labels [B].

    Raises :class:`NonFiniteStep` before the optimizer moves if the loss or the gradient is not
    finite (with float16 the gradient scaler handles overflow instead).
    """
    x = images.to(s.device, non_blocking=True)
    y = labels.to(s.device, non_blocking=True)
    view1, view2 = s.augment(x), s.augment(x)
    if s.cfg.train.channels_last:
        view1 = view1.contiguous(memory_format=torch.channels_last)
        view2 = view2.contiguous(memory_format=torch.channels_last)
    with autocast(s.device, s.cfg.train.precision):
        out = s.step_module(view1, view2)
        logits = out["probe_logits"].float()
    targets = torch.cat([y, y])
    probe_loss = F.cross_entropy(logits, targets)
    total = out["loss"] + probe_loss
    if not s.ctx.agree(bool(torch.isfinite(total))):
        raise NonFiniteStep(f"loss is {total.item()} (negative ELBO {out['loss'].item()}, probe loss "
                            f"{probe_loss.item()}) on rank {s.ctx.rank}" if s.ctx.active else
                            f"loss is {total.item()} (negative ELBO {out['loss'].item()}, probe loss {probe_loss.item()})")
    s.optimizer.zero_grad(set_to_none=True)
    if s.scaler is not None:
        s.scaler.scale(total).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        total.backward()
        grad_norm = _grad_norm(s.optimizer)
        if not torch.isfinite(grad_norm):
            s.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteStep(f"gradient norm is {grad_norm.item()}")
        s.optimizer.step()
    lr = s.optimizer.param_groups[0]["lr"]  # the rate this step used
    s.scheduler.step()
    record = {
        "loss": out["loss"].item(),
        "infonce": out["infonce"].item(),
        "kl": out["kl"].item(),
        "probe_loss": probe_loss.item(),
        "probe_acc": (logits.argmax(1) == targets).float().mean().item(),
        "lr": lr,
    }
    if out["open_rate"] is not None:
        record["open_rate"] = out["open_rate"].item()
    return record


def _save(s: Session, run: Path, step: int) -> None:
    epoch, batch_in_epoch = divmod(step, s.steps_per_epoch)
    checkpoint.save(run / run_dir.LAST_CHECKPOINT, modules=s.modules(), optimizer=s.optimizer,
                    scheduler=s.scheduler, scaler=s.scaler, step=step, epoch=epoch,
                    batch_in_epoch=batch_in_epoch, config=s.cfg.to_dict())


def _keep_epoch_checkpoint(run: Path, epoch: int, keep: int) -> None:
    """Copy ``last.pt`` to ``epoch_NNNN.pt`` and delete all but the newest ``keep`` of those."""
    atomic_write_bytes(run / f"epoch_{epoch:04d}.pt", (run / run_dir.LAST_CHECKPOINT).read_bytes())
    for old in sorted(run.glob("epoch_*.pt"))[:-keep]:
        old.unlink()


def _restore(s: Session, run: Path) -> int:
    path = run / run_dir.LAST_CHECKPOINT
    state = checkpoint.load(path, s.cfg.to_dict())
    checkpoint.restore_modules(state, s.modules(), path)
    s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    if s.scaler is not None and state["scaler"] is not None:
        s.scaler.load_state_dict(state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    return int(state["step"])


@contextmanager
def _stop_requests() -> Iterator[list[str]]:
    """Turn SIGTERM/SIGINT into a request the loop honours at the next step boundary."""
    requests: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {}

    def handler(signum, frame):
        if requests:  # a second request: stop now, without a checkpoint
            raise KeyboardInterrupt
        requests.append(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train(cfg: Config, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one run into ``cfg.train.out_dir``; returns the end-of-run summary (empty on ranks
    other than 0 of a distributed run).

    Everything that can fail on bad input (data, device, checkpoint) is checked before anything
    is written to the run directory. Under torchrun (``torch.distributed`` environment set), rank 0
    logs, checkpoints and summarises; the others train.
    """
    ctx = setup_distributed(cfg.train)
    try:
        return _train(cfg, ctx, resume, progress)
    finally:
        ctx.cleanup()


def _train(cfg: Config, ctx: DistributedContext, resume: bool, progress: bool) -> dict[str, Any]:
    t = cfg.train
    s = build(cfg, ctx)
    run = Path(t.out_dir)
    prepared: BaseException | None = None
    if ctx.is_main:
        try:
            run_dir.prepare(cfg, resume)
        except BaseException as exc:  # every rank must learn of it, or they wait at the barrier
            prepared = exc
    if not ctx.agree(prepared is None):
        raise prepared if prepared is not None else BayesNCLError("rank 0 could not prepare the run directory")
    step = _restore(s, run) if resume else 0
    if resume and ctx.is_main:
        run_dir.write_config(run, cfg)
    if resume and ctx.active:  # the checkpoint holds rank 0's RNG; give each rank its own again
        pyro.set_rng_seed(ctx.seed(t.seed) + step)
    log = run_dir.MetricsLog(run / run_dir.METRICS_FILE, resume_step=step if resume else None) if ctx.is_main else None
    bar = tqdm(total=s.total_steps, initial=step, disable=not (progress and ctx.is_main),
               desc=f"train {run.name}", unit="step", dynamic_ncols=True)
    record: dict[str, Any] = {}
    batch_size = cfg.data.batch_size
    bad_steps = 0
    s.net.train()
    started = time.perf_counter()
    try:
        # Pyro's argument validation is for building models; in the loop it would turn a NaN batch
        # into a ValueError deep inside a distribution instead of a skipped step.
        with _stop_requests() as stop, pyro.validation_enabled(False):
            while step < s.total_steps:
                epoch, start = divmod(step, s.steps_per_epoch)
                for index in rank_batches(len(s.train_set), batch_size, t.seed, epoch, start,
                                          ctx.rank, ctx.world_size):
                    try:
                        record = train_step(s, s.train_set.images[index], s.train_set.labels[index])
                        bad_steps = 0
                    except NonFiniteStep as exc:
                        s.scheduler.step()  # the batch is spent; the schedule stays aligned with the step
                        bad_steps += 1
                        warnings.warn(f"step {step + 1} skipped: {exc}")
                        if bad_steps >= t.max_bad_steps:
                            raise NonFiniteStep(
                                f"step {step + 1}: {exc}; {bad_steps} bad steps in a row "
                                f"(train.max_bad_steps={t.max_bad_steps}); last good checkpoint: "
                                f"{run / run_dir.LAST_CHECKPOINT}") from None
                        record = {}
                    step += 1
                    bar.update(1)
                    if record and (step % t.log_every == 0 or step == s.total_steps):
                        record = ctx.mean_record(record)
                        record.update(step=step, epoch=epoch)
                        if log is not None:
                            log.write(record)
                        bar.set_postfix(loss=f"{record['loss']:.3f}",
                                        open=f"{record.get('open_rate', float('nan')):.2f}")
                    stopping = not ctx.agree(not stop)
                    epoch_done = step % s.steps_per_epoch == 0
                    due = (epoch_done or step == s.total_steps or stopping
                           or (t.checkpoint_every and step % t.checkpoint_every == 0))
                    if due and not bad_steps and ctx.is_main:  # never save in the middle of a bad streak
                        _save(s, run, step)
                        if epoch_done:
                            _keep_epoch_checkpoint(run, step // s.steps_per_epoch, t.keep)
                    if stopping:
                        ctx.barrier()
                        saved = "checkpoint saved" if not bad_steps else "last good checkpoint kept (bad steps since)"
                        raise TrainingInterrupted(
                            f"{stop[0] if stop else 'a stop request on another rank'} at step {step}: "
                            f"{saved}; continue with --resume {run}")
                    if step >= s.total_steps:
                        break
    finally:
        bar.close()
        if log is not None:
            log.close()
    if not ctx.is_main:
        ctx.barrier()
        return {}
    features = extract(s.net, s.eval_transform, s.test_set, s.device, cfg.data.eval_batch_size, s.classifier)
    summary = summarize(features, record.get("loss"))
    summary["steps"] = step
    summary["train_seconds"] = time.perf_counter() - started
    atomic_write_json(run / SUMMARY_FILE, summary)
    ctx.barrier()
    return summary


def train_unless_finished(cfg: Config, progress: bool = False) -> None:
    """Make sure the run in ``cfg.train.out_dir`` is trained: nothing when it has a summary, a
    resume from its checkpoint when it has one, else a fresh start (a run that died before its
    first checkpoint leaves a config, environment and log that are cleared first). What ablation
    grids and result suites call for each of their runs."""
    run = Path(cfg.train.out_dir)
    if (run / SUMMARY_FILE).is_file():
        return
    has_checkpoint = (run / run_dir.LAST_CHECKPOINT).is_file()
    if not has_checkpoint:
        for leftover in (run_dir.CONFIG_FILE, run_dir.ENV_FILE, run_dir.METRICS_FILE):
            (run / leftover).unlink(missing_ok=True)
    train(cfg, resume=has_checkpoint, progress=progress)


if __name__ == "__main__":
    from .cli import train_main

    train_main()
