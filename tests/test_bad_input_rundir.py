"""Hostile run directories: links planted where a run writes, derived files from another
checkpoint step, damaged or endless inputs to the report, and signals at awkward moments.

Each case states what a careful user expects: no file outside the run directory is touched, a
stale result is never shown as current, a bad input is one ``error:`` line (or a marked part of
the page), and stopping a command stops everything it started.
"""
from __future__ import annotations

import os
import shutil

import pytest

from bayesncl_pyro.cli.train import main as train_main
from bayesncl_pyro.storage.atomic import atomic_write_text

from .conftest import ROOT, TINY, tiny_run

FRESH = ["--config", str(ROOT / "configs/scenes_quick.yaml"), "--no-progress", *TINY, "train.steps=2"]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and len(errors[0]) < 800, err
    return errors[0]


# --- links where a run writes -----------------------------------------------------------------

def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, capsys):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / ".lock")
    assert train_main([*FRESH, f"train.out_dir={run}"]) == 2
    line = _error(capsys)
    assert ".lock" in line and "symbolic link" in line and str(victim) in line
    assert victim.read_text() == "keep me\n"
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_lock_file_that_is_a_link_is_refused_on_resume(tmp_path_factory, tmp_path, capsys):
    run = tiny_run(tmp_path_factory, "linked_lock")
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    os.symlink(victim, run / ".lock")
    assert train_main(["--resume", str(run), "--no-progress", "train.steps=6"]) == 2
    assert "symbolic link" in _error(capsys)
    assert victim.read_text() == "keep me\n"


def test_a_dangling_metrics_link_in_a_fresh_run_is_not_followed(tmp_path, capsys):
    outside = tmp_path / "outside" / "written.jsonl"
    outside.parent.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / "metrics.jsonl")
    assert train_main([*FRESH, f"train.out_dir={run}"]) == 2
    line = _error(capsys)
    assert "metrics.jsonl" in line and "symbolic link" in line
    assert not outside.exists()


def test_a_metrics_link_on_resume_is_refused(tmp_path_factory, tmp_path, capsys):
    run = tiny_run(tmp_path_factory, "linked_log")
    victim = tmp_path / "log.jsonl"
    shutil.move(run / "metrics.jsonl", victim)
    before = victim.read_bytes()
    os.symlink(victim, run / "metrics.jsonl")
    assert train_main(["--resume", str(run), "--no-progress", "train.steps=6"]) == 2
    assert "metrics.jsonl" in _error(capsys)
    assert victim.read_bytes() == before


@pytest.mark.parametrize("name", ["config.yaml", "last.pt", "eval.json", "dims.json", "gates.nc",
                                  "gates_summary.csv", "sc_variants.json", "report.html"])
def test_an_atomic_write_never_replaces_or_follows_a_link(tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    os.symlink(victim, tmp_path / name)
    with pytest.raises(OSError, match="symbolic link"):
        atomic_write_text(tmp_path / name, "new\n")
    assert victim.read_text() == "keep me\n" and (tmp_path / name).is_symlink()
