"""A rank of the two-"node" run of tests/test_store_nodes.py, launched by torchrun: it opens the
ImageFolder store (one process decodes it, the others wait on its lock), takes its shard of two
global batches through the prefetcher, and saves them with the DDP loss and gradients of the
ungated network on deterministic views (eval transform, and its mirror image)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from bayesncl_pyro.config import load_config
from bayesncl_pyro.data.augment import EvalTransform
from bayesncl_pyro.data.sources import load_split, normalization
from bayesncl_pyro.inference.bayesncl import BayesNCL
from bayesncl_pyro.training.batches import Prefetcher
from bayesncl_pyro.training.distributed import rank_batches, setup_distributed, wrap_ddp

STEPS = 2


def views(cfg, data, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = EvalTransform(cfg.data.image_size, *normalization(cfg.data, data))(images).double()
    return x, x.flip(-1)


def main(work: Path, config: str, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    cfg = load_config(config, overrides)
    ctx = setup_distributed(cfg.train)
    try:
        data = load_split(cfg.data, "train")
        net = BayesNCL(cfg, negatives=ctx.negatives).double()
        net.load_state_dict(torch.load(work / "init.pt"))
        net.eval()
        step = wrap_ddp(net, ctx)
        batches = rank_batches(len(data), cfg.data.batch_size, cfg.train.seed, 0, 0, ctx.rank, ctx.world_size)
        results = []
        for images, labels in Prefetcher(data.images, data.labels, batches):
            out = step(*views(cfg, data, images))
            out.loss.backward()
            results.append({"images": images, "labels": labels, "loss": ctx.mean(out.loss.detach()),
                            "grads": {n: p.grad.clone() for n, p in net.named_parameters()}})
            net.zero_grad(set_to_none=True)
            if len(results) == STEPS:
                break
        torch.save(results, work / f"rank{ctx.rank}.pt")
        ctx.barrier()
    finally:
        ctx.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
