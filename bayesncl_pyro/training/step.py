"""One optimisation step, and the typed record of it that the metrics log writes.

The network's :class:`~bayesncl_pyro.inference.bayesncl.StepOutput` (tensors) comes out of the
step module; the step turns it into a :class:`StepRecord` (numbers) once, and that record is
what is averaged over ranks, shown on the progress bar and written to ``metrics.jsonl``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from bayesncl_pyro.config.device import autocast
from bayesncl_pyro.config.errors import NonFiniteStep
from bayesncl_pyro.training.session import Session


@dataclass
class StepRecord:
    """What one step logs: the negative ELBO ``loss`` = ``infonce`` + ``kl`` (the λ-weighted KL
    term), the online probe's cross-entropy and accuracy (a fraction), the learning rate this
    step used, the hard-gate open share of the training batch (a fraction; None without gates), with float16 whether
    the gradient scaler found an overflow and skipped the optimizer step (1.0 or 0.0; averaged over
    ranks like the rest; None without a scaler), and where the step is (``step`` counts finished
    steps, ``epoch`` is 0-based)."""

    loss: float
    infonce: float
    kl: float
    probe_loss: float
    probe_acc: float
    lr: float
    open_rate: Optional[float] = None
    scaler_skipped: Optional[float] = None
    step: int = 0
    epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON line of ``metrics.jsonl`` (``open_rate`` left out when there are no gates,
        ``scaler_skipped`` without float16)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


def _grad_norm(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(p.grad) for g in optimizer.param_groups for p in g["params"]
             if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def _buffers(s: Session) -> list[torch.Tensor]:
    return [b for module in s.modules().values() for b in module.buffers()]


def train_step(s: Session, images: torch.Tensor, labels: torch.Tensor) -> StepRecord:
    """One optimisation step on a batch of uint8 images [B, 3, H, W] and labels [B].

    Raises :class:`NonFiniteStep` before the optimizer moves if the loss or the gradient is not
    finite. With float16 an overflow in the scaled gradients is the gradient scaler's business:
    it skips the optimizer step and lowers its scale, a normal part of dynamic loss scaling, so
    the step is not an error (it does not count towards ``train.max_bad_steps``) and its record
    says ``scaler_skipped=1.0``. Either way a skipped step changes no parameter and no buffer: the
    forward pass in train mode has already moved the BatchNorm running statistics and counters,
    so the buffers are copied before it (they are small) and put back. The random streams stay
    advanced and the batch is spent, as for a taken step.
    """
    buffers = _buffers(s)
    before = [b.detach().clone() for b in buffers]

    def put_back() -> None:
        with torch.no_grad():
            for buffer, value in zip(buffers, before):
                buffer.copy_(value)

    try:
        record = _step(s, images, labels)
    except NonFiniteStep:
        put_back()
        raise
    if record.scaler_skipped:
        put_back()
    return record


def _step(s: Session, images: torch.Tensor, labels: torch.Tensor) -> StepRecord:
    x = images.to(s.device, non_blocking=True)
    y = labels.to(s.device, non_blocking=True)
    view1, view2 = s.augment(x, s.augment_generator), s.augment(x, s.augment_generator)
    if s.cfg.train.channels_last:
        view1 = view1.contiguous(memory_format=torch.channels_last)
        view2 = view2.contiguous(memory_format=torch.channels_last)
    with autocast(s.device, s.cfg.train.precision):
        out = s.step_module(view1, view2)
        logits = out.probe_logits.float()
    targets = torch.cat([y, y])
    probe_loss = F.cross_entropy(logits, targets)
    total = out.loss + probe_loss
    if not s.ctx.agree(bool(torch.isfinite(total))):
        where = f" on rank {s.ctx.rank}" if s.ctx.active else ""
        raise NonFiniteStep(f"loss is {total.item()} (negative ELBO {out.loss.item()}, probe loss "
                            f"{probe_loss.item()}){where}")
    s.optimizer.zero_grad(set_to_none=True)
    scaler_skipped = None
    if s.scaler is not None:
        s.scaler.scale(total).backward()
        scale = s.scaler.get_scale()
        s.scaler.step(s.optimizer)
        s.scaler.update()
        scaler_skipped = float(s.scaler.get_scale() < scale)  # the scale drops exactly when it skipped
    else:
        total.backward()
        grad_norm = _grad_norm(s.optimizer)
        if not torch.isfinite(grad_norm):
            s.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteStep(f"gradient norm is {grad_norm.item()}")
        s.optimizer.step()
    lr = s.optimizer.param_groups[0]["lr"]  # the rate this step used
    s.scheduler.step()
    return StepRecord(
        loss=out.loss.item(), infonce=out.infonce.item(), kl=out.kl.item(), probe_loss=probe_loss.item(),
        probe_acc=(logits.argmax(1) == targets).float().mean().item(), lr=lr,
        open_rate=None if out.open_rate is None else out.open_rate.item(), scaler_skipped=scaler_skipped,
    )
