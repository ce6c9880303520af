"""The training loop: batch -> two views -> backbone once -> negative ELBO (+ online probe) -> step.

Logging, checkpointing, the periodic test-split check (``train.eval_every``) and the end-of-run
summary sit beside the loop, not inside the step (:mod:`.step`).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pyro
from tqdm.auto import tqdm

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.errors import BayesNCLError, NonFiniteStep, TrainingInterrupted
from bayesncl_pyro.storage import run_directory
from bayesncl_pyro.storage.atomic import atomic_write_bytes, atomic_write_json
from bayesncl_pyro.storage.metrics_log import METRICS_FILE, MetricsLog
from bayesncl_pyro.training.distributed import DistributedContext, rank_batches, setup_distributed
from bayesncl_pyro.training.session import Session, build
from bayesncl_pyro.training.signals import stop_requests
from bayesncl_pyro.training.step import StepRecord, train_step
from bayesncl_pyro.training.summary import test_summary

SUMMARY_FILE = "summary.json"


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


def _keep_epoch_checkpoint(run: Path, epoch: int, keep: int) -> None:
    """Copy ``last.pt`` to ``epoch_NNNN.pt`` and delete all but the newest ``keep`` of those."""
    atomic_write_bytes(run / f"epoch_{epoch:04d}.pt", (run / run_directory.LAST_CHECKPOINT).read_bytes())
    for old in sorted(run.glob("epoch_*.pt"))[:-keep]:
        old.unlink()


def _train(cfg: Config, ctx: DistributedContext, resume: bool, progress: bool) -> dict[str, Any]:
    t = cfg.train
    s = build(cfg, ctx, resume)
    run = Path(t.out_dir)
    prepared: BaseException | None = None
    if ctx.is_main:
        try:
            run_directory.prepare(cfg, resume)
            transform = s.eval_transform
            run_directory.write_preprocessing(run, transform.size, transform.mean.tolist(), transform.std.tolist())
        except BaseException as exc:  # every rank must learn of it, or they wait at the barrier
            prepared = exc
    if not ctx.agree(prepared is None):
        raise prepared if prepared is not None else BayesNCLError("rank 0 could not prepare the run directory")
    step = s.restore(run) if resume else 0
    if resume and ctx.is_main:
        run_directory.write_config(run, cfg)
    if resume and ctx.active:  # the checkpoint holds rank 0's RNG; give each rank its own again
        pyro.set_rng_seed(ctx.seed(t.seed) + step)
        s.seed_streams(step)
    log = MetricsLog(run / METRICS_FILE, resume_step=step if resume else None) if ctx.is_main else None
    bar = tqdm(total=s.total_steps, initial=step, disable=not (progress and ctx.is_main),
               desc=f"train {run.name}", unit="step", dynamic_ncols=True)
    record: StepRecord | None = None
    batch_size = cfg.data.batch_size
    bad_steps = 0
    s.net.train()
    started = time.perf_counter()
    try:
        # Pyro's argument validation is for building models; in the loop it would turn a NaN batch
        # into a ValueError deep inside a distribution instead of a skipped step.
        with stop_requests() as stop, pyro.validation_enabled(False):
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
                                f"{run / run_directory.LAST_CHECKPOINT}") from None
                        record = None
                    step += 1
                    bar.update(1)
                    if record is not None and (step % t.log_every == 0 or step == s.total_steps):
                        record = ctx.mean_record(record)
                        record.step, record.epoch = step, epoch
                        if log is not None:
                            log.write(record.to_dict())
                        bar.set_postfix(loss=f"{record.loss:.3f}",
                                        open="-" if record.open_rate is None else f"{record.open_rate:.2f}")
                    stopping = not ctx.agree(not stop)
                    epoch_done = step % s.steps_per_epoch == 0
                    due = (epoch_done or step == s.total_steps or stopping
                           or (t.checkpoint_every and step % t.checkpoint_every == 0))
                    if due and not bad_steps and ctx.is_main:  # never save in the middle of a bad streak
                        s.save(run, step)
                        if epoch_done:
                            _keep_epoch_checkpoint(run, step // s.steps_per_epoch, t.keep)
                    if (epoch_done and t.eval_every and (step // s.steps_per_epoch) % t.eval_every == 0
                            and step < s.total_steps):
                        _log_test_check(s, log, step, epoch)
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
    summary = test_summary(s, None if record is None else record.loss)
    summary["steps"] = step
    summary["train_seconds"] = time.perf_counter() - started
    atomic_write_json(run / SUMMARY_FILE, summary)
    ctx.barrier()
    return summary


def _log_test_check(s: Session, log: MetricsLog | None, step: int, epoch: int) -> None:
    """Every ``train.eval_every`` epochs: the end-of-run summary's test-split numbers, logged as
    a ``test_*`` record of ``metrics.jsonl`` (rank 0 evaluates; the others wait for it). It uses
    no random numbers, so a run with and without it trains identically."""
    if log is not None:
        summary = test_summary(s, None)
        log.write({"step": step, "epoch": epoch,
                   **{f"test_{key}": value for key, value in summary.items() if key != "final_loss"}})
    s.ctx.barrier()


def train_unless_finished(cfg: Config, progress: bool = False) -> None:
    """Make sure the run in ``cfg.train.out_dir`` is trained: nothing when it has a summary, a
    resume from its checkpoint when it has one, else a fresh start (a run that died before its
    first checkpoint leaves a config, environment and log that are cleared first). What ablation
    grids and result suites call for each of their runs."""
    run = Path(cfg.train.out_dir)
    if (run / SUMMARY_FILE).is_file():
        return
    has_checkpoint = (run / run_directory.LAST_CHECKPOINT).is_file()
    if not has_checkpoint:
        for leftover in (run_directory.CONFIG_FILE, run_directory.ENV_FILE, METRICS_FILE):
            (run / leftover).unlink(missing_ok=True)
    train(cfg, resume=has_checkpoint, progress=progress)
