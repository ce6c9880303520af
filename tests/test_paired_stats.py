"""Paired differences between methods (runs pair by seed): Student's t against scipy, the
interval against scipy's paired t-test, and the suite files' ``comparisons`` section."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.experiments.stats import paired_difference, t_cdf, t_quantile
from bayesncl_pyro.experiments.suite import collect, load_suite
from bayesncl_pyro.experiments.suite_report import comparison_tables

from .conftest import ROOT

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 29, 60])
def test_t_distribution_matches_scipy(df):
    for t in (-40.0, -3.0, -0.5, 0.0, 0.2, 1.0, 2.5, 12.0):
        assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-13)
    for p in (0.025, 0.5, 0.9, 0.975, 0.995, 0.9995):
        assert t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("a,b", [
    ([1.0, 2.0, 3.5, 4.0, 5.0], [0.5, 2.2, 2.0, 3.0, 4.1]),
    ([10.2, 11.0, 9.7], [8.0, 8.5, 9.9]),
    ([0.1, -0.4, 0.3, 0.2, 0.0, 0.7, -0.2, 0.15, 0.05, 0.4], [0.0] * 10),
])
def test_paired_interval_matches_scipys_paired_t_test(a, b):
    difference = paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    reference = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert difference.pairs == len(a)
    assert difference.mean == pytest.approx(sum(x - y for x, y in zip(a, b)) / len(a), abs=1e-12)
    assert difference.lower == pytest.approx(reference.low, abs=1e-10)
    assert difference.upper == pytest.approx(reference.high, abs=1e-10)
    assert difference.excludes_zero == (reference.low > 0 or reference.high < 0)


def test_pairs_are_the_seeds_both_have_with_finite_values():
    method = {0: 1.0, 1: 2.0, 2: None, 3: 4.0, 5: 7.0}
    against = {0: 0.0, 1: 1.5, 2: 1.0, 3: float("nan"), 4: 2.0, 5: 6.0}
    difference = paired_difference(method, against)
    assert difference.seeds == [0, 1, 5] and difference.pairs == 3
    single = paired_difference({0: 1.0}, {0: 0.0, 1: 1.0})
    assert single.pairs == 1 and single.mean == 1.0 and math.isnan(single.lower) and not single.excludes_zero
    assert paired_difference({}, {}).pairs == 0


# ----------------------------------------------------------------------------- suite files

def suite_tree(tmp_path: Path, **extra) -> dict:
    return {"out_dir": str(tmp_path / "out"), "base": str(ROOT / "configs" / "scenes_quick.yaml"),
            "datasets": {"scenes": ["data.name=scenes"]},
            "methods": {"ncl": ["gate.prior=none"], "ste": ["gate.prior=bernoulli"]},
            "seeds": [0, 1, 2], **extra}


def write(tmp_path: Path, name: str, tree: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.mark.parametrize("comparisons,words", [
    ([{"method": "nope", "against": "ncl", "metrics": ["sc_gain"]}], ["comparisons[0].method", "nope", "ncl, ste"]),
    ([{"method": "ste", "against": "ste", "metrics": ["sc_gain"]}], ["comparisons[0].against", "allowed: ncl"]),
    ([{"method": "ste", "against": "ncl", "metrics": ["accuracy"]}], ["comparisons[0].metrics", "sc_gain"]),
    ([{"method": "ste", "against": "ncl", "metrics": []}], ["comparisons[0].metrics"]),
    ([{"method": "ste", "against": "ncl"}], ["comparisons[0]", "metrics"]),
    ([{"method": "ste", "against": "ncl", "metrics": ["sc"], "suite": "missing.yaml"}],
     ["comparisons[0].suite", "missing.yaml"]),
    ({"method": "ste"}, ["comparisons must be a list"]),
])
def test_bad_comparisons_are_one_clear_line(tmp_path, comparisons, words):
    path = write(tmp_path, "suite.yaml", suite_tree(tmp_path, comparisons=comparisons))
    with pytest.raises(ConfigError) as error:
        load_suite(path)
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message


def fake_run(directory: Path, sc: float, sc_init: float, top1: float, converged: bool = True) -> None:
    """The files a finished run leaves that the table rows read."""
    directory.mkdir(parents=True)
    for name, value in (("eval.json", sc), ("eval_init.json", sc_init)):
        (directory / name).write_text(json.dumps({
            "metrics": {"gated": {"semantic_consistency": value}},
            "linear_probe": {"top1": top1, "converged": converged}}))


def test_comparisons_pair_by_seed_within_a_suite_and_against_another_suite(tmp_path):
    write(tmp_path, "base_suite.yaml", suite_tree(tmp_path / "base"))
    runs = tmp_path / "base" / "out" / "runs" / "scenes"
    for seed, (sc, top1) in enumerate([(20.0, 40.0), (21.0, 41.0), (19.0, 42.0)]):
        fake_run(runs / "ste" / f"seed{seed}", sc, 10.0, top1)
    tree = suite_tree(tmp_path, methods={"ncl": ["gate.prior=none"], "mask": ["gate.prior=learned_mask"]},
                      comparisons=[{"method": "mask", "against": "ncl", "metrics": ["sc_gain", "linear_top1"]},
                                   {"method": "mask", "against": "ste", "suite": "base_suite.yaml",
                                    "metrics": ["sc_gain"]}])
    spec = load_suite(write(tmp_path, "causes.yaml", tree))
    mine = tmp_path / "out" / "runs" / "scenes"
    for seed, (sc, top1) in enumerate([(18.0, 41.0), (20.5, 40.0), (17.0, 44.0)]):
        fake_run(mine / "mask" / f"seed{seed}", sc, 10.0, top1, converged=seed != 1)
    for seed, sc in enumerate([15.0, 16.0]):  # ncl has no seed 2: two pairs
        fake_run(mine / "ncl" / f"seed{seed}", sc, 11.0, 40.0)

    results = collect(spec)
    entries = {(c["against"], c["metric"]): c for c in results["comparisons"]}
    gain = entries[("ncl", "sc_gain")]
    assert gain["pairs"] == 2 and gain["seeds"] == [0, 1]
    assert gain["mean"] == pytest.approx(((18 - 10) - (15 - 11) + (20.5 - 10) - (16 - 11)) / 2)
    linear = entries[("ncl", "linear_top1")]
    assert linear["probe_not_converged"] == ["scenes/mask/seed1"]
    across = entries[("ste", "sc_gain")]
    reference = scipy_stats.ttest_rel([8.0, 10.5, 7.0], [10.0, 11.0, 9.0]).confidence_interval(0.95)
    assert across["pairs"] == 3 and across["label"] == "mask − ste (base_suite)"
    assert (across["lower"], across["upper"]) == pytest.approx((reference.low, reference.high))

    text = comparison_tables(spec, results["comparisons"])
    assert f"| mask − ste (base_suite) | sc_gain | 3 | {across['mean']:+.2f} | " in text
    assert "| mask − ncl | linear_top1 | 2 | " in text and "†" in text and "scenes/mask/seed1" in text
    assert ("yes" if across["excludes_zero"] else "no") in text.split("mask − ste")[1].splitlines()[0]


@pytest.mark.parametrize("name", ["cpu_seeds", "cpu_causes", "cpu_spurious"])
def test_new_suites_load_and_plan(name):
    from bayesncl_pyro.experiments.suite import plan

    spec = load_suite(ROOT / "configs" / "suites" / f"{name}.yaml")
    jobs = plan(spec)
    assert jobs and all(j.cfg.train.out_dir.startswith(f"runs/suites/{name}/") for j in jobs)


def test_comparisons_with_too_few_pairs_stay_strict_json(tmp_path):
    tree = suite_tree(tmp_path, comparisons=[{"method": "ste", "against": "ncl", "metrics": ["sc_gain"]}])
    spec = load_suite(write(tmp_path, "suite.yaml", tree))
    fake_run(tmp_path / "out" / "runs" / "scenes" / "ste" / "seed0", 20.0, 10.0, 40.0)
    fake_run(tmp_path / "out" / "runs" / "scenes" / "ncl" / "seed0", 15.0, 10.0, 40.0)
    (entry,) = collect(spec)["comparisons"]
    assert entry["pairs"] == 1 and entry["mean"] == 5.0 and entry["lower"] is None and not entry["excludes_zero"]
    json.dumps(entry, allow_nan=False)
    assert "| ste − ncl | sc_gain | 1 | +5.00 | – | – |" in comparison_tables(spec, [entry])


def test_format_difference_states_what_the_pairs_allow():
    from bayesncl_pyro.experiments.stats import format_difference

    three = paired_difference({0: 3.0, 1: 4.0, 2: 5.0}, {0: 1.0, 1: 1.0, 2: 1.0}).to_dict()
    p = 0.975  # with 2 degrees of freedom the t quantile has a closed form: (2p − 1)·√(2 / (4p(1 − p)))
    half = (2 * p - 1) * (2 / (4 * p * (1 - p))) ** 0.5 * 1.0 / 3 ** 0.5  # · sd / √n, sd = 1
    assert format_difference(three) == f"+3.00 [{3 - half:+.2f}, {3 + half:+.2f}] (n=3)"
    assert format_difference(three, mark=True).endswith(" *")
    straddles = paired_difference({0: 1.0, 1: -1.0}, {0: 0.0, 1: 0.0}).to_dict()
    assert not format_difference(straddles, mark=True).endswith("*")
    assert format_difference(paired_difference({0: 2.5}, {0: 1.0}).to_dict()) == "+1.50 (n=1, no interval)"
    assert format_difference(None) == format_difference({}) == "–"
