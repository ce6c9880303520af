"""A linear probe that did not meet its tolerance is flagged wherever its top-1 is shown: eval.md,
the suite tables and the ablation tables; eval.json records how the probe was fitted."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bayesncl_pyro.evaluation.evaluate import evaluate_run, probe_convergence_line
from bayesncl_pyro.evaluation.linear_probe import WEIGHT_DECAYS
from bayesncl_pyro.experiments.ablation_report import markdown_report
from bayesncl_pyro.experiments.grid_file import TrueElboSettings
from bayesncl_pyro.experiments.suite_report import method_tables

from .conftest import tiny_run


def test_eval_json_records_how_the_probe_was_fitted(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "probe_record")
    result, json_path, md_path = evaluate_run(run, progress=False)
    probe = json.loads(Path(json_path).read_text())["linear_probe"]
    assert probe["converged"] is True and probe["grad_norm"] <= probe["tolerance"]
    assert probe["iterations"] >= 1 and probe["weight_decay"] in WEIGHT_DECAYS
    assert [v["weight_decay"] for v in probe["validation"]] == sorted(WEIGHT_DECAYS, reverse=True)
    assert probe["num_validation"] > 0 and "predictions" not in probe
    assert probe["recipe"]["weight_decay_grid"] == list(WEIGHT_DECAYS)
    assert "Linear probe: converged" in Path(md_path).read_text()


def probe(converged: bool) -> dict:
    return {"converged": converged, "iterations": 5000, "grad_norm": 3e-6, "tolerance": 1e-6, "weight_decay": 1e-4,
            "num_validation": 40, "validation": [{"weight_decay": 1e-4, "top1": 50.0}]}


def test_eval_md_line_says_when_the_probe_did_not_converge():
    assert probe_convergence_line(probe(True)).startswith("Linear probe: converged")
    line = probe_convergence_line(probe(False))
    assert "NOT converged" in line and "3.00e-06" in line and "1.00e-06" in line and "5000" in line
    old = probe_convergence_line({"converged": False, "iterations": 331})  # an eval.json of the old recipe
    assert "not converged" in old


def suite_row(method: str, seed: int, converged: bool | None) -> dict:
    return {"name": f"scenes/{method}/seed{seed}", "dataset": "scenes", "method": method, "seed": seed,
            "linear_top1": 40.0 + seed, "linear_converged": converged, "sc": 12.0, "sc_init": 10.0, "sc_gain": 2.0}


def test_suite_table_marks_linear_top1_of_a_method_with_an_unconverged_probe():
    spec = SimpleNamespace(datasets={"scenes": []}, methods={"ncl": [], "bayesncl_ste": []})
    rows = [suite_row("ncl", 0, True), suite_row("ncl", 1, True),
            suite_row("bayesncl_ste", 0, True), suite_row("bayesncl_ste", 1, False)]
    text = method_tables(spec, rows)
    ncl = next(line for line in text.splitlines() if line.startswith("| ncl |"))
    ste = next(line for line in text.splitlines() if line.startswith("| bayesncl_ste |"))
    assert "40.50 ± 0.71 |" in ncl and "†" not in ncl
    assert "40.50 ± 0.71 † |" in ste
    assert "not converged" in text and "scenes/bayesncl_ste/seed1" in text and "scenes/ncl/seed0" not in text
    # an eval.json without the flag is not taken as converged
    assert "†" in method_tables(spec, [suite_row("ncl", 0, None)])


def ablation_row(seed: int, converged: bool | None, top1: float | None) -> dict:
    return {"cell": f"prior=bernoulli__seed={seed}", "gate.prior": "bernoulli", "train.seed": seed,
            "status": "done", "note": "", "final_loss": 5.0, "surrogate_negative_elbo": None,
            "true_negative_elbo": None, "true_negative_elbo_stderr": None, "open_rate": 0.5,
            "semantic_consistency": 12.0, "linear_top1": top1, "linear_converged": converged}


def test_ablation_tables_mark_an_unconverged_probe_and_leave_unevaluated_cells_blank():
    spec = SimpleNamespace(grid={"gate.prior": ["bernoulli"], "train.seed": [0, 1]}, base=None, overrides=[],
                           true_elbo=TrueElboSettings())
    text = markdown_report(spec, [ablation_row(0, True, 41.0), ablation_row(1, False, 43.0)])
    cells = [line for line in text.splitlines() if line.startswith("| bernoulli | 0") or line.startswith("| bernoulli | 1")]
    assert cells[0].endswith("| 41.00 |") and cells[1].endswith("| 43.00 † |")
    assert "† linear probe not converged" in text and "prior=bernoulli__seed=1" in text.split("## Mean")[0]
    grouped = next(line for line in text.splitlines() if line.startswith("| bernoulli | 2 |"))
    assert grouped.endswith("| 42.00 ± 1.41 † |")
    mixed = markdown_report(spec, [ablation_row(0, True, 41.0), ablation_row(1, None, None)])
    assert [line for line in mixed.splitlines() if line.startswith("| bernoulli | 1")][0].endswith("| - |")
    plain = markdown_report(spec, [ablation_row(0, None, None)])  # no cell evaluated: no empty column
    assert "† linear probe not converged" not in plain and "linear top-1 (h, %)" not in plain
    assert "No cell was evaluated" in plain


def test_ablation_tables_say_why_a_number_is_not_defined_and_never_show_nan():
    spec = SimpleNamespace(grid={"gate.prior": ["bernoulli"], "train.seed": [0, 1]}, base=None, overrides=[],
                           true_elbo=TrueElboSettings())
    rows = [ablation_row(0, None, None), ablation_row(1, None, None)]
    rows[0]["semantic_consistency"] = float("nan")
    text = markdown_report(spec, rows)
    assert "nan" not in text.lower()
    assert "| not defined: no test image has an active dimension |" in text  # the cell of seed 0
    grouped = next(line for line in text.splitlines() if line.startswith("| bernoulli | 2 |"))
    assert "| 12.0000 (1 not defined) |" in grouped
    rows[1]["semantic_consistency"] = float("nan")
    grouped = next(line for line in markdown_report(spec, rows).splitlines() if line.startswith("| bernoulli | 2 |"))
    assert grouped.endswith("| not defined: no test image has an active dimension |")


@pytest.mark.parametrize("converged", [True, False])
def test_suite_row_reads_the_probe_flag_from_eval_json(tmp_path, converged):
    from bayesncl_pyro.experiments.suite import Job, job_row

    (tmp_path / "eval.json").write_text(json.dumps({"linear_probe": {"top1": 50.0, "converged": converged}}))
    job = Job("scenes/ncl/seed0", tmp_path, SimpleNamespace(gate=SimpleNamespace(prior="none")), "scenes", "ncl", 0)
    row = job_row(job)
    assert row["linear_top1"] == 50.0 and row["linear_converged"] is converged
