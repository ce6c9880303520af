"""The training command under torchrun: two gloo processes on loopback train one run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def _nodes(tmp_path, per_node: list[list[str]], timeout: float = 240) -> list[subprocess.CompletedProcess]:
    """One torchrun node per entry of ``per_node`` (its overrides), one process each, on loopback."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    common = [*TINY, "train.distributed=true", "data.batch_size=16", f"train.out_dir={tmp_path / 'ddp'}"]
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(per_node)}", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=config-test", "-m",
         "bayesncl_pyro.train", "--no-progress", "--config", str(ROOT / "configs/scenes_quick.yaml"), *common, *mine],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for mine in per_node]
    done = []
    try:
        for node in nodes:
            out, err = node.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    return done


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def test_nodes_started_with_different_configs_are_refused(tmp_path):
    done = _nodes(tmp_path, [["optim.lr=0.4", "data.scenes.seed=0"], ["optim.lr=0.9", "data.scenes.seed=3"]])
    for node in done:
        assert node.returncode != 0, node.stderr[-3000:]
        lines = _error_lines(node)
        assert len(lines) == 1, node.stderr[-3000:]
        assert "optim.lr: 0.4 on rank 0, 0.9 on rank 1" in lines[0] or \
            "optim.lr: 0.9 on rank 0, 0.4 on rank 1" in lines[0], lines[0]
        assert "data.scenes.seed: 0 on rank" in lines[0] and "optim.lr" in lines[0]
    assert not (tmp_path / "ddp" / "config.yaml").exists()  # nothing recorded under one rank's config


def test_disarm_under_torchrun_is_a_config_error(tmp_path):
    done = _nodes(tmp_path, [["gate.estimator=disarm"], ["gate.estimator=disarm"]])
    for node in done:
        assert node.returncode != 0
        lines = _error_lines(node)
        assert len(lines) == 1 and "gate.estimator='disarm' has no pathwise gradient" in lines[0], node.stderr[-3000:]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers in /proc (Linux)")
def test_a_node_whose_peer_is_killed_mid_training_exits_with_one_line_naming_the_run(tmp_path):
    """A dead peer makes the other rank's next collective fail: it must exit soon, with one
    ``error:`` line saying how to resume the run, not hang or print a traceback."""
    run = tmp_path / "ddp"
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=peer-test", "-m", "bayesncl_pyro.train", "--no-progress",
               "--config", str(ROOT / "configs/scenes_quick.yaml"), *TINY, "train.distributed=true",
               "data.batch_size=16", "train.epochs=500", f"train.out_dir={run}"]
    nodes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 240
        log = run / "metrics.jsonl"
        while not (log.is_file() and log.read_text().strip()):  # training has started
            assert time.monotonic() < deadline and all(n.poll() is None for n in nodes), "training did not start"
            time.sleep(0.2)
        workers = {_rank(pid): (node, pid) for node in nodes for pid in _children(node.pid)}
        victim_node, victim = workers[1]
        survivor = workers[0][0]
        os.kill(victim, signal.SIGKILL)
        _, err = survivor.communicate(timeout=120)
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
            node.communicate()
    assert survivor.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    assert f"bayesncl-train --resume {run}" in lines[0] and "died or stopped answering" in lines[0], lines[0]
    assert "[rank0]: Traceback" not in err, err[-3000:]


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (torchrun's workers), from /proc."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _rank(pid: int) -> int:
    """The RANK a torchrun worker was started with."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(entry for entry in environ if entry.startswith(b"RANK=")).split(b"=", 1)[1])
