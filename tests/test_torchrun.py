"""The training command under torchrun: two gloo processes on loopback train one run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from .conftest import ROOT, TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_one_run(tmp_path):
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), "-m", "bayesncl_pyro.train", "--no-progress",
               "--config", str(ROOT / "configs/scenes_quick.yaml"), *TINY, "train.distributed=true",
               "data.batch_size=16", f"train.out_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    steps_per_epoch = 256 // (2 * 16)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 2 * steps_per_epoch + 1))
    assert all(r["loss"] == r["loss"] for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 * steps_per_epoch
    assert done.stdout.count("run directory:") == 1  # rank 0 alone reports
    state_keys = ("last.pt", "epoch_0002.pt", "config.yaml", "env.json")
    assert all((run / name).is_file() for name in state_keys)
