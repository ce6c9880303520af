"""What a run directory guarantees, beyond refusing bad input (``test_bad_input.py``) and
surviving real processes being killed (``test_crash_resume.py``): a finished run is left alone,
a skipped step changes no parameter or buffer, a checkpoint is written only when it is finite,
temporary files of interrupted writes are cleared, ``~`` is expanded, one writer at a time, and
signals only ever stop the loop at a step boundary."""
from __future__ import annotations

import math

import errno
import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import pyro
import pytest
import torch

from bayesncl_pyro.cli.report import main as report_main
from bayesncl_pyro.cli.train import main as train_main
from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import NonFiniteStep, RunWarning, StorageError
from bayesncl_pyro.config.validation import MAX_SEED
from bayesncl_pyro.data.augment import BatchAugment
from bayesncl_pyro.storage import checkpoints
from bayesncl_pyro.storage.atomic import atomic_write_text, remove_stale_temporaries, storage_error
from bayesncl_pyro.storage.metrics_log import read_metrics
from bayesncl_pyro.storage.run_directory import lock_run
from bayesncl_pyro.training.distributed import DistributedContext
from bayesncl_pyro.training.loop import train, train_unless_finished
from bayesncl_pyro.training.session import build
from bayesncl_pyro.training.signals import stop_requests
from bayesncl_pyro.training.step import train_step

from .conftest import ROOT, TINY, tiny_run


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


def test_resuming_a_finished_run_changes_nothing(tmp_path_factory, capsys):
    run = tiny_run(tmp_path_factory, "finished")
    before = _files(run)
    assert train_main(["--resume", str(run), "--no-progress"]) == 0
    captured = capsys.readouterr()
    finished, hint = _warnings(captured.err)
    assert finished == f"warning: {run} already finished at step 4 (of 4); nothing was changed"
    # and what to pass to train it longer: more epochs, the step cap lifted
    assert hint.startswith(f"warning: to train {run} longer") and "train.epochs=4 train.steps=0" in hint
    assert "final loss (negative ELBO, nats per row)" in captured.out
    assert "-" not in captured.out.splitlines()[0].split()[-1]
    assert _files(run) == before


def test_a_finished_run_without_its_summary_gets_one_with_its_last_loss(tmp_path_factory, capsys):
    run = tiny_run(tmp_path_factory, "no_summary")
    (run / "summary.json").unlink()
    assert train_main(["--resume", str(run), "--no-progress"]) == 0
    assert "has no summary.json; writing it" in capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_loss"] == read_metrics(run)[-1]["loss"] and summary["steps"] == 4


def test_stale_temporary_files_are_removed_when_a_run_is_opened(tmp_path_factory, capsys):
    run = tiny_run(tmp_path_factory, "stale")
    (run / ".last.pt.ab12cd_9.tmp").write_bytes(b"half a checkpoint")
    (run / ".summary.json.zzzzzzzz.tmp").write_text("{")
    (run / "notes.tmp").write_text("the user's own")
    assert train_main(["--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "removed 2 temporary file(s) of an interrupted write" in err
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp")) == ["notes.tmp"]


def test_a_fresh_run_may_go_into_a_directory_holding_only_other_files(tmp_path, capsys):
    run = tmp_path / "mostly_empty"
    run.mkdir()
    (run / "README").write_text("runs of the week")
    (run / ".config.yaml.a1b2c3d4.tmp").write_text("half")
    assert train_main(["--config", str(ROOT / "configs/scenes_quick.yaml"), "--no-progress", *TINY,
                       "train.steps=1", f"train.out_dir={run}"]) == 0
    assert (run / "README").exists() and not (run / ".config.yaml.a1b2c3d4.tmp").exists()
    assert not (run / ".lock").exists()


def test_tilde_is_expanded_in_path_options_and_path_keys(tmp_path_factory, monkeypatch, capsys):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    shutil.copytree(tiny_run(tmp_path_factory, "source"), home / "run")
    assert train_main(["--resume", "~/run", "--no-progress"]) == 0
    assert report_main(["~/run", "--out", "~/page.html"]) == 0
    assert (home / "page.html").is_file()
    cfg = load_config(None, ["train.out_dir=~/new", "data.root=~/data", "data.cache_dir=~/cache"])
    assert (cfg.train.out_dir, cfg.data.root, cfg.data.cache_dir) == (
        str(home / "new"), str(home / "data"), str(home / "cache"))


def test_a_skipped_step_changes_no_parameter_and_no_buffer(tiny_config):
    """The forward pass of a NaN batch in train mode would move the BatchNorm statistics and
    counters; a skipped step puts them back."""
    s = build(tiny_config())
    s.net.train()
    images, labels = s.train_set.images[:32], s.train_set.labels[:32]
    train_step(s, images, labels)  # a real step first, so that optimizer state exists
    before = {f"{m}.{k}": v.clone() for m, module in s.modules().items() for k, v in module.state_dict().items()}
    original = s.augment.forward
    s.augment.forward = lambda x, generator=None: original(x, generator) * float("nan")
    with pytest.raises(NonFiniteStep), pyro.validation_enabled(False):
        train_step(s, images, labels)
    after = {f"{m}.{k}": v for m, module in s.modules().items() for k, v in module.state_dict().items()}
    assert any("running_var" in k for k in after) and any("num_batches_tracked" in k for k in after)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def test_a_float16_overflow_is_a_scaler_skip_that_changes_no_parameter_and_no_buffer(tiny_config):
    """An overflow in the scaled gradients (a scale far too large for the gradient): the scaler
    skips the optimizer step and halves its scale; the step is not an error, its record says so,
    and weights and BatchNorm buffers are as before. The next step, at a sane scale, moves them."""
    s = build(tiny_config("train.precision=16"))
    s.net.train()
    images, labels = s.train_set.images[:32], s.train_set.labels[:32]
    # the default initial scale (2**16) overflows at first; the scaler halves it until a step is taken
    scales = []
    for _ in range(40):
        if not train_step(s, images, labels).scaler_skipped:
            break
        scales.append(s.scaler.get_scale())
    else:
        pytest.fail("the scaler skipped 40 steps in a row")
    assert all(later == earlier / 2 for earlier, later in zip(scales, scales[1:]))
    s.scaler.update(new_scale=2.0 ** 127)  # any gradient times this overflows float32
    before = {f"{m}.{k}": v.clone() for m, module in s.modules().items() for k, v in module.state_dict().items()}
    record = train_step(s, images, labels)
    assert record.scaler_skipped == 1.0 and math.isfinite(record.loss)
    assert s.scaler.get_scale() == 2.0 ** 126
    after = {f"{m}.{k}": v for m, module in s.modules().items() for k, v in module.state_dict().items()}
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert "scaler_skipped" in record.to_dict()
    s.scaler.update(new_scale=2.0 ** 10)
    assert train_step(s, images, labels).scaler_skipped == 0.0
    moved = {f"{m}.{k}": v for m, module in s.modules().items() for k, v in module.state_dict().items()}
    assert any(not torch.equal(before[k], moved[k]) for k in before if "running_mean" in k)
    assert any(not torch.equal(before[k], moved[k]) for k in before if k.endswith("weight"))


def test_after_a_skipped_step_every_checkpoint_is_finite(tiny_config, monkeypatch):
    """One NaN batch, then good ones: training goes on, and every checkpoint written after the
    skip holds finite parameters and buffers (it used to hold NaN BatchNorm statistics)."""
    original = BatchAugment.forward
    calls = {"n": 0}

    def one_bad_batch(self, images, generator=None):
        calls["n"] += 1
        out = original(self, images, generator)
        return out * float("nan") if calls["n"] in (5, 6) else out  # both views of step 3

    monkeypatch.setattr(BatchAugment, "forward", one_bad_batch)
    cfg = tiny_config("train.steps=5", "train.checkpoint_every=1")
    with pytest.warns(RunWarning, match="step 3 skipped"):
        train(cfg, progress=False)
    state = checkpoints.read(Path(cfg.train.out_dir) / "last.pt")
    assert state["step"] == 5
    assert checkpoints.first_non_finite(state["modules"]) is None


def test_a_non_finite_weight_is_never_checkpointed(tmp_path, monkeypatch, capsys):
    """A step with a finite loss and gradient that still leaves an infinite weight: the run
    stops naming it and the last good checkpoint, which stays as it was."""
    from bayesncl_pyro.training import step as step_module

    original = step_module._step
    calls = {"n": 0}

    def overflowing(s, images, labels):
        record = original(s, images, labels)
        calls["n"] += 1
        if calls["n"] == 4:
            with torch.no_grad():
                next(s.net.parameters()).fill_(float("inf"))
        return record

    monkeypatch.setattr(step_module, "_step", overflowing)
    run = tmp_path / "overflow"
    code = train_main(["--config", str(ROOT / "configs/scenes_quick.yaml"), "--no-progress", *TINY,
                       "train.steps=6", "train.checkpoint_every=2", f"train.out_dir={run}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "step 4: net." in err[0] and "NaN or infinite" in err[0] and f"{run / 'last.pt'} (step 2)" in err[0]
    assert checkpoints.read(run / "last.pt")["step"] == 2


def test_grid_cells_fall_back_to_the_newest_intact_checkpoint(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "cell", "train.steps=8")
    (run / "summary.json").unlink()
    (run / "last.pt").write_bytes(b"")
    cfg = load_config(ROOT / "configs/scenes_quick.yaml", [*TINY, "train.steps=8", f"train.out_dir={run}"])
    with pytest.warns(RunWarning) as caught:
        train_unless_finished(cfg)
    notes = [str(w.message) for w in caught]
    assert any("last.pt is empty (0 bytes); continuing from" in n and "epoch_0001.pt" in n for n in notes), notes
    assert (run / "summary.json").is_file()


def test_one_lock_per_run_directory(tmp_path):
    run = tmp_path / "run"
    lock = lock_run(run)
    with pytest.raises(StorageError, match=f"is in use: process {os.getpid()} on host"):
        lock_run(run)
    lock.release()
    assert not (run / ".lock").exists()
    with lock_run(run):
        pass


def test_a_file_system_without_locks_trains_on_with_a_warning(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(RunWarning, match="does not support locks"):
        lock = lock_run(tmp_path / "run")
    lock.release()


def test_storage_errors_name_the_path_and_the_free_space(tmp_path):
    target = tmp_path / "run" / "last.pt"
    full = storage_error(OSError(errno.ENOSPC, "No space left on device"), target)
    assert str(full).startswith(f"cannot write {target}: no space left on the device (") and "free on" in str(full)
    assert isinstance(full, OSError)  # code that falls back on an OS failure (a read-only data tree) still does
    assert "read-only" in str(storage_error(OSError(errno.EROFS, "Read-only file system"), target))
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="file is a file, not a directory"):
        atomic_write_text(tmp_path / "file" / "deeper" / "config.yaml", "a: 1")
    (tmp_path / ".x.yaml.abcdefgh.tmp").write_text("")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".x.yaml.abcdefgh.tmp"]


def test_signals_are_requests_inside_the_loop_and_stop_at_once_outside():
    with stop_requests() as stop:
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.names == ["SIGTERM", "SIGINT"]  # recorded, nothing raised
    with pytest.raises(KeyboardInterrupt):
        with stop_requests():
            os.kill(os.getpid(), signal.SIGTERM)
    with stop_requests() as stop:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # already stopping: recorded only
        assert stop.names == ["SIGINT", "SIGINT"]


def test_every_derived_seed_stays_in_range():
    pyro.set_rng_seed(MAX_SEED)
    for rank in range(8):
        seed = DistributedContext(rank=rank, world_size=8).seed(MAX_SEED, step=10**6)
        assert 0 <= seed <= MAX_SEED
        pyro.set_rng_seed(seed)
    assert DistributedContext(rank=1, world_size=2).seed(5, step=2) == 5 + 1_000_003 + 2


def test_from_run_refuses_a_non_finite_network_and_names_the_intact_checkpoint(tmp_path_factory):
    from bayesncl_pyro import BayesNCL, CheckpointError

    run = tiny_run(tmp_path_factory, "from_run", "train.steps=8")  # last.pt and epoch_0001.pt
    state = checkpoints.read(run / "last.pt")
    name = next(k for k in state["modules"]["net"] if k.endswith("running_mean"))
    state["modules"]["net"][name][0] = float("inf")
    (run / "last.pt").write_bytes(checkpoints.encode(state))
    with pytest.raises(CheckpointError, match=f"NaN or infinite values \\(net.{name}\\)"):
        BayesNCL.from_run(run)
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="newest intact checkpoint is .*epoch_0001.pt \\(step 8\\)"):
        BayesNCL.from_run(run)
    assert BayesNCL.from_run(run, checkpoint="epoch_0001.pt").training is False
