"""The training loop: batch -> two views -> backbone once -> negative ELBO (+ online probe) -> step.

Logging, checkpointing, the periodic test-split check (``train.eval_every``) and the end-of-run
summary sit beside the loop, not inside the step (:mod:`.step`). Opening the run directory
(lock, fallback to an intact checkpoint, a finished run left alone) sits before it.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pyro

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.errors import (
    BayesNCLError,
    NonFiniteStep,
    PeerLost,
    RunWarning,
    StorageError,
    TrainingInterrupted,
)
from bayesncl_pyro.data.progress import progress as progress_bar, silenced
from bayesncl_pyro.storage import checkpoints, run_directory
from bayesncl_pyro.storage.atomic import atomic_write_bytes, atomic_write_json, read_json
from bayesncl_pyro.storage.metrics_log import MetricsLog, check_log, open_metrics_log, read_metrics
from bayesncl_pyro.storage.run_directory import LAST_CHECKPOINT, SUMMARY_FILE, RunLock
from bayesncl_pyro.training.distributed import (
    DistributedContext,
    is_peer_failure,
    peer_failure_reason,
    setup_distributed,
)
from bayesncl_pyro.training.session import Session, build
from bayesncl_pyro.training.signals import StopRequests, stop_requests
from bayesncl_pyro.training.step import StepRecord, train_step
from bayesncl_pyro.training.summary import test_summary

__all__ = ["SUMMARY_FILE", "train", "train_unless_finished"]


def train(cfg: Config, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one run into ``cfg.train.out_dir``; returns the end-of-run summary (empty on ranks
    other than 0 of a distributed run).

    Everything that can fail on bad input (data, device, checkpoint) is checked before anything
    is written to the run directory, and the directory is locked against a second writer first.
    A resume continues from ``last.pt``, or from the newest intact ``epoch_NNNN.pt`` when
    ``last.pt`` is damaged (saying so), or from step 0 when the run has no checkpoint yet; a
    finished run is left as it is. Under torchrun (``torch.distributed`` environment set), rank
    0 locks, logs, checkpoints and summarises; the others train. Without ``progress``, nothing
    shows progress, the decode of the data included.
    """
    check_log(cfg.train.log)
    with stop_requests() as stop, silenced(not progress):
        ctx = setup_distributed(cfg.train)
        try:
            return _train(cfg, ctx, resume, progress, stop)
        except RuntimeError as exc:
            if not (ctx.active and is_peer_failure(exc)):
                raise
            run = cfg.train.out_dir
            raise PeerLost(f"another process of this distributed run died or stopped answering "
                           f"({peer_failure_reason(exc)}); {run} keeps the checkpoints it saved: once every node "
                           f"is up, continue with bayesncl-train --resume {run} under torchrun on every node") from None
        finally:
            ctx.cleanup()


def _keep_epoch_checkpoint(run: Path, epoch: int, keep: int) -> None:
    """Copy ``last.pt`` to ``epoch_NNNN.pt`` and delete all but the newest ``keep`` of those."""
    atomic_write_bytes(run_directory.epoch_checkpoint(run, epoch), (run / LAST_CHECKPOINT).read_bytes())
    for old in run_directory.epoch_checkpoints(run)[keep:]:
        old.unlink()


def _open_run(cfg: Config, ctx: DistributedContext, s: Session, resume: bool) -> RunLock | None:
    """Rank 0 locks and prepares the run directory, with the record of its evaluation transform
    (unless a resumed run has it already); every rank learns if that failed (or they would wait
    at the next collective)."""
    lock, failure = None, None
    if ctx.is_main:
        try:
            lock = run_directory.open_run(cfg, resume)
            run = Path(cfg.train.out_dir)
            if not resume or run_directory.read_preprocessing(run) is None:
                transform = s.eval_transform
                run_directory.write_preprocessing(run, transform.size, transform.mean.tolist(), transform.std.tolist(),
                                                  cfg.data.store_size)
        except BaseException as exc:
            if lock is not None:
                lock.release()
            failure = exc
    if not ctx.agree(failure is None):
        raise failure if failure is not None else BayesNCLError("rank 0 could not prepare the run directory")
    return lock


def _train(cfg: Config, ctx: DistributedContext, resume: bool, progress: bool, stop: StopRequests) -> dict[str, Any]:
    s = build(cfg, ctx, resume)
    lock = _open_run(cfg, ctx, s, resume)
    try:
        return _run(cfg, ctx, s, resume, progress, stop)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: Config, ctx: DistributedContext, s: Session, resume: bool, progress: bool,
         stop: StopRequests) -> dict[str, Any]:
    t = cfg.train
    run = Path(t.out_dir)
    step, last_good = 0, "none yet (no checkpoint was written)"
    if resume:
        point = checkpoints.resume_point(run)
        if ctx.is_main:
            for note in point.notes:
                warnings.warn(note, RunWarning, stacklevel=3)
        if point.state is not None:
            step = s.restore(point.state, point.path)
            last_good = f"{point.path} (step {step})"
        elif ctx.is_main:  # started again from step 0: this process's environment
            run_directory.write_environment(run)
        if step >= s.total_steps:
            return _finished(s, run, step)
        if ctx.is_main:
            run_directory.write_config(run, cfg)
        if ctx.active:  # the checkpoint holds rank 0's RNG; give each rank its own again
            pyro.set_rng_seed(ctx.seed(t.seed, step))
            s.seed_streams(step)
    log = open_metrics_log(run, t.log, resume_step=step if resume else None) if ctx.is_main else None
    bar = progress_bar(total=s.total_steps, initial=step, enabled=progress and ctx.is_main,
                       desc=f"train {run.name} (SVI steps)", unit="step", dynamic_ncols=True)
    record: StepRecord | None = None
    bad_steps = 0
    s.net.train()
    started = time.perf_counter()
    try:
        # Pyro's argument validation is for building models; in the loop it would turn a NaN batch
        # into a ValueError deep inside a distribution instead of a skipped step.
        with stop.deferred(), pyro.validation_enabled(False):
            while step < s.total_steps:
                epoch, start = divmod(step, s.steps_per_epoch)
                for images, labels in s.batches(epoch, start):
                    try:
                        record = train_step(s, images, labels)
                        bad_steps = 0
                    except NonFiniteStep as exc:
                        s.scheduler.step()  # the batch is spent; the schedule stays aligned with the step
                        bad_steps += 1
                        warnings.warn(f"step {step + 1} skipped: {exc}", RunWarning, stacklevel=2)
                        if bad_steps >= t.max_bad_steps:
                            raise NonFiniteStep(
                                f"step {step + 1}: {exc}; {bad_steps} bad steps in a row "
                                f"(train.max_bad_steps={t.max_bad_steps}); last good checkpoint: {last_good}"
                            ) from None
                        record = None
                    step += 1
                    bar.update(1)
                    # the first and the last step always: a run shorter than log_every still draws a line
                    if record is not None and (step % t.log_every == 0 or step in (1, s.total_steps)):
                        record = ctx.mean_record(record)
                        record.step, record.epoch = step, epoch
                        if log is not None:
                            log.write(record.to_dict())
                        bar.set_postfix(loss=f"{record.loss:.3f}",
                                        open="-" if record.open_rate is None else f"{100 * record.open_rate:.0f}%")
                    stopping = not ctx.agree(not stop)
                    epoch_done = step % s.steps_per_epoch == 0
                    due = (epoch_done or step == s.total_steps or stopping
                           or (t.checkpoint_every and step % t.checkpoint_every == 0))
                    if due and not bad_steps:  # never save in the middle of a bad streak
                        _check_finite(s, ctx, step, last_good)
                        if ctx.is_main:
                            s.save(run, step)
                            if epoch_done:
                                _keep_epoch_checkpoint(run, step // s.steps_per_epoch, t.keep)
                        last_good = f"{run / LAST_CHECKPOINT} (step {step})"
                    if (epoch_done and t.eval_every and (step // s.steps_per_epoch) % t.eval_every == 0
                            and step < s.total_steps):
                        _log_test_check(s, log, step, epoch)
                    if stopping:
                        ctx.barrier()
                        saved = "checkpoint saved" if not bad_steps else f"last good checkpoint kept: {last_good}"
                        raise TrainingInterrupted(
                            f"{stop.first if stop else 'a stop request on another rank'} at step {step}: "
                            f"{saved}; continue with --resume {run}")
                    if step >= s.total_steps:
                        break
    except StorageError as exc:
        raise StorageError(f"{exc}; last good checkpoint: {last_good}; once that is fixed, "
                           f"continue with --resume {run}") from None
    finally:
        bar.close()
        if log is not None:
            log.close()
    if not ctx.is_main:
        ctx.barrier()
        return {}
    summary = _summary(s, run, step, None if record is None else record.loss)
    summary["train_seconds"] = time.perf_counter() - started
    atomic_write_json(run / SUMMARY_FILE, summary)
    ctx.barrier()
    return summary


def _check_finite(s: Session, ctx: DistributedContext, step: int, last_good: str) -> None:
    """A checkpoint is "good" only when every parameter and buffer is finite: stop rather than
    write one that is not (a step with a finite loss and gradient can still overflow a weight)."""
    bad = checkpoints.modules_non_finite(s.modules())
    if not ctx.agree(bad is None):
        raise NonFiniteStep(f"step {step}: {bad or 'a tensor on another rank'} holds NaN or infinite values "
                            f"after the step; no checkpoint is written; last good checkpoint: {last_good}")


def _last_logged_loss(run: Path, step: int) -> float | None:
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r and r.get("step", 0) <= step]
    return losses[-1] if losses else None


def _summary(s: Session, run: Path, step: int, final_loss: float | None) -> dict[str, Any]:
    """The end-of-run summary; without a loss from this process (a run resumed at its last
    step), the last one its metrics log holds."""
    summary = test_summary(s, final_loss if final_loss is not None else _last_logged_loss(run, step))
    summary["steps"] = step
    summary["train_seconds"] = None
    return summary


def _finished(s: Session, run: Path, step: int) -> dict[str, Any]:
    """A resume of a run at (or past) its last step: its summary as it is, written only when it
    is missing (the run was stopped while summarising)."""
    if not s.ctx.is_main:
        s.ctx.barrier()
        return {}
    summary = read_json(run / SUMMARY_FILE, "run summary")
    if isinstance(summary, dict):
        warnings.warn(f"{run} already finished at step {step} (of {s.total_steps}); nothing was changed",
                      RunWarning, stacklevel=4)
    else:
        warnings.warn(f"{run} finished at step {step} but has no {SUMMARY_FILE}; writing it", RunWarning,
                      stacklevel=4)
        summary = _summary(s, run, step, None)
        atomic_write_json(run / SUMMARY_FILE, summary)
    s.ctx.barrier()
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
    resume when it holds a run (from its newest intact checkpoint, or from step 0 when it died
    before its first), else a fresh start. What ablation grids and result suites call for each
    of their runs."""
    run = Path(cfg.train.out_dir)
    if (run / SUMMARY_FILE).is_file():
        return
    train(cfg, resume=(run / run_directory.CONFIG_FILE).is_file(), progress=progress)
