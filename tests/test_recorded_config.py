"""A grid cell or suite run counts as done only while the config its directory recorded is the
one now planned: a changed grid or suite is refused in one line naming the difference, before
anything trains; keys that change nothing a run computes are ignored."""
from __future__ import annotations

import pytest
import yaml

from bayesncl_pyro.cli import ablate
from bayesncl_pyro.config import flatten, load_config
from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.experiments import ablation
from bayesncl_pyro.experiments.suite import load_suite, plan, run_suite
from bayesncl_pyro.storage import run_directory

from .conftest import ROOT, TINY

BASE = ROOT / "configs" / "scenes_quick.yaml"
EVERY_CELL = [o for o in TINY if not o.startswith("train.epochs")] + ["train.steps=3", "train.epochs=1"]


def no_training(*args, **kwargs):
    raise AssertionError("a run was trained")


def recorded(directory) -> dict:
    return flatten(yaml.safe_load((directory / run_directory.CONFIG_FILE).read_text()))


@pytest.fixture
def one_cell_grid(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": str(BASE), "out_dir": str(tmp_path / "grid"), "overrides": EVERY_CELL,
                                    "grid": {"gate.estimator": ["soft"]}}))
    result = ablation.run_ablation(ablation.load_spec(path))
    assert result.ran == ["estimator=soft"] and result.rows[0]["status"] == "done"
    return path, tmp_path / "grid" / "estimator=soft"


@pytest.mark.parametrize("override,difference", [
    ("model.proj_dim=24", "model.proj_dim: 16 there, 24 now"),
    ("train.epochs=2", "train.epochs: 1 there, 2 now"),
    ("train.log_every=2", "train.log_every: 1 there, 2 now"),  # the metrics log (and kl_share) would differ
])
def test_a_changed_grid_is_refused_not_reported_as_finished(one_cell_grid, override, difference, monkeypatch, capsys):
    path, cell = one_cell_grid
    before = (cell / run_directory.CONFIG_FILE).read_text()
    monkeypatch.setattr("bayesncl_pyro.training.loop.train", no_training)
    spec = ablation.load_spec(path, overrides=[override])
    assert not ablation.is_finished(ablation.plan_cells(spec)[0])
    with pytest.raises(CheckpointError, match=f"{cell}.*{difference}"):
        ablation.run_ablation(spec)

    assert ablate.main([str(path), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and difference in err[0] and str(cell) in err[0]
    assert ablate.main([str(path), override, "--dry-run"]) == 0
    assert f"holds a run of another config: {difference}" in capsys.readouterr().out
    assert (cell / run_directory.CONFIG_FILE).read_text() == before


def test_a_grid_changed_only_in_where_runs_keep_files_is_still_finished(one_cell_grid, monkeypatch):
    path, cell = one_cell_grid
    monkeypatch.setattr("bayesncl_pyro.training.loop.train", no_training)
    again = ablation.run_ablation(ablation.load_spec(path, overrides=["train.keep=3", "data.download=true"]))
    assert again.ran == [] and again.skipped_finished == ["estimator=soft"]


def test_a_removed_cell_runs_again_with_the_new_config(one_cell_grid):
    path, cell = one_cell_grid
    for item in cell.iterdir():
        item.unlink()
    again = ablation.run_ablation(ablation.load_spec(path, overrides=["model.proj_dim=24"]))
    assert again.ran == ["estimator=soft"] and again.rows[0]["status"] == "done"
    assert recorded(cell)["model.proj_dim"] == 24


def test_a_key_the_recorded_config_lacks_counts_as_its_default(tmp_path):
    cfg = load_config(BASE, [*EVERY_CELL, f"train.out_dir={tmp_path}"])
    run_directory.write_config(tmp_path, cfg)
    tree = yaml.safe_load((tmp_path / run_directory.CONFIG_FILE).read_text())
    assert tree["model"].pop("proj_batchnorm") is True  # a run written before the key existed
    (tmp_path / run_directory.CONFIG_FILE).write_text(yaml.safe_dump(tree))
    assert run_directory.config_differences(tmp_path, cfg) == []
    cfg.model.proj_batchnorm = False
    assert run_directory.config_differences(tmp_path, cfg) == ["model.proj_batchnorm: True there, False now"]


def test_a_suite_whose_run_recorded_another_config_is_refused_before_any_job(tmp_path, monkeypatch):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "out"), "base": str(BASE), "overrides": EVERY_CELL,
        "datasets": {"scenes": ["data.name=scenes"]},
        "methods": {"ncl": ["gate.prior=none"], "ste": ["gate.prior=bernoulli", "gate.estimator=ste"]},
        "seeds": [0]}))
    spec = load_suite(path)
    jobs = plan(spec)
    last = jobs[-1]
    older = load_config(BASE, [*EVERY_CELL, "gate.prior=bernoulli", "gate.estimator=ste", "optim.lr=0.9",
                               f"train.out_dir={last.directory}"])
    run_directory.write_config(last.directory, older)
    (last.directory / run_directory.SUMMARY_FILE).write_text("{}")
    monkeypatch.setattr("bayesncl_pyro.training.loop.train", no_training)
    with pytest.raises(CheckpointError, match=r"scenes/ste/seed0 holds a run of another config \(optim\.lr: 0\.9 "
                                              r"there, 0\.4 now\)"):
        run_suite(spec, progress=False)
    assert not jobs[0].directory.exists()  # refused before the first job, not after it
