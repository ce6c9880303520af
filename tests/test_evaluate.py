"""Evaluation suite: the linear probe, the ground-truth factor check, and eval.json of tiny runs."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bayesncl_pyro.cli.evaluate import main as eval_main
from bayesncl_pyro.evaluation import metrics
from bayesncl_pyro.evaluation.evaluate import FEATURE_SETS, evaluate_run, format_markdown, markdown_table
from bayesncl_pyro.evaluation.factor_check import (
    DEAD,
    UNEXPLAINED,
    check_factors,
    correlation_ratio,
    gate_check,
    quantile_bins,
    scene_factor_codes,
)
from bayesncl_pyro.evaluation.glossary import UNDEFINED_WHEN
from bayesncl_pyro.evaluation.linear_probe import fit_linear_probe, probe_objective, topk_accuracy
from bayesncl_pyro.evaluation.trained_run import load_trained
from tests.conftest import tiny_run

METRIC_NAMES = {
    "semantic_consistency", "semantic_consistency_supported", "semantic_consistency_weighted",
    "semantic_entropy_sum", "semantic_entropy_mean", "semantic_entropy_frequency",
    "sparsity", "active_dims", "effective_rank", "orthogonality", "orthogonality_authors", "knn_top1",
    *(f"retrieval_p{k}" for k in (1, 5, 10)), *(f"retrieval_topdims_p{k}" for k in (1, 5, 10)),
    *(f"retrieval_globaldims_p{k}" for k in (1, 5, 10)),
}


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "gated")


@pytest.fixture(scope="module")
def gated_eval(gated_run):
    result, json_path, md_path = evaluate_run(gated_run, progress=False)
    return result, json_path, md_path


# ------------------------------------------------------------------ linear probe


def separable_data(n: int, dims: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points labelled by argmax of a random linear map, keeping only those with a clear margin."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(dims, classes, generator=gen)
    x = 3 * torch.randn(4 * n, dims, generator=gen) + 5.0
    scores = x @ w
    top2 = scores.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > 1.0
    return x[keep][:n], scores[keep][:n].argmax(dim=1)


def test_linear_probe_reaches_full_accuracy_on_linearly_separable_data():
    x, y = separable_data(900, 12, 4, seed=0)
    train_x, train_y, test_x, test_y = x[:600], y[:600], x[600:], y[600:]
    assert len(torch.unique(train_y)) == 4
    probe = fit_linear_probe(train_x, train_y, 4)
    assert topk_accuracy(probe.logits(train_x), train_y, 1) >= 99.5
    assert topk_accuracy(probe.logits(test_x), test_y, 1) >= 97.0


def test_linear_probe_stops_at_the_optimum_of_its_convex_objective():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(400, 6, generator=gen, dtype=torch.float64) * 2 + 1
    y = torch.randint(0, 3, (400,), generator=gen)
    x[:, 0] += y.double()  # some signal, not separable
    probe = fit_linear_probe(x, y, 3, weight_decay=1e-3)
    assert probe.converged
    weight = probe.weight.clone().requires_grad_(True)
    bias = probe.bias.clone().requires_grad_(True)
    standardised = (x - x.mean(0)) / x.std(0, unbiased=False)
    probe_objective(weight, bias, standardised, y, 1e-3).backward()
    assert weight.grad.abs().max() < 1e-5 and bias.grad.abs().max() < 1e-5


def test_topk_accuracy_matches_a_loop():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(50, 7, generator=gen)
    labels = torch.randint(0, 7, (50,), generator=gen)
    for k in (1, 3, 5, 10):
        hits = sum(int(labels[i]) in sorted(range(7), key=lambda c: -float(logits[i, c]))[:k] for i in range(50))
        assert topk_accuracy(logits, labels, k) == pytest.approx(100 * hits / 50)


# ------------------------------------------------------------------ factor check


def loop_correlation_ratio(column: np.ndarray, codes: np.ndarray, adjusted: bool) -> float:
    grand = column.mean()
    total = ((column - grand) ** 2).sum()
    groups = np.unique(codes)
    between = sum((codes == g).sum() * (column[codes == g].mean() - grand) ** 2 for g in groups)
    if adjusted:
        within = (total - between) / (len(column) - len(groups))
        between -= (len(groups) - 1) * within
    return between / total


def test_correlation_ratio_matches_a_loop():
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 5, (300,), generator=gen) * 7 - 3  # arbitrary code values
    x = torch.randn(300, 4, generator=gen)
    x[:, 1] += codes.double() / 5
    for adjusted in (False, True):
        scores = correlation_ratio(x, codes, adjusted=adjusted)
        for d in range(4):
            expected = loop_correlation_ratio(x[:, d].double().numpy(), codes.numpy(), adjusted)
            assert float(scores[d]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_correlation_ratio_is_one_for_a_function_of_the_factor_and_nan_for_a_constant():
    codes = torch.arange(200) % 4
    x = torch.stack([codes.double() ** 2, torch.zeros(200, dtype=torch.float64)], dim=1)
    scores = correlation_ratio(x, codes)
    assert float(scores[0]) == pytest.approx(1.0)
    assert math.isnan(float(scores[1]))


def test_quantile_bins_are_balanced_and_ordered():
    values = torch.rand(1000, generator=torch.Generator().manual_seed(4))
    codes = quantile_bins(values, 4)
    assert torch.bincount(codes).tolist() == [250] * 4
    for low, high in zip(range(3), range(1, 4)):
        assert values[codes == low].max() < values[codes == high].min()


def synthetic_scenes(n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    factors = {
        "background": torch.randint(0, 6, (n,), generator=gen),
        "color": torch.randint(0, 8, (n,), generator=gen),
        "x": 8 + 16 * torch.rand(n, generator=gen),
        "y": 8 + 16 * torch.rand(n, generator=gen),
        "scale": 0.4 + 0.4 * torch.rand(n, generator=gen),
        "rotation": 0.5 * torch.rand(n, generator=gen) - 0.25,
    }
    return labels, factors


def test_factor_check_labels_each_dimension_by_the_factor_that_drives_it():
    n = 3000
    labels, factors = synthetic_scenes(n, seed=5)
    noise = 0.1 * torch.rand(n, 7, generator=torch.Generator().manual_seed(6))
    activations = torch.stack([
        (labels == 3).float(),                      # fires for one class
        (factors["background"] == 0).float(),       # the shared sky
        (factors["x"] - 8) / 16,                    # horizontal position
        (factors["color"] == 4).float(),            # one colour
        torch.zeros(n),                             # never fires
        torch.rand(n, generator=torch.Generator().manual_seed(7)),  # unrelated to every factor
        (factors["scale"] - 0.4) * 2,               # object size
    ], dim=1)
    activations[:, [0, 1, 2, 3, 6]] += noise[:, [0, 1, 2, 3, 6]]
    codes = scene_factor_codes(labels, factors)
    assert set(codes) == {"class", "background", "color", "position", "scale", "rotation"}
    open_rate = torch.tensor([0.9, 0.1, 0.4, 0.6, 0.0, 0.3, 1.0])
    check = check_factors(activations, codes, open_rate)
    assert check.dim_labels == ["class", "background", "position", "color", DEAD, UNEXPLAINED, "scale"]
    assert check.background_closed_share == 1.0
    assert check.class_open_share == 1.0
    assert check.object_open_share == 0.75  # class, colour and scale open; position closed
    assert check.by_label["background"] == {"dims": 1.0, "mean_open_rate": pytest.approx(0.1), "share_kept_open": 0.0}
    ungated = check_factors(activations, codes, None)
    assert ungated.dim_labels == check.dim_labels
    assert math.isnan(ungated.background_closed_share) and math.isnan(ungated.object_open_share)
    assert "mean_open_rate" not in ungated.by_label["class"]


def test_gate_check_shares_count_dimensions_kept_open():
    table = gate_check(["background", "class", "background", "class", "class"],
                       torch.tensor([0.2, 0.7, 0.8, 0.4, 0.5]))
    assert table["background"]["share_kept_open"] == 0.5
    assert table["background"]["mean_open_rate"] == pytest.approx(0.5)
    assert table["class"]["share_kept_open"] == pytest.approx(2 / 3)
    assert table["class"]["dims"] == 3


def test_position_codes_form_a_grid_of_x_and_y_bins():
    labels, factors = synthetic_scenes(900, seed=8)
    position = scene_factor_codes(labels, factors)["position"]
    assert set(position.tolist()) == set(range(9))
    x_bin = position // 3
    for low, high in ((0, 1), (1, 2)):
        assert factors["x"][x_bin == low].max() < factors["x"][x_bin == high].min()


# ------------------------------------------------------------------ evaluation of runs


def reference_features(run_path: Path) -> dict[str, torch.Tensor]:
    """SPEC §6 features written out from the network's parts, not through BayesNCL.features."""
    run = load_trained(run_path, device="cpu")
    with torch.no_grad():
        x = run.eval_transform(run.test_set.images)
        h = run.net.backbone(x)
        z = run.net.nonneg(run.net.projector(h))
        out = {"h": h, "z": z, "labels": run.test_set.labels}
        logits = run.net.guide.gate_logits(h)
        if logits is not None:
            g = run.cfg.gate
            gate = (torch.sigmoid(logits / g.temperature) > g.threshold).float()
            out["gate"] = gate
            out["gated"] = F.normalize(z * gate, dim=1)
    return out


def test_eval_of_a_tiny_run_writes_every_key(gated_run, gated_eval):
    result, json_path, md_path = gated_eval
    assert json_path == gated_run / "eval.json" and md_path == gated_run / "eval.md"
    on_disk = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert on_disk == result
    for key in ("run", "step", "untrained", "dataset", "prior", "num_train", "num_test", "linear_probe",
                "online_probe_top1", "knn", "metrics", "gates", "factor_check"):
        assert key in result, key
    assert result["step"] == 4 and result["untrained"] is False
    assert set(result["metrics"]) == set(FEATURE_SETS)
    for name in FEATURE_SETS:
        assert set(result["metrics"][name]) == METRIC_NAMES
        m = result["metrics"][name]
        assert 0 <= m["sparsity"] <= 1 and 0 <= m["knn_top1"] <= 100
    probe = result["linear_probe"]
    assert 0 <= probe["top1"] <= probe["top5"] <= 100 and probe["recipe"]["optimizer"]
    assert set(result["gates"]) == {"open_rate", "mean_gate_prob", "dims_never_open", "dims_always_open"}
    check = result["factor_check"]
    assert len(check["dim_labels"]) == 16 and set(check["scores"]) == set(check["factor_names"])
    assert result["output_dims"] == 16
    text = md_path.read_text()
    for heading in ("## Downstream", "## Metrics on h, z and gated z", "## Dimensions", "## Gates",
                    "## Ground-truth factor check"):
        assert heading in text


def test_every_count_of_dimensions_says_what_it_is_taken_on_and_they_agree(gated_run, gated_eval):
    """dead (z), never open (gate), always open (gate) and never active (gated z), as the README's
    Glossary defines them, counted from the features directly; the factor check's "dead" is the same
    set as eval.md's dead dims; shares are shown in %."""
    result, _, md_path = gated_eval
    ref = reference_features(gated_run)
    dead = int((ref["z"] == 0).all(dim=0).sum())
    never_open = int((ref["gate"] == 0).all(dim=0).sum())
    always_open = int((ref["gate"] == 1).all(dim=0).sum())
    never_active = int((ref["gated"] == 0).all(dim=0).sum())
    text = md_path.read_text()
    for label, count in (("dead dims (z)", dead), ("dims never open (gate)", never_open),
                         ("dims always open (gate)", always_open), ("dims never active (gated z)", never_active)):
        assert f"| {label} | {count} |" in text, label
    labels = result["factor_check"]["dim_labels"]
    assert labels.count("dead") == dead
    if dead:
        assert f"| dead (z) | {dead} |" in text
    share = f"{100 * result['gates']['open_rate']:.2f}"
    assert f"| hard-gate open share (open_rate, %) | {share} |" in text
    assert "| mean q(gate = 1 | x) = mean posterior open share (mean_gate_prob, %) |".replace("| x", "\\| x") in text
    assert "L-BFGS iterations" not in text.split("## Downstream")[1].split("\n\n")[1]  # not among the % rows
    assert "| sparsity (%) |" in text and "| semantic_entropy_sum (nats) |" in text


def test_eval_md_says_not_defined_with_the_reason_for_a_null_and_a_dash_for_a_metric_never_measured(gated_eval):
    """eval.json stores an undefined metric as null; eval.md must not show it as if it were missing."""
    result = copy.deepcopy(gated_eval[0])
    result["metrics"]["gated"]["semantic_consistency"] = None
    result["metrics"]["z"].pop("semantic_consistency")
    result["factor_check"]["class_open_share"] = None
    text = format_markdown(result)
    row = next(line for line in text.splitlines() if line.startswith("| semantic_consistency (%) |"))
    cells = dict(zip(["metric", *FEATURE_SETS], (cell.strip() for cell in row.strip("|").split(" | "))))
    assert cells["gated"] == f"not defined: {UNDEFINED_WHEN['semantic_consistency']}"
    assert cells["z"] == "–"
    assert f"class dimensions it keeps open: not defined: {UNDEFINED_WHEN['class_open_share']};" in text


def test_eval_uses_the_hard_test_time_gate_of_spec_6(gated_run, gated_eval):
    result = gated_eval[0]
    ref = reference_features(gated_run)
    labels = ref["labels"]
    assert result["gates"]["open_rate"] == pytest.approx(float(ref["gate"].mean()), abs=1e-9)
    for name in ("gated", "z", "h"):
        assert result["metrics"][name]["sparsity"] == pytest.approx(metrics.sparsity(ref[name]), abs=1e-6)
        expected_sc = metrics.semantic_consistency(ref[name], labels)
        got = result["metrics"][name]["semantic_consistency"]
        assert (got is None and math.isnan(expected_sc)) or got == pytest.approx(expected_sc, abs=1e-4)


def test_eval_at_initialisation_writes_its_own_files(gated_run, gated_eval, capsys):
    assert eval_main([str(gated_run), "--init", "--no-progress", "--device", "cpu"]) == 0
    assert "eval_init.json" in capsys.readouterr().out
    init = json.loads((gated_run / "eval_init.json").read_text())
    assert init["untrained"] is True and init["step"] == 0
    assert (gated_run / "eval_init.md").read_text().count("at initialisation") == 1
    assert json.loads((gated_run / "eval.json").read_text()) == gated_eval[0]
    ref_untrained = load_trained(gated_run, untrained=True)
    ref_trained = load_trained(gated_run)
    moved = any(not torch.equal(a, b) for a, b in zip(ref_untrained.net.state_dict().values(),
                                                       ref_trained.net.state_dict().values()))
    assert moved


def test_an_ungated_run_evaluates_and_its_gated_features_are_normalised_z(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "ungated", "gate.prior=none")
    result, _, md_path = evaluate_run(run, device="cpu", progress=False)
    assert result["gates"] is None and result["prior"] == "none"
    by_label = result["factor_check"]["by_label"]
    assert by_label and all("mean_open_rate" not in entry for entry in by_label.values())
    # every metric normalises rows (or uses cosine), so normalize(z) scores as z does
    for name, value in result["metrics"]["z"].items():
        other = result["metrics"]["gated"][name]
        assert (value is None and other is None) or other == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert "## Gates" not in md_path.read_text()


def test_eval_of_a_missing_run_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert eval_main([str(tmp_path / "nothing"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "nothing" in err


def test_markdown_table_formats_missing_values_and_escapes_bars():
    text = markdown_table(["a", "b"], [["x|y", None], ["z", float("nan")], ["w", 0.5]])
    lines = text.strip().splitlines()
    assert lines[0] == "| a | b |" and lines[2] == "| x\\|y | – |"
    assert lines[3] == "| z | not defined |" and lines[4] == "| w | 0.50 |"
    # one precision for every number of a table; a tiny one is not rounded to zero
    lines = markdown_table(["a", "b", "c"], [["x", 12.345678, 3], ["y", 0.5, 3e-5]]).strip().splitlines()
    assert lines[2] == "| x | 12.35 | 3 |" and lines[3] == "| y | 0.50 | 3.0e-05 |"


class _RecordingBar:
    """Stands in for the progress bar: records what it was told."""

    bars: list["_RecordingBar"] = []

    def __init__(self, iterable=None, total=None, desc="", unit="it", disable=False, **kwargs):
        self.iterable, self.total, self.desc, self.unit, self.n = iterable, total, desc, unit, 0
        _RecordingBar.bars.append(self)

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, count=1):
        self.n += count


def test_the_feature_bar_counts_images_and_ends_at_its_total(gated_run, monkeypatch):
    from bayesncl_pyro.evaluation import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "progress_bar", _RecordingBar)
    _RecordingBar.bars = []
    run = load_trained(gated_run, device="cpu")
    test = evaluate_module.extract_split(run, run.test_set, "test features", progress=True)
    (bar,) = _RecordingBar.bars
    assert bar.unit == "img" and "test features" in bar.desc
    assert bar.total == len(run.test_set) == bar.n == test["z"].shape[0]
