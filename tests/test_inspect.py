"""ArviZ export of the gate posterior: Monte-Carlo draws, NetCDF round trip, figures, command line."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bayesncl_pyro.cli.inspect_gates import main as inspect_main
from bayesncl_pyro.evaluation import plots
from bayesncl_pyro.evaluation.gate_posterior import (
    NETCDF_FILE,
    SUMMARY_CSV,
    forest_dimensions,
    gate_inference_data,
    gate_summary,
    global_rate_draws,
    inspect_run,
    load_netcdf,
    most_activating,
    open_rate_draws,
    save_netcdf,
    top_dimensions,
)
from bayesncl_pyro.evaluation.trained_run import load_trained
from tests.conftest import tiny_run


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "gated")


@pytest.fixture(scope="module")
def inspection(gated_run):
    return inspect_run(gated_run, draws=60, chains=2, device="cpu", progress=False)


# ------------------------------------------------------------------ draws


def test_open_rate_draws_match_bernoulli_moments():
    gen = torch.Generator().manual_seed(0)
    n, d, classes = 400, 3, 2
    probs = torch.rand(n, d, generator=gen)
    probs[:, 2] = (torch.arange(n) % 2).float()  # a deterministic gate: every draw is the same
    labels = torch.arange(n) % classes
    chains, draws = 2, 1500
    rates, class_rates = open_rate_draws(probs, labels, classes, draws, chains, seed=1)
    assert rates.shape == (chains, draws, d) and class_rates.shape == (chains, draws, classes, d)
    flat = rates.reshape(-1, d).double()
    mean = probs.double().mean(0)
    variance = (probs * (1 - probs)).double().sum(0) / n**2  # of a mean of independent Bernoullis
    for j in range(2):
        assert abs(flat[:, j].mean() - mean[j]) < 5 * math.sqrt(variance[j] / flat.shape[0])
        assert flat[:, j].var() == pytest.approx(float(variance[j]), rel=0.15)
    assert torch.all(flat[:, 2] == 0.5)
    class_flat = class_rates.reshape(-1, classes, d).double()
    for c in range(classes):
        in_class = probs[labels == c].double()
        sd = math.sqrt(float((in_class[:, 0] * (1 - in_class[:, 0])).sum()) / in_class.shape[0] ** 2 / flat.shape[0])
        assert abs(float(class_flat[:, c, 0].mean()) - float(in_class[:, 0].mean())) < 5 * sd
        assert torch.all(class_flat[:, c, 2] == float(c))


def test_open_rate_draws_are_reproducible_from_the_seed_and_a_class_without_images_is_nan():
    probs = torch.full((10, 2), 0.5)
    labels = torch.zeros(10, dtype=torch.long)
    a = open_rate_draws(probs, labels, 2, 5, 1, seed=3)
    b = open_rate_draws(probs, labels, 2, 5, 1, seed=3)
    assert torch.equal(a[0], b[0])
    assert torch.isnan(a[1][:, :, 1]).all() and not torch.isnan(a[1][:, :, 0]).any()


class _BetaGuide:
    def relevance(self):
        return torch.distributions.Beta(torch.tensor([2.0, 8.0]), torch.tensor([6.0, 2.0]))


def test_global_rate_draws_come_from_the_guides_beta():
    pi = global_rate_draws(_BetaGuide(), draws=4000, chains=2, seed=0)
    assert pi.shape == (2, 4000, 2)
    a, b = np.array([2.0, 8.0]), np.array([6.0, 2.0])
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    got = pi.reshape(-1, 2).double()
    assert np.all(np.abs(got.mean(0).numpy() - mean) < 5 * np.sqrt(var / got.shape[0]))
    assert global_rate_draws(object(), 3, 1) is None


# ------------------------------------------------------------------ NetCDF


def synthetic_idata(with_pi: bool = True):
    gen = torch.Generator().manual_seed(4)
    n, d, classes = 30, 5, 3
    probs = torch.rand(n, d, generator=gen)
    labels = torch.arange(n) % classes
    rates, class_rates = open_rate_draws(probs, labels, classes, 7, 2, seed=0)
    pi = torch.rand(2, 7, d, generator=gen) if with_pi else None
    factors = {"background": torch.randint(0, 3, (n,), generator=gen), "x": torch.rand(n, generator=gen)}
    names = {"background": ["sky", "grass", "sand"]}
    idata = gate_inference_data(rates, class_rates, probs, labels, ["a", "b", "c"], pi, factors, names,
                                {"prior": "beta_bernoulli", "step": 7})
    return idata, dict(probs=probs, labels=labels, rates=rates, class_rates=class_rates, pi=pi, factors=factors)


def test_netcdf_round_trip_keeps_values_dims_and_coords(tmp_path):
    idata, source = synthetic_idata()
    path = save_netcdf(idata, tmp_path / NETCDF_FILE)
    back = load_netcdf(path)
    assert set(back.groups()) == {"posterior", "gate_probs", "observed_data", "constant_data"}
    post = back.posterior
    assert post["open_rate"].dims == ("chain", "draw", "dim")
    assert post["class_open_rate"].dims == ("chain", "draw", "class", "dim")
    assert post["pi"].dims == ("chain", "draw", "dim")
    np.testing.assert_array_equal(post["open_rate"].values, source["rates"].numpy())
    np.testing.assert_array_equal(post["class_open_rate"].values, source["class_rates"].numpy())
    np.testing.assert_array_equal(post["pi"].values, source["pi"].numpy())
    assert list(post["class"].values) == ["a", "b", "c"] and list(post["dim"].values) == list(range(5))
    assert post.attrs["prior"] == "beta_bernoulli" and post.attrs["step"] == "7"
    assert back.gate_probs["gate_prob"].dims == ("image", "dim")
    np.testing.assert_array_equal(back.gate_probs["gate_prob"].values, source["probs"].numpy())
    np.testing.assert_array_equal(back.observed_data["label"].values, source["labels"].numpy())
    const = back.constant_data
    np.testing.assert_array_equal(const["background"].values, source["factors"]["background"].numpy())
    np.testing.assert_array_equal(const["x"].values, source["factors"]["x"].numpy())
    assert list(const["background_name"].values) == ["sky", "grass", "sand"]
    assert const["background_name"].dims == ("background_code",)


def test_save_netcdf_replaces_atomically_and_leaves_no_temporary_file(tmp_path):
    idata, _ = synthetic_idata(with_pi=False)
    path = save_netcdf(idata, tmp_path / NETCDF_FILE)
    save_netcdf(idata, path)  # overwrite
    assert "pi" not in load_netcdf(path).posterior

    class Broken:
        def to_netcdf(self, filename):
            Path(filename).write_bytes(b"half a file")
            raise OSError("disk full")

    before = path.read_bytes()
    with pytest.raises(OSError):
        save_netcdf(Broken(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [NETCDF_FILE]


def test_summary_has_stats_and_no_chain_diagnostics():
    idata, source = synthetic_idata()
    table = gate_summary(idata)
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    assert table.loc["open_rate[0]", "mean"] == pytest.approx(float(source["rates"][:, :, 0].mean()), rel=1e-6)
    assert table.loc["pi[4]", "mean"] == pytest.approx(float(source["pi"][:, :, 4].mean()), rel=1e-6)
    assert sum(str(i).startswith("class_open_rate") for i in table.index) == 3 * 5


# ------------------------------------------------------------------ selection helpers


def test_dimension_selection_helpers():
    activations = torch.tensor([[0.0, 3.0, 1.0, 0.0], [0.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.5, 0.0]])
    assert top_dimensions(activations, 3).tolist() == [1, 2]  # never-active dims are left out
    assert most_activating(activations, torch.tensor([2, 1]), 2).tolist() == [[1, 0], [0, 1]]
    probs = torch.linspace(0, 1, 10).repeat(4, 1)
    assert forest_dimensions(probs, 4).tolist() == [9, 6, 3, 0]
    assert forest_dimensions(probs, 50).tolist() == list(range(9, -1, -1))


# ------------------------------------------------------------------ a tiny run


def test_inspect_run_writes_netcdf_summary_and_figures(gated_run, inspection):
    back = load_netcdf(gated_run / NETCDF_FILE)
    run = load_trained(gated_run, device="cpu")
    with torch.no_grad():
        h = run.net.backbone(run.eval_transform(run.test_set.images))
        expected_probs = torch.sigmoid(run.net.guide.gate_logits(h) / run.cfg.gate.temperature)
    np.testing.assert_allclose(back.gate_probs["gate_prob"].values, expected_probs.numpy(), atol=1e-6)
    d = expected_probs.shape[1]
    assert dict(back.posterior.sizes) == {"chain": 2, "draw": 60, "dim": d, "class": 10}
    assert list(back.posterior["class"].values) == run.test_set.classes
    np.testing.assert_array_equal(back.observed_data["label"].values, run.test_set.labels.numpy())
    assert set(back.constant_data.data_vars) == {"background", "color", "x", "y", "scale", "rotation"}
    # the draws' average over the whole posterior is the mean gate probability, up to Monte-Carlo error
    drawn = back.posterior["open_rate"].values.reshape(-1, d).mean(0)
    n, total = expected_probs.shape[0], 120
    sd = np.sqrt((expected_probs * (1 - expected_probs)).sum(0).numpy() / n**2 / total)
    assert np.all(np.abs(drawn - expected_probs.mean(0).numpy()) <= 5 * sd + 1e-5)
    csv_rows = (gated_run / SUMMARY_CSV).read_text().splitlines()
    assert csv_rows[0] == ",mean,sd,hdi_3%,hdi_97%"
    assert sum(row.startswith("open_rate[") for row in csv_rows) == d
    assert "r_hat" not in (gated_run / "gates_summary.md").read_text()
    for path in inspection.figures.values():
        with Image.open(path) as image:
            image.verify()
    assert {"forest", "class_heatmap", "activation_frequency"} <= set(inspection.figures)


def test_inspect_command_refuses_an_ungated_run(tmp_path_factory, capsys):
    run = tiny_run(tmp_path_factory, "ungated", "gate.prior=none")
    assert inspect_main([str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "gate.prior='none'" in err and err.count("\n") == 1
    assert inspect_main([str(run), "--draws", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bayesncl-inspect: argument --draws: 0 is not allowed") and err.count("\n") == 1


# ------------------------------------------------------------------ figures


def png_size(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


def test_every_plot_function_writes_a_png_of_about_the_expected_size(tmp_path):
    gen = np.random.default_rng(0)
    dpi = plots.DPI
    curves = {"loss": {"a": (np.arange(10), gen.random(10)), "b": (np.arange(5), gen.random(5))},
              "kl": {"a": (np.arange(10), gen.random(10) + 0.1), "b": (np.arange(5), gen.random(5) + 0.1)},
              "open_rate": {"a": (np.arange(10), gen.random(10)), "b": ([], [])}}
    width, height = png_size(plots.plot_training_curves(curves, tmp_path / "curves.png"))
    assert 0.6 * 3 * 4.2 * dpi < width < 1.2 * 3 * 4.2 * dpi and 0.6 * 3.0 * dpi < height < 1.3 * 3.0 * dpi

    draws = {"open_rate": gen.random((2, 50, 6)), "pi": gen.beta(2, 3, (2, 50, 6))}
    width, height = png_size(plots.plot_forest(draws, [f"d{i}" for i in range(6)], tmp_path / "forest.png"))
    assert height > 0.5 * (1.2 + 0.28 * 12) * dpi and width > 0.5 * 6.5 * dpi

    matrix = gen.random((4, 30))
    width, height = png_size(plots.plot_class_heatmap(matrix, list("abcd"), [f"d{i}" for i in range(30)],
                                                      tmp_path / "heatmap.png"))
    assert width > height > 0.5 * (1.4 + 0.32 * 4) * dpi

    frequency = np.concatenate([np.zeros(3), np.ones(2), gen.random(20)])
    width, height = png_size(plots.plot_activation_frequency(frequency, 500, tmp_path / "frequency.png"))
    assert 0.7 * 7.0 * dpi < width < 1.2 * 7.0 * dpi and 0.7 * 3.6 * dpi < height < 1.3 * 3.6 * dpi

    images = gen.integers(0, 256, (3, 5, 3, 16, 16), dtype=np.uint8)
    width, height = png_size(plots.plot_top_images(images, ["d1", "d2", "d3"], tmp_path / "top.png"))
    assert width > height  # 5 images across, 3 rows down
    with Image.open(tmp_path / "top.png") as image:
        assert image.convert("RGB").getextrema() != ((255, 255), (255, 255), (255, 255))


def test_a_beta_bernoulli_run_exports_draws_of_its_global_rates(tmp_path_factory):
    run_path = tiny_run(tmp_path_factory, "beta", "gate.prior=beta_bernoulli")
    inspect_run(run_path, draws=200, chains=2, device="cpu", progress=False)
    back = load_netcdf(run_path / NETCDF_FILE)
    pi = back.posterior["pi"]
    assert pi.dims == ("chain", "draw", "dim") and pi.shape[:2] == (2, 200)
    relevance = load_trained(run_path, device="cpu").net.guide.relevance()
    mean, sd = relevance.mean.detach().numpy(), relevance.stddev.detach().numpy()
    drawn = pi.values.reshape(400, -1)
    assert np.all((drawn > 0) & (drawn < 1))
    assert np.all(np.abs(drawn.mean(0) - mean) < 5 * sd / np.sqrt(400))
    assert "pi[0]" in (run_path / "gates_summary.md").read_text()
