"""The scale ladder's summary and figures on rows made here: paired differences against numpy,
and traced checkpoints paired by seed."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bayesncl_pyro.evaluation.plots import save_figure
from bayesncl_pyro.experiments.ladder import _paired_trace, format_ladder, gain_figure, sc_knn_figure, summarize


def row(method, seed, images, sc_gain, knn, trace=()):
    return {"method": method, "seed": seed, "images_seen": images, "sc": 20 + sc_gain, "sc_supported": 15.0,
            "sc_weighted": 12.0 + sc_gain / 2, "sc_gain": sc_gain, "sc_supported_gain": 1.0,
            "sc_weighted_gain": sc_gain / 2, "knn_top1": knn, "linear_top1": knn + 5, "open_rate": None,
            "trace": [{"images_seen": i, "sc": s, "sc_weighted": s / 2, "knn_top1": k, "sc_gain": s - 10,
                       "sc_weighted_gain": (s - 10) / 2} for i, s, k in trace]}


def rungs():
    rng = np.random.default_rng(0)
    ncl = rng.normal(2.0, 1.0, 4)
    ste = ncl + rng.normal(1.0, 0.5, 4)
    short = [row("ncl", s, 8e4, ncl[s], 35.0) for s in range(4)] + \
            [row("bayesncl_ste", s, 8e4, ste[s], 34.0) for s in range(4)]
    long = [row("ncl", s, 3.2e5, 3.0 + s, 45.0, [(8e4, 12.0 + s, 30.0), (3.2e5, 13.0 + s, 45.0)]) for s in range(2)] + \
           [row("bayesncl_ste", s, 3.2e5, 4.0 + 2 * s, 44.0, [(8e4, 14.0, 29.0), (3.2e5, 16.0, 44.0)]) for s in range(2)]
    return {"short": short, "long": long}, ste - ncl


def test_paired_difference_per_rung_matches_a_t_interval():
    data, diffs = rungs()
    result = summarize(data, "bayesncl_ste", "ncl")
    d = result["rungs"]["short"]["differences"]["sc_gain"]
    assert d["mean"] == pytest.approx(diffs.mean(), abs=1e-9)
    half = scipy_stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / np.sqrt(4)
    assert d["lower"] == pytest.approx(diffs.mean() - half, abs=1e-6)
    assert d["upper"] == pytest.approx(diffs.mean() + half, abs=1e-6)
    assert result["rungs"]["long"]["differences"]["sc_gain"]["mean"] == pytest.approx(((4 - 3) + (6 - 4)) / 2)
    text = format_ladder(result)
    assert "| short |" in text and "| long |" in text and "n=4" in text


def test_traced_checkpoints_pair_by_seed():
    data, _ = rungs()
    trace = _paired_trace(data["long"], "bayesncl_ste", "ncl", "sc_gain")
    # seed 0: (14 - 10) - (12 - 10) = 2, seed 1: (14 - 10) - (13 - 10) = 1 at 8e4
    assert sorted(trace[8e4]) == [1.0, 2.0]
    assert sorted(trace[3.2e5]) == [2.0, 3.0]


def test_figures_are_drawn(tmp_path):
    data, _ = rungs()
    result = summarize(data, "bayesncl_ste", "ncl")
    for name, fig in (("gain.png", gain_figure(data, result)), ("knn.png", sc_knn_figure(data, ["bayesncl_ste", "ncl"]))):
        path = save_figure(fig, tmp_path / name)
        assert path.stat().st_size > 10_000


def test_trace_spacing_follows_images_seen():
    from bayesncl_pyro.experiments.ladder import trace_spacing

    assert trace_spacing(10, None, 8000) == 10
    assert trace_spacing(10, 80_000, 8000) == 10       # 8,000 images per epoch: every 10th epoch
    assert trace_spacing(10, 80_000, 50_000) == 2      # all of CIFAR-10: 1.6 epochs, the nearest whole 2
    assert trace_spacing(10, 10_000, 50_000) == 1      # never less than every epoch


def test_pooled_rungs_pair_each_rung_and_seed_once():
    data, diffs = rungs()
    result = summarize(data, "bayesncl_ste", "ncl", pool=["short", "long"])
    pooled = result["pooled"]["differences"]["sc_gain"]
    every = np.concatenate([diffs, [4 - 3, 6 - 4]])  # the long rung's two pairs
    half = scipy_stats.t.ppf(0.975, len(every) - 1) * every.std(ddof=1) / np.sqrt(len(every))
    assert pooled["pairs"] == 6 and pooled["mean"] == pytest.approx(every.mean(), abs=1e-9)
    assert (pooled["lower"], pooled["upper"]) == pytest.approx((every.mean() - half, every.mean() + half), abs=1e-6)
    assert "| pooled: short + long |" in format_ladder(result) and "n=6" in format_ladder(result)
    with pytest.raises(ValueError,
                       match=r"two or more different rungs of this ladder \(short, long\); got \[.short., .middle.\]"):
        summarize(data, "bayesncl_ste", "ncl", pool=["short", "middle"])


@pytest.mark.parametrize("pool", [["cpu_head", "cpu_ladder_e100"], ["cpu_head"], ["cpu_head", "cpu_head"]])
def test_pool_names_are_checked_before_anything_is_read(pool, tmp_path, capsys, monkeypatch):
    import importlib.util

    from bayesncl_pyro.experiments import ladder
    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("ladder_script", ROOT / "scripts" / "ladder.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(ladder, "rung_rows", lambda *a, **k: pytest.fail("a rung was read before the pool was checked"))
    out = tmp_path / "ladder"
    assert script.main(["cpu_head", "cpu_ladder_e40", "--out", str(out), "--pool", *pool]) == 2
    assert ("error: pooling needs two or more different rungs of this ladder (cpu_head, cpu_ladder_e40); "
            f"got {pool}") in capsys.readouterr().err
    assert not out.exists()
