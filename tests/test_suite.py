"""A result suite end to end on tiny runs: plan, train, evaluate at init and after training,
true ELBO, inspect, sweep, tables and figures; a second call does nothing again."""
from __future__ import annotations

import json
import math

import pytest
import yaml

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.evaluation.glossary import UNDEFINED_WHEN
from bayesncl_pyro.experiments.suite import job_row, load_suite, plan, run_suite
from bayesncl_pyro.experiments.suite_report import method_tables

from .conftest import ROOT, TINY


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    base = tmp_path_factory.mktemp("suite")
    spec = {
        "out_dir": str(base / "out"),
        "base": str(ROOT / "configs" / "scenes_quick.yaml"),
        "overrides": [o for o in TINY if not o.startswith("train.epochs")] + ["train.steps=4", "train.epochs=1"],
        "datasets": {"scenes": ["data.name=scenes"]},
        "methods": {"ncl": ["gate.prior=none", "model.nonneg=relu"],
                    "bayesncl_ste": ["gate.prior=bernoulli", "gate.estimator=ste"]},
        "seeds": [0, 1],
        "inspect": {"draws": 8, "seeds": [0]},
        "true_elbo": {"samples": 64, "seed": 0},
        "sweep": {"dataset": "scenes", "method": "bayesncl_ste", "overrides": ["train.steps=2"],
                  "grid": {"gate.kl_weight": [3e-5, 0.3], "gate.prior_prob": [0.5]}},
    }
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_plan_covers_methods_seeds_and_sweep(suite_file):
    jobs = plan(load_suite(suite_file))
    assert [j.name for j in jobs] == [
        # seed by seed, so that a suite stopped part-way leaves complete pairs
        "scenes/ncl/seed0", "scenes/bayesncl_ste/seed0", "scenes/ncl/seed1", "scenes/bayesncl_ste/seed1",
        # sweep points are named like ablation cells (one naming rule for every grid): "__" between axes
        "sweep/kl_weight=3.0e-05__prior_prob=0.5", "sweep/kl_weight=0.3__prior_prob=0.5"]
    assert jobs[1].cfg.train.seed == 0 and jobs[3].cfg.train.seed == 1
    assert [j.inspect for j in jobs[:4]] == [False, True, False, False]
    assert jobs[-1].cfg.gate.kl_weight == 0.3 and jobs[-1].cfg.train.steps == 2


def test_suite_runs_end_to_end_and_resumes(suite_file, monkeypatch):
    spec = load_suite(suite_file)
    results = run_suite(spec, progress=False)
    out = spec.out_dir
    for name in ("results.md", "results.json", "sc_gain.png", "sweep.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = {r["name"]: r for r in results["rows"]}
    gated = rows["scenes/bayesncl_ste/seed0"]
    for key in ("sc_init", "sc", "sc_gain", "linear_top1", "knn_top1", "true_neg_elbo", "surrogate_neg_elbo", "kl_share", "open_rate",
                "background_closed"):
        assert gated[key] is not None, key
    assert gated["sc_gain"] == pytest.approx(gated["sc"] - gated["sc_init"])
    assert rows["scenes/ncl/seed0"]["open_rate"] is None
    assert (out / "runs/scenes/bayesncl_ste/seed0/gates.nc").is_file()
    assert not (out / "runs/scenes/bayesncl_ste/seed1/gates.nc").exists()
    text = (out / "results.md").read_text()
    assert "| bayesncl_ste |" in text and "±" in text and "## Sweep" in text

    import bayesncl_pyro.training.loop as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train", refuse)
    again = run_suite(spec, progress=False)
    assert json.dumps(again["rows"], sort_keys=True) == json.dumps(results["rows"], sort_keys=True)


def test_bad_suite_files_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {a: [data.name=scenes]}\nmethods: {m: []}\nseeds: [-1]\n")
    with pytest.raises(ConfigError, match="seeds"):
        load_suite(bad)
    bad.write_text("datasets: {a: [data.name=scenes]}\nmethods: {m: [gate.prior=nope]}\n")
    with pytest.raises(ConfigError, match="gate.prior"):
        plan(load_suite(bad))
    bad.write_text("datasets: {a: []}\nmethods: {m: []}\nwhat: 1\n")
    with pytest.raises(ConfigError, match="what"):
        load_suite(bad)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs" / "suites").glob("*.yaml")))
def test_shipped_suites_plan(name):
    jobs = plan(load_suite(ROOT / "configs" / "suites" / f"{name}.yaml"))
    assert jobs and all(j.cfg.train.out_dir.startswith("runs/suites/") for j in jobs)


def test_reproduce_script_lists_a_suite():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), "cpu", "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "scenes/bayesncl_ste/seed0" in done.stdout and done.stdout.strip().endswith("33 runs")


def test_reproduce_names_a_missing_suite(capsys):
    from bayesncl_pyro.cli.reproduce import main as reproduce_main

    assert reproduce_main(["no_such_suite"]) == 2
    err = capsys.readouterr().err
    assert "no_such_suite" in err and "does not exist" in err and "cpu" in err


def test_prepare_exports_a_runs_backbone_for_model_weights(tmp_path_factory, tmp_path, monkeypatch):
    """``prepare: [{backbone_of: RUN, into: FILE}]`` writes the run's backbone as the state dict that
    ``model.weights`` loads: a network built from it has the run's backbone, bit for bit."""
    import torch

    from bayesncl_pyro import BayesNCL, load_config
    from bayesncl_pyro.experiments.suite import prepare_inputs
    from bayesncl_pyro.storage import checkpoints

    from .conftest import tiny_run

    run = tiny_run(tmp_path_factory, "encoder_run")
    monkeypatch.chdir(tmp_path)
    spec_path = tmp_path / "frozen.yaml"
    spec_path.write_text(yaml.safe_dump({
        "prepare": [{"backbone_of": str(run), "into": "encoders/tiny.pt"}],
        "datasets": {"scenes": ["data.name=scenes"]}, "methods": {"ncl": ["gate.prior=none"]}}))
    spec = load_suite(spec_path)
    prepare_inputs(spec)
    exported = tmp_path / "encoders" / "tiny.pt"
    stamp = exported.stat().st_mtime_ns
    prepare_inputs(spec)  # made once
    assert exported.stat().st_mtime_ns == stamp
    cfg = load_config(ROOT / "configs" / "scenes_quick.yaml",
                      [*TINY, f"model.weights={exported}", "model.freeze_backbone=true"])
    net = BayesNCL(cfg)
    saved = checkpoints.read(run / "last.pt")["modules"]["net"]
    for key, value in net.backbone.state_dict().items():
        assert torch.equal(value, saved[f"backbone.{key}"]), key
    spec_path.write_text(yaml.safe_dump({"prepare": [{"backbone_of": str(run)}],
                                         "datasets": {"scenes": []}, "methods": {"ncl": []}}))
    with pytest.raises(ConfigError, match="backbone_of, into"):
        load_suite(spec_path)


def test_tables_tell_a_metric_not_defined_from_a_run_not_yet_evaluated(suite_file, tmp_path):
    """eval.json stores an undefined metric as null: the row reads it as nan (not defined), a run
    without eval.json as None (not measured), and results.md shows them apart."""
    spec = load_suite(suite_file, out_dir=tmp_path)
    jobs = [j for j in plan(spec) if j.sweep_point is None]
    ncl = next(j for j in jobs if j.method == "ncl" and j.seed == 0)
    ncl.directory.mkdir(parents=True)
    metrics = {"semantic_consistency": None, "sparsity": 1.0}
    (ncl.directory / "eval.json").write_text(json.dumps(
        {"step": 4, "metrics": {"gated": metrics, "h": {"knn_top1": 30.0}}, "gates": None}))
    (ncl.directory / "eval_init.json").write_text(json.dumps(
        {"step": 0, "metrics": {"gated": {"semantic_consistency": 20.0}}}))
    rows = [job_row(j) for j in jobs]
    row = next(r for r in rows if r["name"] == ncl.name)
    assert math.isnan(row["sc"]) and math.isnan(row["sc_gain"]) and row["sc_init"] == 20.0
    assert row["open_rate"] is None and row["linear_top1"] is None

    text = method_tables(spec, rows)
    head, _, *lines = [line for line in text.splitlines() if line.startswith("|")]
    columns = [cell.strip() for cell in head.strip("|").split("|")]

    def cell(method: str, column: str) -> str:
        line = next(line for line in lines if line.startswith(f"| {method} |"))
        return [c.strip() for c in line.strip("|").split(" | ")][columns.index(column)]

    reason = f"not defined: {UNDEFINED_WHEN['semantic_consistency']}"
    assert cell("ncl", "SC (%)") == reason and cell("ncl", "SC gain (points)") == reason
    assert cell("ncl", "SC init (%)") == "20.00" and cell("ncl", "sparsity (%)") == "100.00"
    assert cell("ncl", "linear top-1 (%)") == "–"
    assert cell("bayesncl_ste", "SC (%)") == "–" and cell("bayesncl_ste", "SC gain (points)") == "–"


def test_reproduce_only_runs_the_matching_runs_and_reports_the_whole_suite(tmp_path, capsys):
    """``--only`` splits a suite between processes: each runs its share and the tables come from
    every finished run; a pattern that matches nothing names the runs there are."""
    from bayesncl_pyro.cli.reproduce import main as reproduce_main

    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "out"), "base": str(ROOT / "configs" / "scenes_quick.yaml"),
        "overrides": [o for o in TINY if not o.startswith("train.epochs")] + ["train.steps=3", "train.epochs=1"],
        "datasets": {"scenes": ["data.name=scenes"]},
        "methods": {"ncl": ["gate.prior=none"], "bayesncl_ste": ["gate.prior=bernoulli", "gate.estimator=ste"]},
        "seeds": [0, 1], "inspect": {"draws": 4, "seeds": [0]}}))
    assert reproduce_main([str(path), "--only", "*/ncl/seed1", "--no-progress"]) == 0
    runs = tmp_path / "out" / "runs" / "scenes"
    assert (runs / "ncl/seed1/eval.json").is_file()
    assert not (runs / "ncl/seed0").exists() and not (runs / "bayesncl_ste").exists()
    assert reproduce_main([str(path), "--only", "scenes/bayesncl_ste/seed1", "--no-progress"]) == 0
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["rows"]}
    assert rows["scenes/ncl/seed1"]["sc"] is not None and rows["scenes/bayesncl_ste/seed1"]["sc"] is not None
    assert rows["scenes/ncl/seed0"]["sc"] is None
    (tmp_path / "out" / "results.json").unlink()
    assert reproduce_main([str(path), "--only", "*/ncl/*", "--report-only"]) == 0  # still the whole suite
    rows = {r["name"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["rows"]}
    assert rows["scenes/bayesncl_ste/seed1"]["sc"] is not None
    capsys.readouterr()
    assert reproduce_main([str(path), "--only", "*/simclr/*", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "'*/simclr/*' matches no run" in err and "scenes/bayesncl_ste/seed1" in err
    assert reproduce_main([str(path), "--only", "*/ncl/*", "--procedures", "running"]) == 2
    assert "--only cannot be combined with --procedures" in capsys.readouterr().err
