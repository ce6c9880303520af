"""A real training process killed mid-epoch (SIGKILL) or asked to stop (SIGTERM), then resumed,
ends bit-identical to an uninterrupted run, with a gap-free metrics log."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bayesncl_pyro.storage import checkpoints

from .conftest import ROOT, TINY

ARGS = [*TINY, "train.epochs=5", "train.checkpoint_every=3", "train.log_every=1", "gate.estimator=concrete"]
TOTAL_STEPS = 5 * (256 // 32)


def _command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "bayesncl_pyro.train", "--no-progress", *extra]


def _start(run: Path) -> subprocess.Popen:
    return subprocess.Popen(_command("--config", str(ROOT / "configs/scenes_quick.yaml"), *ARGS,
                                     f"train.out_dir={run}"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_lines(run: Path, proc: subprocess.Popen, lines: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    path = run / "metrics.jsonl"
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= lines:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("the run did not get far enough in time")


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state = checkpoints.read(run / "last.pt")
    return {f"{m}.{k}": v for m, sd in state["modules"].items() for k, v in sd.items()} | {
        "step": torch.tensor(state["step"])}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("crash") / "whole"
    proc = _start(run)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return run


def _resume(run: Path) -> None:
    done = subprocess.run(_command("--resume", str(run)), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def test_sigkill_mid_epoch_then_resume_is_bit_identical(uninterrupted, tmp_path):
    run = tmp_path / "killed"
    proc = _start(run)
    _wait_for_lines(run, proc, 11)  # mid-epoch 2 (8 steps an epoch), past two checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoints.read(run / "last.pt")["step"] < TOTAL_STEPS
    _resume(run)
    _assert_same_run(uninterrupted, run)


def test_sigterm_saves_a_checkpoint_and_exits(uninterrupted, tmp_path):
    run = tmp_path / "terminated"
    proc = _start(run)
    _wait_for_lines(run, proc, 5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = checkpoints.read(run / "last.pt")["step"]
    assert f"SIGTERM at step {step}" in err and step < TOTAL_STEPS
    _resume(run)
    _assert_same_run(uninterrupted, run)
