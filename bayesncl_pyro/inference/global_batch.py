"""A statistic of the whole batch, not of this process's share of it: under ``torchrun`` each
rank holds a slice of the global batch, and a prior that reads the batch (e.g. how often a
dimension fires) must read all of it, or two ranks train another model than one process.

Every rank of a running process group must call it at the same point of the step (it is one
all-reduce); without a group, or with one process, it is a plain mean.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def rows_mean(x: torch.Tensor) -> torch.Tensor:
    """[R, ...] on each rank -> [...]: the mean over the rows of every rank (sum of the ranks'
    row sums over the sum of their row counts), without gradient."""
    x = x.detach()
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x.mean(0)
    totals = torch.cat([x.sum(0).reshape(-1), x.new_tensor([x.shape[0]])])
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return (totals[:-1] / totals[-1]).reshape(x.shape[1:])
