"""The ablation runner: a small grid runs, writes its csv/md/png, skips invalid cells with the
reason, skips finished cells on a re-run, and completes a missing cell in a subprocess."""
from __future__ import annotations

import csv
import math
import os
import re
import shutil
import tomllib

import pytest
import yaml

from bayesncl_pyro.cli import ablate
from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import ConfigError, StorageError
from bayesncl_pyro.experiments import ablation
from bayesncl_pyro.experiments import cells
from bayesncl_pyro.experiments.cells import measure_true_elbo
from bayesncl_pyro.experiments.grid_file import TrueElboSettings
from bayesncl_pyro.experiments.stats import mean_sd

from .conftest import ROOT, TINY

STEPS = 6




def write_spec(tmp_path, grid, **extra) -> tuple:
    tree = {"base": str(ROOT / "configs" / "scenes_quick.yaml"), "out_dir": str(tmp_path / "grid"),
            "overrides": [*TINY, f"train.steps={STEPS}", "train.epochs=1"], "grid": grid, **extra}
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path, ablation.load_spec(path)


GRID = {"gate.prior": ["bernoulli", "none"], "gate.estimator": ["soft"], "train.seed": [0, 1]}


def test_grid_runs_reports_and_resumes(tmp_path, monkeypatch):
    spec_path, spec = write_spec(tmp_path, GRID)
    result = ablation.run_ablation(spec)

    assert len(result.rows) == 4 and len(result.ran) == 2 and result.skipped_finished == []
    by_status = {}
    for row in result.rows:
        by_status.setdefault(row["status"], []).append(row)
    assert {r["gate.prior"] for r in by_status["done"]} == {"bernoulli"}
    assert all(r["gate.prior"] == "none" and "gate.estimator" in r["note"] for r in by_status["skipped"])
    for row in by_status["done"]:
        assert row["steps"] == STEPS
        for key in ("final_loss", "true_negative_elbo", "true_negative_elbo_stderr", "open_rate", "semantic_consistency"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), key

    with open(result.csv_path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["status"] for r in table] == [r["status"] for r in result.rows]
    assert float(table[0]["true_negative_elbo"]) == pytest.approx(result.rows[0]["true_negative_elbo"])
    report = result.md_path.read_text()
    assert "Mean ± sd over train.seed" in report
    mean, sd, _ = mean_sd([r["final_loss"] for r in by_status["done"]])
    assert f"{mean:.4f} ± {sd:.4f}" in report
    assert "Skipped and failed cells" in report and "none" in report
    assert result.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the true ELBO is on a fixed held-out batch with a fixed seed: recomputing it agrees
    done = next(c for c in ablation.plan_cells(spec) if c.skip_reason is None)
    recomputed = measure_true_elbo(load_config(spec.base, done.overrides), 64, 0)
    assert recomputed["negative_elbo"] == pytest.approx(result.rows[0]["true_negative_elbo"], rel=1e-6)
    assert recomputed["samples"] >= 64 and recomputed["seed"] == 0

    # a re-run trains nothing
    stamps = {c.name: (c.directory / "summary.json").stat().st_mtime_ns
              for c in ablation.plan_cells(spec) if c.skip_reason is None}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("bayesncl_pyro.training.loop.train", no_training)
    again = ablation.run_ablation(spec)
    assert again.ran == [] and sorted(again.skipped_finished) == sorted(stamps)
    assert {c.name: (c.directory / "summary.json").stat().st_mtime_ns
            for c in ablation.plan_cells(spec) if c.skip_reason is None} == stamps
    monkeypatch.undo()

    # a missing cell is run again, here by a subprocess through the command line
    missing = next(c for c in ablation.plan_cells(spec) if c.skip_reason is None)
    shutil.rmtree(missing.directory)
    assert ablate.main([str(spec_path), "--jobs", "2"]) == 0
    assert ablation.is_finished(missing)
    assert (missing.directory / ablation.LOG_FILE).is_file()


def test_invalid_cells_are_planned_as_skipped(tmp_path):
    _, spec = write_spec(tmp_path, {"gate.prior": ["hard_concrete", "bernoulli"], "gate.estimator": ["score"]})
    cells = ablation.plan_cells(spec)
    assert [c.name for c in cells] == ["prior=hard_concrete__estimator=score", "prior=bernoulli__estimator=score"]
    assert "gate.estimator='score'" in cells[0].skip_reason and cells[1].skip_reason is None
    assert cells[1].directory == tmp_path / "grid" / cells[1].name
    assert f"train.out_dir={cells[1].directory}" in cells[1].overrides


@pytest.mark.parametrize("grid,extra,message", [
    ({"gate.prior": []}, {}, "grid.gate.prior"),
    ({"gate.prior": "bernoulli"}, {}, "grid.gate.prior"),
    ({"train.out_dir": ["a", "b"]}, {}, "train.out_dir"),
    ({"gate.prior": ["bernoulli"]}, {"true_elbo": {"samples": 16}}, "true_elbo.samples"),
    ({"gate.prior": ["bernoulli"]}, {"base": "missing.yaml"}, "base"),
    ({"gate.prior": ["bernoulli"]}, {"seeds": [0]}, "unknown key 'seeds'"),
    ({"gate.priors": ["bernoulli"]}, {}, "grid axis gate.priors: unknown config key"),
])
def test_bad_ablation_files_are_rejected(tmp_path, grid, extra, message):
    path = tmp_path / "bad.yaml"
    tree = {"out_dir": str(tmp_path / "grid"), "grid": grid, **extra}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        ablation.load_spec(path)


def test_the_example_ablation_file_plans_and_the_command_is_declared():
    spec = ablation.load_spec(ROOT / "configs" / "ablations" / "quick.yaml")
    cells = ablation.plan_cells(spec)
    assert len(cells) == math.prod(len(v) for v in spec.grid.values())
    runnable = [c for c in cells if c.skip_reason is None]
    assert {c.axes["gate.prior"] for c in runnable} == set(spec.grid["gate.prior"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bayesncl-ablate"] == "bayesncl_pyro.cli.ablate:main"


def test_the_command_applies_overrides_to_every_cell_and_reports_each_one(tmp_path, capsys):
    """``bayesncl-ablate FILE key=value ...``: the overrides reach every cell (after the file's own),
    ``--dry-run`` shows each cell's directory, and each finished cell prints one line."""
    spec_path, _ = write_spec(tmp_path, {"gate.prior": ["bernoulli"], "train.seed": [0, 1]})
    overrides = ["train.steps=2", "gate.kl_weight=0.002"]
    names = ["prior=bernoulli__seed=0", "prior=bernoulli__seed=1"]

    assert ablate.main([str(spec_path), *overrides, "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{n}: to run -> {tmp_path / 'grid' / n}" for n in names]

    assert ablate.main([str(spec_path), *overrides]) == 0
    out = capsys.readouterr().out.splitlines()
    number = r"-?\d+\.\d+"
    for index, (name, line) in enumerate(zip(names, out), 1):
        assert re.fullmatch(rf"\[{index}/2 cells\] {name}: done in \d+ s; loss {number}, true −ELBO {number}, "
                            rf"hard-gate open share {number} %, SC {number} %, online probe {number} %", line), line
        cfg = load_config(tmp_path / "grid" / name / "config.yaml")
        assert cfg.train.steps == 2 and cfg.gate.kl_weight == 0.002
    assert out[2].startswith("ran 2 cell(s), 0 already finished")


def test_a_cell_line_says_not_defined_with_the_reason_for_nan_and_a_dash_for_a_number_not_measured():
    row = {"cell": "c", "status": "done", "final_loss": 5.0, "true_negative_elbo": None, "open_rate": 0.5,
           "semantic_consistency": math.nan, "probe_top1": 40.0}
    line = ablate.cell_line(row, 3.0)
    assert "nan" not in line and "true −ELBO –," in line and "hard-gate open share 50.0 %" in line
    assert "SC not defined: no test image has an active dimension," in line


def test_the_true_elbo_is_measured_again_when_its_samples_or_seed_change(tmp_path, monkeypatch):
    """true_elbo.json records its samples and seed; a file measured otherwise, or without them
    (an earlier version), is not shown as the grid's current number, nor does its cell count as finished."""
    calls = []

    def measure(cfg, samples, seed):
        calls.append((samples, seed))
        return {"negative_elbo": 1.0, "samples": samples, "seed": seed}

    monkeypatch.setattr(cells, "measure_true_elbo", measure)
    cfg = load_config(None, [f"train.out_dir={tmp_path}"])
    for samples, seed in [(64, 0), (64, 0), (128, 0), (128, 1), (128, 1)]:
        cells.ensure_true_elbo(cfg, samples, seed)
    assert calls == [(64, 0), (128, 0), (128, 1)]
    (tmp_path / cells.TRUE_ELBO_FILE).write_text('{"negative_elbo": 1.0, "samples": 128}')
    cells.ensure_true_elbo(cfg, 128, 1)
    assert calls[-1] == (128, 1) and len(calls) == 4

    (tmp_path / "summary.json").write_text("{}")
    cell = ablation.Cell("c", {}, tmp_path, [], true_elbo=TrueElboSettings(128, 1))
    assert ablation.is_finished(cell)
    cell.true_elbo = TrueElboSettings(128, 2)
    assert not ablation.is_finished(cell)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_a_cell_log_is_never_written_into_another_file(tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    log = tmp_path / "cell" / ablation.LOG_FILE
    log.parent.mkdir()
    {"symlink": lambda: os.symlink(victim, log), "hardlink": lambda: os.link(victim, log),
     "fifo": lambda: os.mkfifo(log)}[kind]()
    with pytest.raises(StorageError, match=str(log)):
        ablation._open_log(log)  # a FIFO would block an open without O_NONBLOCK
    assert victim.read_text() == "keep me\n"


def test_a_cell_log_left_by_an_earlier_run_is_emptied(tmp_path):
    log = tmp_path / ablation.LOG_FILE
    log.write_text("old output\n")
    with ablation._open_log(log) as out:
        out.write("new\n")
    assert log.read_text() == "new\n"
