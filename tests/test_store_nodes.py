"""Two "nodes" on this machine (``torchrun --nnodes 2``, c10d rendezvous on localhost, gloo),
one process each, read one ImageFolder store: their shards of each global batch are the global
batch (pixels and labels bit for bit), and the mean of their losses and the DDP gradients equal
one process on the global batch (the network in float64, BatchNorm in eval mode, as in
tests/test_distributed.py; 1e-5)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from bayesncl_pyro.config import load_config
from bayesncl_pyro.data.sources import load_split
from bayesncl_pyro.inference.bayesncl import BayesNCL
from bayesncl_pyro.training.batches import train_batches

from .conftest import ROOT, TINY
from .store_node import STEPS, views
from .test_image_store import jpeg_tree

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)
NODES = 2
BATCH = 4
TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_one_store_equal_one_process_on_the_global_batch(tmp_path):
    root = jpeg_tree(tmp_path / "tree", per_class=8)
    overrides = [*TINY, "data.name=imagefolder", f"data.root={root}", "data.store=mmap", "data.store_size=24",
                 "data.image_size=16", f"data.batch_size={BATCH}", "gate.prior=none", "model.nonneg=none",
                 "train.distributed=true", f"train.out_dir={tmp_path / 'run'}"]
    config = str(ROOT / "configs" / "scenes_quick.yaml")
    cfg = load_config(config, overrides)
    torch.manual_seed(0)
    init = BayesNCL(cfg).double().state_dict()
    torch.save(init, tmp_path / "init.pt")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={NODES}", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=store-test",
         str(ROOT / "tests" / "store_node.py"), str(tmp_path), config, *overrides],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(NODES)]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=240)[0])
    finally:
        for node in nodes:
            node.kill()
    assert all(node.returncode == 0 for node in nodes), "\n".join(o[-2000:] for o in outputs)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(NODES)]

    single_cfg = load_config(config, [o for o in overrides if o != "train.distributed=true"])
    data = load_split(single_cfg.data, "train")  # the store the nodes wrote, not decoded again
    net = BayesNCL(single_cfg).double()
    net.load_state_dict(init)
    net.eval()
    for k, index in enumerate(train_batches(len(data), NODES * BATCH, cfg.train.seed, 0)):
        if k == STEPS:
            break
        images = torch.cat([r[k]["images"] for r in ranks])
        assert torch.equal(images, data.images[index])
        assert torch.equal(torch.cat([r[k]["labels"] for r in ranks]), data.labels[index])
        loss = net.loss(*views(single_cfg, data, images))
        loss.backward()
        for r in ranks:
            assert abs(r[k]["loss"].item() - loss.item()) < TOL
            for name, param in net.named_parameters():
                assert torch.allclose(r[k]["grads"][name], param.grad, atol=TOL, rtol=0), name
        net.zero_grad(set_to_none=True)
