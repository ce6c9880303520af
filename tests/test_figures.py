"""Every figure the project draws says what it shows: checked on the matplotlib objects each figure
builder returns (small synthetic arrays), not on pixels.

For each figure: every visible Axes has an x and a y label (an image grid is exempt: its cells have
no axes to label, and each row is named instead), the figure or each Axes has a title, tick labels
are at least 8 pt, an image plot has a colour bar whose limits are the data's, a series of one
point carries a marker, and drawing it raises no warning.
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from bayesncl_pyro.evaluation import plots
from bayesncl_pyro.experiments import figures as grid_figures

RNG = np.random.default_rng(0)
IMAGE_GRIDS = {"top_images_figure"}
"""Builders whose Axes are image cells (labelled per row, not per axis)."""


def _curves():
    return plots.training_curves_figure(
        {"loss": {"a": (np.arange(20), RNG.random(20) + 5), "b": (np.array([10]), np.array([5.5]))},
         "kl": {"a": (np.arange(20), RNG.random(20) * 1e-3 + 1e-4), "b": ([], [])},
         "open_rate": {"a": (np.arange(20), 100 * RNG.random(20)), "b": ([], [])}},
        {"loss": ("negative ELBO", "nats per row"), "kl": ("λ-weighted KL", "nats per row"),
         "open_rate": ("hard-gate open share (training batch)", "%")})


def _forest():
    draws = {"open_rate": 40 + 5 * RNG.random((2, 50, 6))}
    prior = {"open_rate": 78 + 4 * RNG.random((2, 50, 6))}
    return plots.forest_figure(draws, [f"d{i}" for i in range(6)], title="6 of 6 dimensions", xlabel="open (%)",
                               prior_draws=prior)


HEATMAP = 40 + 30 * RNG.random((5, 45))


def _heatmap():
    return plots.class_heatmap_figure(HEATMAP, list("abcde"), [str(i) for i in range(45)],
                                      np.repeat(np.arange(5), 9), title="per class", colorbar_label="mean (%)")


def _frequency():
    frequency = np.concatenate([np.zeros(4), np.ones(2), RNG.random(30)])
    return plots.activation_frequency_figure(frequency, 500, "gated z", {"dead in z": 3, "gate never open": 1})


def _top_images():
    return plots.top_images_figure(RNG.integers(0, 256, (3, 4, 3, 8, 8), dtype=np.uint8), ["d1", "d2", "d3"],
                                   title="top images")


def _metrics():
    return grid_figures.metrics_figure(["a/ste", "b/ste"], {"final_loss": [[5.1, 5.2], [5.0]],
                                                            "open_rate": [[80.0, 70.0], [60.0]]},
                                       {"final_loss": "nats", "open_rate": "hard-gate open share (%)"}, "prior / estimator")


def _sc_gain():
    methods = {"ncl": {"sc_init": [10, 11], "sc": [20, 22], "linear_top1": [60, 61], "sc_gain": [10, 11]},
               "bayesncl": {"sc_init": [10], "sc": [30], "linear_top1": [59], "sc_gain": [20]}}
    return grid_figures.sc_gain_figure({"scenes": methods, "cifar10": methods})


SWEEP = {"SC (%)": np.array([[10.0, 20.0], [15.0, np.nan]]), "hard-gate open share (%)": np.array([[80.0, 60.0], [70.0, 50.0]])}


def _sweep():
    return grid_figures.sweep_figure("gate.kl_weight", [1e-4, 1e-3], "gate.prior_prob", [0.5, 0.8], SWEEP)


def _paired_rows():
    return [("ste − ncl: sc_gain (n=5)", 3.4, 2.0, 4.7), ("ste − ncl: linear_top1 (n=5)", -0.4, -2.1, 1.3),
            ("score − ncl: sc_gain (n=1)", -2.0, float("nan"), float("nan"))]


def _paired():
    rows = _paired_rows()
    return grid_figures.paired_differences_figure({"scenes": rows, "cifar10": rows[:1]})


BUILDERS = {
    "training_curves_figure": _curves, "forest_figure": _forest, "class_heatmap_figure": _heatmap,
    "activation_frequency_figure": _frequency, "top_images_figure": _top_images, "metrics_figure": _metrics,
    "sc_gain_figure": _sc_gain, "sweep_figure": _sweep, "paired_differences_figure": _paired,
}
IMAGE_DATA = {"class_heatmap_figure": [HEATMAP], "sweep_figure": list(SWEEP.values())}
"""The arrays each image plot shows; its colour bar must span exactly their finite values."""


def test_every_figure_builder_is_checked_here():
    found = {name for module in (plots, grid_figures) for name, item in vars(module).items()
             if name.endswith("_figure") and name != "save_figure" and inspect.isfunction(item)
             and item.__module__ == module.__name__}
    assert found == set(BUILDERS)


def _colorbar_axes(fig: Figure) -> set:
    return {image.colorbar.ax for ax in fig.axes for image in ax.get_images() if image.colorbar is not None}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_figure_has_labelled_axes_a_title_and_legible_ticks(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = BUILDERS[name]()
        FigureCanvasAgg(fig).draw()  # layout and drawing warn here if anything is off
    assert isinstance(fig, Figure)
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    colorbars = _colorbar_axes(fig)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax not in colorbars]
    assert axes
    for ax in axes:
        title = " ".join(ax.get_title(loc) for loc in ("left", "center", "right")).strip()
        assert title or suptitle, f"{name}: an Axes without a title in a figure without one"
        if name in IMAGE_GRIDS:
            continue
        assert ax.get_xlabel().strip(), f"{name}: no x label"
        assert ax.get_ylabel().strip(), f"{name}: no y label"
        for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
            if label.get_visible() and label.get_text():
                assert label.get_fontsize() >= 8, f"{name}: tick label {label.get_text()!r} below 8 pt"
    if name in IMAGE_GRIDS:
        assert suptitle and all(ax.get_ylabel() for ax in fig.axes[:: len(fig.axes) // 3])  # each row named
    width_px = fig.get_size_inches()[0] * plots.DPI
    assert width_px <= 1340, f"{name}: {width_px:.0f} px wide, wider than the report shows at natural size"


@pytest.mark.parametrize("name", sorted(IMAGE_DATA))
def test_image_plots_have_a_labelled_colour_bar_fitted_to_the_data(name):
    """Panels that share one colour scale (the wrapped heatmap) share one colour bar."""
    fig = BUILDERS[name]()
    images = [image for ax in fig.axes for image in ax.get_images() if isinstance(image, AxesImage)]
    colorbars = [image.colorbar for image in images if image.colorbar is not None]
    assert images and colorbars
    for colorbar in colorbars:
        assert colorbar.ax.get_ylabel().strip(), f"{name}: unlabelled colour bar"
    with_bar = {(float(c.mappable.norm.vmin), float(c.mappable.norm.vmax)) for c in colorbars}
    limits = sorted({(float(image.norm.vmin), float(image.norm.vmax)) for image in images})
    assert set(limits) == with_bar  # every image's scale is one a colour bar shows
    expected = sorted({(float(np.nanmin(data)), float(np.nanmax(data))) for data in IMAGE_DATA[name]})
    assert limits == expected


def test_a_series_of_one_point_is_drawn_with_a_marker():
    fig = _curves()
    loss = next(ax for ax in fig.axes if ax.get_title().startswith("loss"))
    single = next(line for line in loss.get_lines() if len(line.get_xdata()) == 1)
    assert single.get_marker() not in (None, "None", "", " ")


def test_the_forest_axis_is_fitted_to_the_intervals_and_names_the_subset():
    fig = _forest()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert 30 < low < 40 and 82 < high < 90  # around the draws (40-45 and 78-82), not 0-100
    assert "6 of 6 dimensions" in ax.get_title(loc="left") and ax.get_title() == ""
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["posterior", "prior"]


def test_the_heatmap_labels_every_dimension_and_marks_the_groups():
    fig = _heatmap()
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2  # 45 dimensions wrap into rows of 32
    labels = [t.get_text() for ax in panels for t in ax.get_xticklabels()]
    assert labels == [str(i) for i in range(45)]
    edges = [line for ax in panels for line in ax.get_lines()]
    assert len(edges) == 4  # five groups of nine: four edges
    group_names = [t.get_text() for ax in panels for child in ax.child_axes for t in child.get_xticklabels()]
    assert "a" in group_names and "e" in group_names


def test_the_heatmap_names_narrow_groups_in_full_without_overlap():
    """A class that owns one or two dimensions keeps its whole name over its group (upright when
    it is wider than the group), and no two group names overlap once drawn."""
    names = ["triangle", "cross", "horizontal bar", "circle", "vertical bar"]
    groups = [0, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4]
    fig = plots.class_heatmap_figure(RNG.random((5, len(groups))), names, [str(i) for i in range(len(groups))],
                                     groups, title="t", colorbar_label="c")
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for ax in fig.axes if ax.get_images() for child in ax.child_axes for t in child.get_xticklabels()]
    assert [t.get_text() for t in labels] == names
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    figure_box = fig.bbox
    assert all(box.x0 >= figure_box.x0 and box.x1 <= figure_box.x1 and box.y1 <= figure_box.y1 for box in boxes)


def test_paired_differences_fill_exactly_the_established_intervals_and_span_them():
    fig = _paired()
    ax = fig.axes[0]
    markers = [line for line in ax.get_lines() if line.get_marker() == "o"]
    filled = [line.get_markerfacecolor() != "white" for line in markers]
    assert filled == [True, False, False]  # [2.0, 4.7] excludes 0; [-2.1, 1.3] and one pair do not
    low, high = ax.get_xlim()
    assert low <= -2.1 and high >= 4.7
    by_height = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())), reverse=True)
    assert [text for _, text in by_height] == [row[0] for row in _paired_rows()]  # read top-down in row order


def test_importing_the_project_and_saving_figures_leaves_matplotlib_s_backend_alone(tmp_path):
    """In Jupyter the backend is the inline one: importing the evaluation (as the tutorial does)
    and writing figures must not switch it to Agg, or every figure of the notebook vanishes."""
    import subprocess
    import sys

    code = f"""
import matplotlib
matplotlib.use("module://matplotlib_inline.backend_inline")
import numpy as np
from bayesncl_pyro.evaluation import gate_posterior, plots, report  # noqa: F401
from bayesncl_pyro.experiments import figures  # noqa: F401
plots.plot_training_curves({{"loss": {{"a": (np.arange(3), np.ones(3))}}}}, {str(tmp_path / "curves.png")!r})
print(matplotlib.get_backend())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "module://matplotlib_inline.backend_inline"
    assert (tmp_path / "curves.png").stat().st_size > 0


NAMES = ["$\\bogus{x$", "cost $5", "a_b^c"]
"""Names a user may give a suite's methods and datasets, an ablation's cells or a sweep's axes:
as mathtext the first fails to parse and the others change."""


@pytest.mark.parametrize("build", [
    lambda: grid_figures.metrics_figure(NAMES, {NAMES[1]: [[1.0], [2.0], [3.0]]}, {}, "cell"),
    lambda: grid_figures.sc_gain_figure({NAMES[0]: {n: {"sc_init": [1.0], "sc": [2.0], "linear_top1": [50.0],
                                                        "sc_gain": [1.0]} for n in NAMES}}),
    lambda: grid_figures.paired_differences_figure({NAMES[0]: [(n, 1.0, 0.5, 1.5) for n in NAMES]}),
    lambda: grid_figures.sweep_figure(NAMES[0], NAMES, NAMES[1], NAMES[:2], {"SC (%)": np.ones((3, 2))}),
], ids=["metrics", "sc_gain", "paired_differences", "sweep"])
def test_user_chosen_names_are_drawn_as_written(build):
    fig = build()
    FigureCanvasAgg(fig).draw()  # parsing "$\bogus{x$" as mathtext would raise here
    shown = {t.get_text() for ax in fig.axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels(),
                                                       *(ax.get_legend().get_texts() if ax.get_legend() else ()))}
    written = {plots.literal_text(n) for n in NAMES}
    assert written & shown, shown
    assert not {n for n in NAMES if "$" in n} & shown  # never the unescaped form
