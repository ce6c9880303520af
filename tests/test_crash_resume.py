"""Real training processes killed (SIGKILL), asked to stop (SIGTERM, two signals at once), run
out of disk, or racing for one run directory: every one ends with a loadable checkpoint or a
one-line error, and a resume ends bit-identical to an uninterrupted run with a gap-free log."""
from __future__ import annotations

import os
import random
import shutil
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
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "bayesncl_pyro.train", "--no-progress", *extra]


def _fresh(run: Path, *extra: str) -> list[str]:
    return _command("--config", str(ROOT / "configs/scenes_quick.yaml"), *ARGS, f"train.out_dir={run}", *extra)


def _start(run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_fresh(run, *extra), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def _start_resume(run: Path) -> subprocess.Popen:
    return subprocess.Popen(_command("--resume", str(run)), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _finish(proc: subprocess.Popen, code: int = 0, timeout: float = 300) -> str:
    """Wait for ``proc``; it must exit with ``code``. Returns its stderr."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == code, err
    return err


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
    _finish(_start(run))
    return run


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def test_sigkill_mid_epoch_then_resume_is_bit_identical(uninterrupted, tmp_path):
    """SIGKILL (the kernel also drops the lock), then two resumes side by side: of the run as it
    was left, and of a copy whose last.pt was damaged, which falls back to epoch_0001.pt."""
    run = tmp_path / "killed"
    proc = _start(run)
    _wait_for_lines(run, proc, 11)  # mid-epoch 2 (8 steps an epoch), past two checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 8 < checkpoints.read(run / "last.pt")["step"] < TOTAL_STEPS
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    data = bytearray((damaged / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (damaged / "last.pt").write_bytes(bytes(data))
    resumes = [_start_resume(run), _start_resume(damaged)]
    _finish(resumes[0])
    err = _finish(resumes[1])
    assert f"{damaged / 'last.pt'}" in err and f"continuing from {damaged / 'epoch_0001.pt'}" in err, err
    _assert_same_run(uninterrupted, run)
    _assert_same_run(uninterrupted, damaged)


def test_sigterm_saves_a_checkpoint_and_exits(uninterrupted, tmp_path):
    run = tmp_path / "terminated"
    proc = _start(run)
    _wait_for_lines(run, proc, 5)
    proc.send_signal(signal.SIGTERM)
    err = _finish(proc, 130, timeout=120)
    step = checkpoints.read(run / "last.pt")["step"]
    assert f"SIGTERM at step {step}" in err and step < TOTAL_STEPS
    _finish(_start_resume(run))
    _assert_same_run(uninterrupted, run)


def test_a_second_writer_is_refused_while_the_first_trains_on(uninterrupted, tmp_path):
    """While a run trains (held still with SIGSTOP, so the race is certain), a --resume and a
    fresh run into its directory exit 2 naming its process; the first then finishes unharmed."""
    run = tmp_path / "busy"
    first = _start(run)
    _wait_for_lines(run, first, 3)
    first.send_signal(signal.SIGSTOP)
    try:
        others = [_start_resume(run), _start(run)]
        for other in others:
            err = _finish(other, 2, timeout=120).strip().splitlines()
            assert len(err) == 1 and f"is in use: process {first.pid} on host" in err[0], err
    finally:
        first.send_signal(signal.SIGCONT)
    _finish(first)
    assert not (run / ".lock").exists()
    _assert_same_run(uninterrupted, run)


def test_two_signals_in_quick_succession_end_with_130_and_a_checkpoint(tmp_path):
    """SIGINT then SIGTERM (and SIGTERM twice) a random few milliseconds apart, while a
    checkpoint is written every step: exit code 130 and a checkpoint that reads back, always."""
    rng = random.Random(0)
    plans = [(signal.SIGINT, signal.SIGTERM, 0.0), (signal.SIGTERM, signal.SIGTERM, rng.uniform(0.001, 0.05)),
             (signal.SIGINT, signal.SIGINT, rng.uniform(0.05, 0.3))]
    procs = []
    for i, plan in enumerate(plans):
        run = tmp_path / f"run{i}"
        procs.append((run, plan, _start(run, "train.checkpoint_every=1", "train.epochs=50")))
    for run, (first, second, delay), proc in procs:
        _wait_for_lines(run, proc, 2 + rng.randrange(4))
        proc.send_signal(first)
        time.sleep(delay)
        proc.send_signal(second)
    for run, plan, proc in procs:
        err = _finish(proc, 130, timeout=120).strip().splitlines()
        assert err[-1].startswith(("stopped: ", "interrupted")), (plan, err)
        state = checkpoints.read(run / "last.pt")
        assert 0 < state["step"] < 50 * 8
        assert not list(run.glob(".*.tmp"))


def _on_a_full_disk(run: Path, keep: Path) -> list[str] | None:
    """The fresh-run command, run with ``run`` on a 160 KiB tmpfs (in a user and mount namespace,
    no privileges needed), its files copied to ``keep`` afterwards; None where namespaces are
    not available."""
    if shutil.which("unshare") is None:
        return None
    script = 'mount -t tmpfs -o size=160k tmpfs "$0" || exit 99; "$@"; rc=$?; cp -a "$0"/. "$KEEP"/; exit $rc'
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            'mount -t tmpfs -o size=16k tmpfs "$0"', str(run)], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(run),
            *_fresh(run / "run")]


def test_disk_full_before_the_first_checkpoint_then_resume_starts_again(uninterrupted, tmp_path):
    """No space for the first checkpoint: one line naming the file and the free space, exit 2;
    the documented --resume then starts the run again from step 0, saying so, and it ends
    bit-identical to an uninterrupted run."""
    mount, keep = tmp_path / "mnt", tmp_path / "kept"
    mount.mkdir()
    keep.mkdir()
    command = _on_a_full_disk(mount, keep)
    if command is None:  # no namespaces here: a file size limit is the same refusal from the kernel
        import resource

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (160 * 1024, 160 * 1024))

        done = subprocess.run(_fresh(keep / "run"), cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env=ENV, preexec_fn=limit)
        expected = "file size limit"
    else:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={**ENV, "KEEP": str(keep)})
        expected = "no space left on the device ("
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert err[0].startswith("error: cannot write") and "last.pt" in err[0] and expected in err[0], err
    run = keep / "run"
    assert not (run / "last.pt").exists() and (run / "metrics.jsonl").exists()
    err = _finish(_start_resume(run))
    assert "holds no checkpoint yet" in err and "starting it again from step 0" in err, err
    _assert_same_run(uninterrupted, run)
