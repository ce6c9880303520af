"""ArviZ export of the gate posterior and prior: Monte-Carlo draws, NetCDF round trip, the summary,
the dimension ranking, figures, command line."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bayesncl_pyro.cli.inspect_gates import main as inspect_main
from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.choices import PRIORS
from bayesncl_pyro.evaluation import plots
from bayesncl_pyro.evaluation.dimension_ranking import DIMS_FILE, rank_dimensions
from bayesncl_pyro.evaluation.gate_posterior import (
    BEST_WORST_PNG,
    LOCAL_POSTERIOR,
    NETCDF_FILE,
    SUMMARY_CSV,
    SUMMARY_MD,
    forest_dimensions,
    gate_inference_data,
    gate_summary,
    global_rate_draws,
    inspect_run,
    load_netcdf,
    most_activating,
    never_active_parts,
    open_rate_draws,
    prior_draws,
    prior_means,
    save_netcdf,
    summary_markdown,
    top_dimensions,
)
from bayesncl_pyro.evaluation.trained_run import load_trained
from tests.conftest import ROOT, tiny_run


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
    prior_rates, prior_class_rates = open_rate_draws(torch.full((n, d), 0.8), labels, classes, 7, 2, seed=1)
    prior = {"open_rate": prior_rates, "class_open_rate": prior_class_rates}
    if with_pi:
        prior["pi"] = torch.rand(2, 7, d, generator=gen)
    idata = gate_inference_data(rates, class_rates, probs, labels, ["a", "b", "c"], pi, factors, names,
                                {"prior": "beta_bernoulli", "step": 7}, prior)
    return idata, dict(probs=probs, labels=labels, rates=rates, class_rates=class_rates, pi=pi, factors=factors,
                       prior=prior)


def test_netcdf_round_trip_keeps_values_dims_and_coords(tmp_path):
    idata, source = synthetic_idata()
    path = save_netcdf(idata, tmp_path / NETCDF_FILE)
    back = load_netcdf(path)
    assert set(back.groups()) == {"posterior", "prior", "observed_data", "constant_data", LOCAL_POSTERIOR}
    post = back.posterior
    assert post["open_rate"].dims == ("chain", "draw", "dim")
    assert post["class_open_rate"].dims == ("chain", "draw", "class", "dim")
    assert post["pi"].dims == ("chain", "draw", "dim")
    np.testing.assert_array_equal(post["open_rate"].values, source["rates"].numpy())
    np.testing.assert_array_equal(post["class_open_rate"].values, source["class_rates"].numpy())
    np.testing.assert_array_equal(post["pi"].values, source["pi"].numpy())
    assert list(post["class"].values) == ["a", "b", "c"] and list(post["dim"].values) == list(range(5))
    assert post.attrs["prior"] == "beta_bernoulli" and post.attrs["step"] == "7"
    assert post.attrs["inference_library"] == "pyro" and "created_at" in post.attrs
    for name in ("open_rate", "class_open_rate", "pi"):  # the prior holds the same quantities, same dims
        assert back.prior[name].dims == post[name].dims
        np.testing.assert_array_equal(back.prior[name].values, source["prior"][name].numpy())
    local = getattr(back, LOCAL_POSTERIOR)
    assert local["gate_prob"].dims == ("image", "dim") and "extension" in local.attrs
    np.testing.assert_array_equal(local["gate_prob"].values, source["probs"].numpy())
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


def test_summary_has_stats_and_no_chain_diagnostics_and_its_page_says_why_in_percent():
    idata, source = synthetic_idata()
    table = gate_summary(idata)
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    assert table.loc["open_rate[0]", "mean"] == pytest.approx(float(source["rates"][:, :, 0].mean()), rel=1e-6)
    assert table.loc["pi[4]", "mean"] == pytest.approx(float(source["pi"][:, :, 4].mean()), rel=1e-6)
    assert sum(str(i).startswith("class_open_rate") for i in table.index) == 3 * 5
    page = summary_markdown(table, prior_means(idata))
    assert "r-hat" in page and "ESS" in page and "independent" in page and "r_hat" not in page
    row = next(line for line in page.splitlines() if line.startswith("| open_rate[0] |"))
    cells = [float(c) for c in row.strip("|").split("|")[1:]]
    assert cells[0] == pytest.approx(100 * table.loc["open_rate[0]", "mean"], abs=0.006)
    assert cells[-1] == pytest.approx(100 * float(source["prior"]["open_rate"][:, :, 0].mean()), abs=0.006)
    assert "| class_open_rate" not in page


# ------------------------------------------------------------------ prior draws


def _model(*overrides: str):
    cfg = load_config(ROOT / "configs" / "scenes_quick.yaml", list(overrides))
    return PRIORS.get(cfg.gate.prior).model(cfg.gate)


def test_prior_draws_trace_the_bernoulli_model_and_leave_the_random_state_alone():
    n, d, classes, rho = 300, 4, 3, 0.3
    labels = torch.arange(n) % classes
    state = torch.get_rng_state()
    draws = prior_draws(_model(f"gate.prior_prob={rho}"), labels, classes, d, draws=400, chains=2, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert set(draws) == {"open_rate", "class_open_rate"}
    flat = draws["open_rate"].reshape(-1, d).double()
    assert draws["class_open_rate"].shape == (2, 400, classes, d)
    variance = rho * (1 - rho) / n  # of the mean of n independent Bern(ρ) gates
    assert torch.all((flat.mean(0) - rho).abs() < 5 * math.sqrt(variance / flat.shape[0]))
    assert flat.var(0).numpy() == pytest.approx(np.full(d, variance), rel=0.2)
    again = prior_draws(_model(f"gate.prior_prob={rho}"), labels, classes, d, draws=400, chains=2, seed=5)
    assert torch.equal(again["open_rate"], draws["open_rate"])


def test_prior_draws_of_the_beta_bernoulli_model_hold_pi_from_its_beta():
    a, b, n, d = 2.0, 6.0, 200, 3
    labels = torch.arange(n) % 2
    draws = prior_draws(_model("gate.prior=beta_bernoulli", f"gate.beta_a={a}", f"gate.beta_b={b}"),
                        labels, 2, d, draws=600, chains=2, seed=0)
    pi = draws["pi"].reshape(-1, d).double()
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert torch.all((pi.mean(0) - mean).abs() < 5 * math.sqrt(var / pi.shape[0]))
    # the open rate follows π: its draws centre on π's and spread with it (far more than Binomial noise)
    rate = draws["open_rate"].reshape(-1, d).double()
    assert torch.all((rate - pi).abs().mean(0) < 0.05)  # N(π, π(1-π)/n) around each draw of π
    assert torch.all(rate.var(0) > 5 * mean * (1 - mean) / n)


# ------------------------------------------------------------------ dimension ranking


def test_ranking_puts_a_one_class_dimension_first_and_ignores_rarely_active_ones():
    n = 400
    labels = torch.arange(n) % 4
    features = torch.zeros(n, 5)
    features[labels == 0, 0] = 1.0                         # one class only: SC 100 %
    features[:, 1] = 1.0                                   # every image: SC = largest class share, 25 %
    features[0, 2] = 1.0                                   # one image (0.25 % < 1 %): not ranked
    features[: n // 2, 3] = 1.0                            # half the images, classes 0-3 alike: 25 %
    features[labels < 2, 4] = 1.0 + labels[labels < 2].float()  # two classes: 50 %
    ranking = rank_dimensions(features, labels, None, "test", count=2)
    assert ranking.best == [0, 4]
    assert set(ranking.worst) == {1, 3} and 2 not in ranking.best + ranking.worst
    assert float(ranking.consistency[0]) == 100.0 and float(ranking.consistency[4]) == 50.0
    assert ranking.open_rate is None and ranking.to_dict()["dims"][0]["active_share"] == 0.25


def test_never_active_dimensions_of_gated_z_are_split_by_their_cause():
    z = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0, 1.0]])
    gate = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0, 1.0]])
    parts = never_active_parts({"z": z, "gate": gate, "gated": z * gate})
    assert parts == {"dead in z": 1, "gate never open": 1, "never open where z fires": 2}


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
    np.testing.assert_allclose(getattr(back, LOCAL_POSTERIOR)["gate_prob"].values, expected_probs.numpy(), atol=1e-6)
    d = expected_probs.shape[1]
    assert dict(back.posterior.sizes) == {"chain": 2, "draw": 60, "dim": d, "class": 10}
    assert dict(back.prior.sizes) == dict(back.posterior.sizes)
    prior_rate = back.prior["open_rate"].values.mean()
    assert abs(prior_rate - run.cfg.gate.prior_prob) < 0.02  # drawn from Bern(ρ), not from the guide
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
    assert "r_hat" not in (gated_run / SUMMARY_MD).read_text()
    for path in inspection.figures.values():
        with Image.open(path) as image:
            image.verify()
    assert {"forest", "class_heatmap", "activation_frequency", "best_worst"} <= set(inspection.figures)
    ranking = json.loads((gated_run / DIMS_FILE).read_text())
    assert ranking["features"] == "gated z" and len(ranking["dims"]) == d
    assert ranking["best"] and all(0 <= entry["open_rate"] <= 1 for entry in ranking["dims"])


def test_arviz_plots_of_the_export_raise_no_warning(gated_run, inspection):
    """With the pinned versions, neither ArviZ's plots of gates.nc (prior against posterior
    included) nor the summary warn; matplotlib figures stay on the Agg backend."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idata = load_netcdf(gated_run / NETCDF_FILE)
    coords = {"dim": [0, 1]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            az.plot_dist_comparison(idata, var_names=["open_rate"], coords=coords)
            az.plot_forest([idata.posterior, idata.prior], model_names=["posterior", "prior"], var_names=["open_rate"],
                           coords=coords, combined=True)
            az.plot_posterior(idata, var_names=["open_rate"], coords=coords)
            az.plot_trace(idata, var_names=["open_rate"], coords=coords)
            gate_summary(idata)
        finally:
            plt.close("all")


def test_inspect_of_an_ungated_run_ranks_its_dimensions_only(tmp_path_factory, capsys):
    run = tiny_run(tmp_path_factory, "ungated", "gate.prior=none")
    assert inspect_main([str(run), "--no-progress", "--draws", "3"]) == 0
    out = capsys.readouterr().out
    assert "no gates" in out and str(run / DIMS_FILE) in out
    assert (run / BEST_WORST_PNG).is_file() and not (run / NETCDF_FILE).exists()
    assert json.loads((run / DIMS_FILE).read_text())["features"] == "normalize(z)"
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


def test_every_plot_function_writes_a_png_no_wider_than_the_report_shows_at_natural_size(tmp_path):
    gen = np.random.default_rng(0)
    dpi = plots.DPI
    widths = {}
    curves = {"loss": {"a": (np.arange(10), gen.random(10)), "b": (np.arange(5), gen.random(5))},
              "kl": {"a": (np.arange(10), gen.random(10) + 0.1), "b": (np.arange(5), gen.random(5) + 0.1)},
              "open_rate": {"a": (np.arange(10), gen.random(10)), "b": ([], [])}}
    widths["curves"], height = png_size(plots.plot_training_curves(curves, tmp_path / "curves.png"))
    assert 0.6 * 3.0 * dpi < height < 1.3 * 3.4 * dpi
    draws = {"open_rate": gen.random((2, 50, 6)), "pi": gen.beta(2, 3, (2, 50, 6))}
    widths["forest"], height = png_size(plots.plot_forest(draws, [f"d{i}" for i in range(6)], tmp_path / "forest.png",
                                                          title="t", xlabel="x"))
    assert height > 0.5 * (1.6 + 0.26 * 12) * dpi
    matrix = gen.random((4, 70))
    widths["heatmap"], height = png_size(plots.plot_class_heatmap(
        matrix, list("abcd"), [str(i) for i in range(70)], np.repeat(np.arange(4), [20, 20, 20, 10]),
        tmp_path / "heatmap.png", title="t", colorbar_label="c"))
    assert height > 3 * (0.21 * 4) * dpi  # 70 columns wrap into three rows of panels
    frequency = np.concatenate([np.zeros(3), np.ones(2), gen.random(20)])
    widths["frequency"], _ = png_size(plots.plot_activation_frequency(frequency, 500, tmp_path / "frequency.png",
                                                                      features="gated z"))
    images = gen.integers(0, 256, (3, 5, 3, 16, 16), dtype=np.uint8)
    widths["top"], height = png_size(plots.plot_top_images(images, ["d1", "d2", "d3"], tmp_path / "top.png", title="t"))
    assert widths["top"] > height  # 5 images across, 3 rows down
    with Image.open(tmp_path / "top.png") as image:
        assert image.convert("RGB").getextrema() != ((255, 255), (255, 255), (255, 255))
    assert all(400 < width <= 1340 for width in widths.values()), widths


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
