"""Data-parallel training over processes launched by ``torchrun``: the process group, each rank's
share of the global batch, negatives gathered across ranks with their gradients, and the module
DDP wraps.

With W ranks of 2B rows each, rank r's loss L_r is the mean over its own rows of InfoNCE against
all 2BW gathered rows (+ λ · the mean of its rows' gate KLs). The single-process loss on the
concatenated batch is L = (1/W) Σ_r L_r, because every row's term is the same and every rank
holds the same number of rows. DDP averages parameter gradients over ranks, so the DDP gradient
is (1/W) Σ_s g_s, where g_s is what rank s back-propagates through its own rows y_s. For this to
be ∂L/∂θ = (1/W) Σ_s (∂y_s/∂θ)ᵀ ∂(Σ_r L_r)/∂y_s, rank s's rows must receive the gradient of the
*sum* Σ_r L_r: ∂L_s/∂y_s through its own queries plus Σ_r ∂L_r/∂Y[slice s] through the gathered
candidates Y. So the backward of the gather all-reduces (SUM, not mean: DDP already divides by W)
the gradient of Y and returns this rank's slice. ``tests/test_distributed.py`` checks the loss
and every parameter gradient against one process on the concatenated batch.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bayesncl_pyro.config import Config, flatten
from bayesncl_pyro.config.device import resolve_device
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.config.validation import MAX_SEED
from bayesncl_pyro.inference.bayesncl import StepOutput
from bayesncl_pyro.inference.disarm import DisarmELBO
from bayesncl_pyro.inference.leave_one_out import LeaveOneOutELBO
from bayesncl_pyro.inference.negatives import Negatives, local_batch
from bayesncl_pyro.training.batches import train_batches

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
LAUNCH_HINT = "launch with: torchrun --nproc-per-node N -m bayesncl_pyro.train --config FILE ..."
PER_NODE_KEYS = frozenset({"data.root", "data.cache_dir", "data.download"})
"""Config keys that may differ between the processes of one run: where each node finds (or
fetches) its own copy of the data. Every other key must be the same on every rank."""


PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)
"""How long a rank waits in one collective for the others before it gives up: long enough for
rank 0's test-split check and end-of-run summary while the others wait at a barrier, finite so
that a node that hangs (rather than dies, which the collectives notice at once) ends the run."""

_COMMUNICATION_FAILURE = re.compile(r"gloo|nccl|connection (reset|closed|refused)|broken pipe", re.IGNORECASE)
"""What the message of a plain RuntimeError from a collective says (gloo raises RuntimeError, not
torch's DistError, when a peer's socket closes)."""


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised while a process group runs, is a collective that failed because
    another rank died or stopped answering."""
    return isinstance(exc, dist.DistError) or (
        isinstance(exc, RuntimeError) and bool(_COMMUNICATION_FAILURE.search(str(exc))))


def peer_failure_reason(exc: BaseException) -> str:
    """The part of a collective's error a person needs: without the source location, to the
    first full stop ("Read error [127.0.0.1]:2220: Connection reset by peer")."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return (text.split(". ")[0] or type(exc).__name__)[:200]


# torch renamed the single-tensor all-gather; keep working with the versions before the rename.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _world() -> tuple[int, int]:
    """(rank, world size) of the default group; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward: the all-reduced (summed) gradient, this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world = _world()
        x = x.contiguous()
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        _all_gather_single(out, x)
        ctx.rank, ctx.rows = rank, x.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.narrow(0, ctx.rank * ctx.rows, ctx.rows)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[R, ...] on each of W ranks -> [W·R, ...], rank s's rows at [s·R, (s+1)·R).

    Every rank must pass the same shape. The gradient that comes back to this rank's ``x`` is
    its slice of the gradient summed over ranks (see the module docstring for why the sum).
    Without a process group this is the identity.
    """
    if _world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def gathered_negatives(rows: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The drop-in for :func:`bayesncl_pyro.negatives.local_batch` in a distributed run.

    rows: [R, D] this rank's rows, ids: [R] their instance ids (local: ``two_view_ids`` starts at 0
    on every rank). Returns (candidates [W·R, D] gathered with gradients, candidate ids [W·R],
    offset = rank · R).

    The ids are made unique here, so the loop need not offset them: this rank's rows keep their
    ids, and every row of another rank gets ``ids.max() + 1``, an id no local row has. That is
    exact because the batch is sharded by image (:func:`shard_indices`): both views of an image
    live on one rank, so a row's positives are never on another rank, and InfoNCE only compares
    this rank's rows with the candidates.
    """
    rank, world = _world()
    if world == 1:
        return local_batch(rows, ids)
    candidates = gather_with_grad(rows)
    count = rows.shape[0]
    candidate_ids = (ids.max() + 1).repeat(world * count)
    candidate_ids[rank * count:(rank + 1) * count] = ids
    return candidates, candidate_ids, rank * count


def shard_indices(index: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous share of a global batch ``index`` [world_size · B] -> [B].

    Every rank draws the same global batch (the order is a function of (seed, epoch) alone) and
    takes its slice, so the shares are disjoint and their union is the global batch.
    """
    if index.shape[0] % world_size:
        raise ValueError(f"a global batch of {index.shape[0]} items does not split over {world_size} ranks")
    share = index.shape[0] // world_size
    return index[rank * share:(rank + 1) * share]


def rank_batches(num_items: int, batch_size: int, seed: int, epoch: int, start: int,
                 rank: int, world_size: int) -> Iterator[torch.Tensor]:
    """This rank's [batch_size] share of each global batch of ``world_size · batch_size`` items
    of one epoch, from batch ``start`` on; the same as ``batches.train_batches`` when
    ``world_size`` is 1. Being a function of (seed, epoch), it needs no ``set_epoch``."""
    for index in train_batches(num_items, world_size * batch_size, seed, epoch, start):
        yield shard_indices(index, rank, world_size)


@dataclass
class DistributedContext:
    """Where this process stands: rank, world size, its device, and whether a group is running.

    The no-op context (one process, no group) has ``active=False``; every method is then free.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    active: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints and writes the summary."""
        return self.rank == 0

    @property
    def negatives(self) -> Negatives:
        """What ``BayesNCL(cfg, negatives=...)`` should compare rows with."""
        return gathered_negatives if self.active else local_batch

    def barrier(self) -> None:
        if self.active:
            if dist.get_backend() == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over ranks (e.g. a loss to log); gloo has no AVG, so SUM / W."""
        if not self.active:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world_size

    def mean_record(self, record: Any) -> Any:
        """A copy of a dataclass record (e.g. a ``StepRecord``) with every number averaged over ranks
        (one all-reduce); fields that are None stay None. Every rank must call it with the same
        fields set."""
        if not self.active:
            return record
        names = [f.name for f in fields(record) if getattr(record, f.name) is not None]
        values = torch.tensor([float(getattr(record, n)) for n in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return replace(record, **dict(zip(names, (values / self.world_size).tolist())))

    def agree(self, ok: bool) -> bool:
        """True on every rank if ``ok`` on every rank. A decision that skips a step or stops the
        run must be taken by all ranks at once, or the others wait forever in the next collective."""
        if not self.active:
            return ok
        flag = torch.tensor([int(ok)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def seed(self, seed: int, step: int = 0) -> int:
        """A per-rank seed (at ``step``) for augmentation and global draws, so that ranks do not
        crop alike; taken modulo 2**32, the range every seeded generator accepts."""
        return (seed + 1_000_003 * self.rank + step) % (MAX_SEED + 1)

    def cleanup(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
        self.active = False


def _launched() -> Optional[tuple[int, int, int]]:
    if not all(key in os.environ for key in LAUNCH_ENV):
        return None
    try:
        return tuple(int(os.environ[key]) for key in LAUNCH_ENV)  # type: ignore[return-value]
    except ValueError:
        values = ", ".join(f"{k}={os.environ[k]!r}" for k in LAUNCH_ENV)
        raise ConfigError(f"the launcher's environment is not integers: {values}") from None


def setup_distributed(cfg_train: Any) -> DistributedContext:
    """Start the process group when this process was launched by ``torchrun`` (RANK, WORLD_SIZE,
    LOCAL_RANK set), else return the no-op context.

    Backend: NCCL when the device is CUDA (the device becomes ``cuda:LOCAL_RANK``), gloo on CPU.
    ``train.distributed=true`` without torchrun's environment is an error rather than a silent
    single-process run. An already initialised default group (e.g. from a test) is reused.
    """
    launched = _launched()
    wanted = bool(getattr(cfg_train, "distributed", False))
    device = resolve_device(cfg_train.device)
    if launched is None:
        if wanted:
            raise ConfigError(f"train.distributed=true but {', '.join(LAUNCH_ENV)} are not set; {LAUNCH_HINT}")
        return DistributedContext(device=device)
    rank, world_size, local_rank = launched
    if device.type == "cuda":
        if device.index is not None and world_size > 1:
            raise ConfigError(f"train.device={cfg_train.device!r} names one GPU for {world_size} processes; "
                              "allowed under torchrun: auto, cuda (each process takes cuda:LOCAL_RANK), cpu")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA device(s); "
                              "use --nproc-per-node <= the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=PROCESS_GROUP_TIMEOUT)
    return DistributedContext(rank, world_size, local_rank, device, active=True)


class TrainStep(nn.Module):
    """What DDP wraps: the network's step and the online probe, in one ``forward``.

    DDP only reduces gradients correctly for computations that go through its ``__call__``, and
    every parameter that gets a gradient must be inside it, the probe's included.
    ``forward(x1, x2)`` ([B, 3, S, S] each) returns the network's
    :class:`~bayesncl_pyro.inference.bayesncl.StepOutput` with ``probe_logits`` [2B, C] filled in
    (from ``h.detach()``; None without a classifier).
    """

    def __init__(self, net: nn.Module, classifier: Optional[nn.Module] = None):
        super().__init__()
        self.net = net
        self.classifier = classifier

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        out = self.net.step(x1, x2)
        if self.classifier is not None:
            out = replace(out, probe_logits=self.classifier(out.h.detach()))
        return out


def check_same_config(cfg: Config, ctx: DistributedContext) -> None:
    """Refuse, on every rank at once, a run whose processes were started with different configs
    (another ``optim.lr``, ``gate.prior`` or data seed on one node would train a model no single
    config describes, and ``config.yaml`` would record rank 0's alone). One all-gather; keys of
    :data:`PER_NODE_KEYS` may differ."""
    if not (ctx.active and ctx.world_size > 1 and dist.is_initialized()):
        return
    mine = {k: v for k, v in flatten(cfg.to_dict()).items() if k not in PER_NODE_KEYS}
    every = [None] * ctx.world_size
    dist.all_gather_object(every, mine)
    keys = sorted(set().union(*every))
    differ = [k for k in keys if any(repr(c.get(k)) != repr(every[0].get(k)) for c in every[1:])]
    if differ:
        shown = "; ".join(f"{k}: " + ", ".join(f"{c.get(k)!r} on rank {r}" for r, c in enumerate(every))
                          for k in differ[:4])
        more = f" (and {len(differ) - 4} more keys)" if len(differ) > 4 else ""
        raise ConfigError(f"the {ctx.world_size} processes of this run were started with different configs: "
                          f"{shown}{more}; every process must get the same config file and overrides")


def check_pathwise(net: nn.Module, ctx: DistributedContext) -> None:
    """Refuse an ELBO whose gradient is not pathwise in a multi-process run: a score-function
    ELBO weights each rank's gate log-probabilities by that rank's loss only (its gates also move
    the other ranks' losses through the negatives), and it replays InfoNCE under ``vmap``, where
    no collective can run. DisARM (``disarm``) is such an ELBO: its antithetic weights are the
    difference of this rank's losses alone, and its two draws are replayed under ``vmap`` too."""
    if ctx.active and ctx.world_size > 1 and isinstance(net.elbo, (LeaveOneOutELBO, DisarmELBO)):
        raise ConfigError(f"gate.estimator={net.cfg.gate.estimator!r} has no pathwise gradient and cannot run on "
                          f"{ctx.world_size} processes; allowed with torchrun: ste, sampled_ste, concrete, soft")


def wrap_ddp(net: nn.Module, ctx: DistributedContext, sync_bn: bool = False,
             classifier: Optional[nn.Module] = None, find_unused_parameters: bool = False) -> nn.Module:
    """The module the loop calls for a step: ``TrainStep(net, classifier)``, DDP-wrapped when a
    group is running.

    ``sync_bn`` converts the BatchNorm layers of ``net`` in place to ``SyncBatchNorm`` (the
    parameters stay the same objects, so an optimizer built before still holds them, and the
    state-dict keys do not change); without it each rank normalises with its own batch's
    statistics, which is what most contrastive recipes do but differs from one process on the
    concatenated batch. torch's SyncBatchNorm has no CPU kernel, hence the CUDA requirement.
    Every parameter gets a gradient in every step (the gate net through the straight-through
    path and the KL; the ungated model has no gate net), so ``find_unused_parameters`` stays
    off. DDP broadcasts rank 0's parameters and buffers when it is built. Build it once and keep
    it for the whole run: its gradient reduction runs in hooks that live as long as the wrapper.
    """
    step = TrainStep(net, classifier)
    if not ctx.active:
        return step
    if hasattr(net, "cfg"):  # first: a rank refusing alone would leave the others waiting
        check_same_config(net.cfg, ctx)
    check_pathwise(net, ctx)
    if sync_bn:
        if ctx.device.type != "cuda":
            raise ConfigError(f"train.sync_bn=true needs train.device=cuda (torch's SyncBatchNorm has no "
                              f"{ctx.device.type} kernel); allowed on CPU: train.sync_bn=false")
        nn.SyncBatchNorm.convert_sync_batchnorm(net)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # A zero KL weight masks the prior sites out: a global posterior's parameters then get no gradient.
    kl_weight = net.cfg.gate.kl_weight if hasattr(net, "cfg") else None
    unused = find_unused_parameters or kl_weight == 0
    return DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=unused)
