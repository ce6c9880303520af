"""Data-parallel training equals one process on the concatenated batch.

Two gloo processes on loopback, each with B images, against one process with the 2B images, same
weights: the mean of the per-rank losses equals the single loss and the DDP-averaged parameter
gradients equal the single-process gradients (1e-5; the networks run in float64, the ELBO in
float32 as always, so the gap is float32 rounding, ~3e-7 on gradients of size ~3), for ``ste``
gates (with a large KL weight, so the KL's gradient counts), for the frequency-aware prior (whose
open probabilities come from the whole batch) and for the ungated model. A control with the other ranks' rows gathered *without* gradients gives the same
loss but different gradients, so the comparison can tell.

BatchNorm runs in eval mode (running statistics) in this test: in train mode each rank
normalises with its own batch statistics, which is not the single-process computation, and
torch's SyncBatchNorm (the fix) has no CPU kernel.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.inference.bayesncl import BayesNCL
from bayesncl_pyro.inference.negatives import local_batch
from bayesncl_pyro.training.batches import train_batches
from bayesncl_pyro.training.distributed import (
    DistributedContext,
    TrainStep,
    gathered_negatives,
    rank_batches,
    setup_distributed,
    shard_indices,
    wrap_ddp,
)
from bayesncl_pyro.training.step import StepRecord

from .conftest import ROOT, TINY

WORLD = 2
BATCH = 4
TOL = 1e-5
CASES = {
    "ste": ["gate.prior=bernoulli", "gate.estimator=ste", "gate.kl_weight=0.5", "gate.temperature=0.5"],
    "ungated": ["gate.prior=none", "model.nonneg=none"],
    # the prior reads how often each dimension fires: of the global batch, not of a rank's rows
    "frequency_bernoulli": ["gate.prior=frequency_bernoulli", "gate.estimator=ste", "gate.kl_weight=0.5",
                            "gate.temperature=0.5", "gate.prior_prob=0.9"],
}


def _config(overrides, tmp: Path):
    return load_config(ROOT / "configs" / "scenes_quick.yaml",
                       [*TINY, f"data.batch_size={BATCH}", f"train.out_dir={tmp / 'run'}", *overrides])


def _detached_gather(rows, ids):
    """The control: other ranks' rows gathered as constants, this rank's rows live."""
    candidates, candidate_ids, offset = gathered_negatives(rows.detach(), ids)
    count = rows.shape[0]
    candidates = torch.cat([candidates[:offset], rows, candidates[offset + count:]])
    return candidates, candidate_ids, offset


def _rank_step(net, ctx, x1, x2):
    step = wrap_ddp(net, ctx)  # DDP reduces in backward through hooks that live as long as ``step``
    out = step(x1, x2)
    out.loss.backward()
    return {"loss": out.loss.detach(), "mean_loss": ctx.mean(out.loss),
            "grads": {n: p.grad.clone() for n, p in net.named_parameters()}}


def _worker(rank: int, port: int, workdir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    work = Path(workdir)
    ctx = None
    try:
        for name, overrides in CASES.items():
            cfg = _config(overrides, work)
            ctx = ctx or setup_distributed(cfg.train)
            x1, x2 = torch.load(work / "views.pt")
            mine = shard_indices(torch.arange(WORLD * BATCH), ctx.rank, ctx.world_size)
            results = {}
            for label, negatives in (("gathered", ctx.negatives), ("control", _detached_gather)):
                net = BayesNCL(cfg, negatives=negatives).double()
                net.load_state_dict(torch.load(work / f"{name}_init.pt"))
                net.eval()
                results[label] = _rank_step(net, ctx, x1[mine], x2[mine])
            torch.save(results, work / f"{name}_rank{rank}.pt")
        ctx.barrier()
        record = StepRecord(loss=float(rank), infonce=1.0, kl=0.5, probe_loss=2.0 * rank, probe_acc=0.25, lr=0.1)
        torch.save({"mean_record": ctx.mean_record(record).to_dict(),
                    "agree_split": ctx.agree(rank == 0), "agree_all": ctx.agree(True)},
                   work / f"context_rank{rank}.pt")
    finally:
        if ctx is not None:
            ctx.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_workers(workdir: Path, deadline_s: float = 150.0) -> None:
    context = mp.start_processes(_worker, args=(_free_port(), str(workdir)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    stop = time.monotonic() + deadline_s
    while not context.join(timeout=1.0):
        if time.monotonic() > stop:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD} gloo workers did not finish in {deadline_s:.0f} s")


def _single_process(cfg, state, x1, x2):
    net = BayesNCL(cfg).double()
    net.load_state_dict(state)
    net.eval()
    loss = net.loss(x1, x2)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    """Runs the two workers once for every case; returns {case: (single, [rank results])}."""
    work = tmp_path_factory.mktemp("ddp")
    g = torch.Generator().manual_seed(0)
    images = 2 * torch.randn(WORLD * BATCH, 3, 1, 1, generator=g, dtype=torch.float64)  # a colour per image
    views = [images + torch.randn(WORLD * BATCH, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(2)]
    torch.save(views, work / "views.pt")
    inits = {}
    for seed, (name, overrides) in enumerate(CASES.items()):
        torch.manual_seed(seed)
        net = BayesNCL(_config(overrides, work)).double()
        for module in net.modules():  # non-trivial BN statistics, so eval-mode BN is not the identity
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2, generator=g)
                module.running_var.uniform_(0.5, 2.0, generator=g)
        inits[name] = net.state_dict()
        torch.save(inits[name], work / f"{name}_init.pt")
    _run_workers(work)
    out = {}
    for name, overrides in CASES.items():
        single = _single_process(_config(overrides, work), inits[name], *views)
        ranks = [torch.load(work / f"{name}_rank{r}.pt") for r in range(WORLD)]
        out[name] = single, ranks
    out["context"] = [torch.load(work / f"context_rank{r}.pt") for r in range(WORLD)]
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_mean_of_rank_losses_is_the_single_process_loss(distributed_results, case):
    (single_loss, _), ranks = distributed_results[case]
    losses = torch.stack([r["gathered"]["loss"] for r in ranks])
    assert abs(losses[0] - losses[1]) > 10 * TOL, "the ranks' losses should differ (different images)"
    assert abs(losses.mean() - single_loss) < TOL
    for r in ranks:
        assert abs(r["gathered"]["mean_loss"] - single_loss) < TOL
        assert abs(r["control"]["loss"] - r["gathered"]["loss"]) < 1e-12


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_gradients_are_the_single_process_gradients(distributed_results, case):
    (_, single_grads), ranks = distributed_results[case]
    for r in ranks:
        got = r["gathered"]["grads"]
        assert got.keys() == single_grads.keys()
        for name, want in single_grads.items():
            assert torch.allclose(got[name], want, atol=TOL, rtol=0), (name, (got[name] - want).abs().max())
    if case == "ste":
        assert any(n.startswith("guide.") and g.abs().sum() > 0 for n, g in single_grads.items())


@pytest.mark.parametrize("case", list(CASES))
def test_gathering_without_gradients_is_caught(distributed_results, case):
    (_, single_grads), ranks = distributed_results[case]
    control = ranks[0]["control"]["grads"]
    worst = max((control[n] - g).abs().max().item() for n, g in single_grads.items())
    assert worst > 100 * TOL


def test_rank_decisions_and_log_means_are_collective(distributed_results):
    for r in distributed_results["context"]:
        assert r["mean_record"] == {"loss": (WORLD - 1) / 2, "infonce": 1.0, "kl": 0.5, "probe_loss": WORLD - 1.0,
                                    "probe_acc": 0.25, "lr": 0.1, "step": 0, "epoch": 0}
        assert r["agree_split"] is False and r["agree_all"] is True


def test_shards_are_disjoint_and_cover_the_global_batch():
    index = torch.randperm(24)
    shards = [shard_indices(index, r, 3) for r in range(3)]
    assert all(s.shape == (8,) for s in shards)
    assert torch.equal(torch.cat(shards), index)
    with pytest.raises(ValueError, match="25 items"):
        shard_indices(torch.arange(25), 0, 2)


def test_rank_batches_split_the_single_process_batches():
    one = list(train_batches(100, 8, seed=3, epoch=2, start=1))
    assert [b.tolist() for b in rank_batches(100, 8, 3, 2, 1, rank=0, world_size=1)] == [b.tolist() for b in one]
    global_batches = list(train_batches(100, 16, seed=3, epoch=2))
    per_rank = [list(rank_batches(100, 8, 3, 2, 0, rank=r, world_size=2)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == len(global_batches) == 6
    for b, whole in enumerate(global_batches):
        assert torch.equal(torch.cat([per_rank[0][b], per_rank[1][b]]), whole)


def test_without_torchrun_the_context_is_a_no_op(tiny_config, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    cfg = tiny_config()
    ctx = setup_distributed(cfg.train)
    assert (ctx.active, ctx.rank, ctx.world_size, ctx.is_main) == (False, 0, 1, True)
    assert ctx.negatives is local_batch
    x = torch.randn(3)
    assert ctx.mean(x) is x
    ctx.barrier()
    ctx.cleanup()

    class Wanted:
        device = "cpu"
        distributed = True

    with pytest.raises(ConfigError, match="train.distributed=true"):
        setup_distributed(Wanted())


def test_single_process_gathered_negatives_are_the_local_batch():
    rows, ids = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    candidates, candidate_ids, offset = gathered_negatives(rows, ids)
    assert candidates is rows and candidate_ids is ids and offset == 0


def test_train_step_without_a_group_is_the_network_step(tiny_config):
    torch.manual_seed(0)
    cfg = tiny_config()
    net = BayesNCL(cfg)
    classifier = torch.nn.Linear(net.feature_dim, 5)
    step = wrap_ddp(net, DistributedContext(), classifier=classifier)
    assert isinstance(step, TrainStep)
    x1, x2 = torch.randn(2, 4, 3, 32, 32)
    net.eval()
    out = step(x1, x2)
    want = net.step(x1, x2)
    assert torch.equal(out.loss, want.loss)
    assert torch.equal(out.probe_logits, classifier(want.h))
    reached = torch.autograd.grad(out.probe_logits.sum(), list(net.backbone.parameters()), allow_unused=True)
    assert all(g is None for g in reached), "the probe must read h.detach()"



def test_refusals_name_the_key(tiny_config):
    running = DistributedContext(rank=0, world_size=2, active=True)  # no group needed: both checks come first
    with pytest.raises(ConfigError, match="train.sync_bn"):
        wrap_ddp(BayesNCL(tiny_config()), running, sync_bn=True)
    with pytest.raises(ConfigError, match="gate.estimator='score'"):
        wrap_ddp(BayesNCL(tiny_config("gate.estimator=score")), running)
    with pytest.raises(ConfigError, match="gate.estimator='disarm' has no pathwise gradient"):
        wrap_ddp(BayesNCL(tiny_config("gate.estimator=disarm")), running)
