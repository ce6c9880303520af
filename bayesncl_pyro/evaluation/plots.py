"""Figures of the evaluation, the gate posterior and the training curves.

Each figure has a builder, ``<name>_figure(arrays, ...) -> Figure``, that draws on a matplotlib
``Figure`` with the Agg canvas (no display, no global pyplot state), and a ``plot_<name>(...,
path)`` that builds it and writes the PNG atomically. The builders take values in the units they
show (shares in %, as everywhere on the project's pages) and the words of their titles and axes,
so that every figure says what it shows, which subset and how it was chosen.

Sizes are chosen for the HTML report, which shows a figure at its natural size (110 dpi) up to the
page width: text is at least 8 pt there, and no figure is wider than about 1,300 px.

Nothing here chooses matplotlib's backend: a ``Figure`` drawn on its own Agg canvas needs none, so
importing the project (in Jupyter, say) leaves the user's backend, inline figures included, as it was.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from bayesncl_pyro.storage.atomic import atomic_write_bytes

DPI = 110
HDI_PROB = 0.94
MARKER_MAX_POINTS = 60
"""A series with at most this many points gets a marker on each (so one point is visible)."""
HEATMAP_COLUMNS = 32
"""Dimensions per row of panels in the class heatmap: every column keeps a readable label."""


def literal_text(text: object) -> str:
    """``text`` as Matplotlib shows it literally: a dollar sign escaped, so that a name a user
    chose (a class folder ``$\\bogus{x$``, a suite method or ablation cell) is drawn as written
    instead of being parsed as mathtext (and failing)."""
    return str(text).replace("$", r"\$")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Draw ``fig`` with the Agg canvas (no display, no pyplot state) and write it as PNG atomically."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _percent_axis(values: float) -> str:
    """Tick label of a percentage on a log axis: 0.1 %, 1 %, 10 %, 100 %."""
    return f"{values:g} %"


# ----------------------------------------------------------------------------- training curves

def training_curves_figure(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                           labels: Mapping[str, tuple[str, str]] | None = None,
                           title: str = "training curves (one line per run)") -> Figure:
    """One panel per logged quantity, one line per run.

    curves: quantity (the log key, e.g. ``loss``, ``kl``, ``open_rate``) -> run label -> (steps [T],
    values [T]) in the unit that ``labels[quantity]`` = (what it is, unit) names; the panel's title
    is ``key: what it is`` and its y label the unit. A quantity no run logged is left out; a series
    of few points gets a marker on each point, so that a run with one logged step shows.
    """
    labels = labels or {}
    names = [name for name, runs in curves.items() if any(len(steps) for steps, _ in runs.values())]
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    fig = Figure(figsize=(4.0 * columns, 3.1 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    many_runs = len({label for runs in curves.values() for label in runs}) > 1
    for ax, name in zip(axes, names):
        for label, (steps, values) in curves[name].items():
            if len(steps):
                marker = "o" if len(steps) <= MARKER_MAX_POINTS else None
                ax.plot(np.asarray(steps), np.asarray(values, dtype=float), label=label, linewidth=1.4,
                        marker=marker, markersize=3.5)
        what, unit = labels.get(name, ("", ""))
        ax.set_title(f"{name}: {what}" if what else name, fontsize=9)
        ax.set_xlabel("training step", fontsize=9)
        ax.set_ylabel(unit or "value", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        positive = all(np.all(np.asarray(v, dtype=float) > 0) for _, v in curves[name].values() if len(v))
        if name == "kl" and positive:
            ax.set_yscale("log")
        if many_runs:
            ax.legend(fontsize=8)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if not names:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no logged steps", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_xlabel("training step")
        axes[0].set_ylabel("value")
    fig.suptitle(title, fontsize=11)
    return fig


def plot_training_curves(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], path: str | Path,
                         labels: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """:func:`training_curves_figure` as a PNG."""
    return save_figure(training_curves_figure(curves, labels), path)


# ----------------------------------------------------------------------------- forest plot

def forest_figure(draws: Mapping[str, np.ndarray], dim_labels: Sequence[str], title: str, xlabel: str,
                  prior_draws: Mapping[str, np.ndarray] | None = None, hdi_prob: float = HDI_PROB) -> Figure:
    """ArviZ forest plot: for each variable, each selected dimension's posterior mean, interquartile
    range (thick) and HDI (thin), with the same from the prior beside it when ``prior_draws`` are
    given. The x axis is fitted to the intervals, so short ones stay visible.

    draws, prior_draws: variable name -> [chains, draws, K] (the same K selected dimensions for
    each, in the unit of ``xlabel``); dim_labels: K names of those dimensions.
    """
    import arviz as az

    def inference_data(values: Mapping[str, np.ndarray]):
        return az.from_dict(posterior={name: np.asarray(v, dtype=float) for name, v in values.items()},
                            coords={"dim": list(dim_labels)}, dims={name: ["dim"] for name in values})

    data = [inference_data(draws)]
    names = ["posterior"]
    if prior_draws:
        data.append(inference_data({name: v for name, v in prior_draws.items() if name in draws}))
        names.append("prior")
    rows = len(dim_labels) * len(draws)
    fig = Figure(figsize=(7.5, 1.6 + (0.34 if prior_draws else 0.26) * rows), layout="constrained")
    ax = fig.add_subplot()
    az.plot_forest(data if prior_draws else data[0], model_names=names if prior_draws else None, combined=True,
                   hdi_prob=hdi_prob, ax=ax, textsize=9, linewidth=2.2, markersize=7,
                   colors=["#1f5fa8", "#b0b0b0"] if prior_draws else "#1f5fa8")
    every = np.concatenate([np.asarray(v, dtype=float).ravel() for v in
                            [*draws.values(), *((prior_draws or {}).values())]])
    every = every[np.isfinite(every)]
    if every.size:
        low, high = np.quantile(every, [0.001, 0.999])
        pad = max(0.08 * (high - low), 0.5)
        ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("dimension", fontsize=9)
    ax.set_title("")  # ArviZ's own "94.0% HDI"; the title below says it
    ax.set_title(title, fontsize=10, loc="left")
    legend = ax.get_legend()
    if legend is not None:  # ArviZ puts it over the first rows; move it beside the plot
        handles, names = legend.legend_handles, [text.get_text() for text in legend.get_texts()]
        ax.legend(handles[::-1], names[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_forest(draws: Mapping[str, np.ndarray], dim_labels: Sequence[str], path: str | Path, title: str,
                xlabel: str, prior_draws: Mapping[str, np.ndarray] | None = None,
                hdi_prob: float = HDI_PROB) -> Path:
    """:func:`forest_figure` as a PNG."""
    return save_figure(forest_figure(draws, dim_labels, title, xlabel, prior_draws, hdi_prob), path)


# ----------------------------------------------------------------------------- class heatmap

def _fits_across(text: str, columns: int) -> bool:
    """Whether ``text`` at 8 pt fits across ``columns`` heatmap columns (about 1.6 characters each)."""
    return len(text) <= max(1, int(columns * 1.6))


def class_heatmap_figure(matrix: np.ndarray, class_names: Sequence[str], dim_labels: Sequence[str],
                         groups: Sequence[int], title: str, colorbar_label: str,
                         columns_per_row: int = HEATMAP_COLUMNS) -> Figure:
    """A class × dimension heatmap wrapped into rows of ``columns_per_row`` dimensions, every
    column labelled, the colour scale fitted to the data (one colour bar for all rows).

    matrix: [C, D] values (rows = classes, columns = dimensions in display order); dim_labels: D
    column labels; groups: [D] the group of each column (an index into ``class_names``: the class
    the dimension belongs to). Consecutive columns of one group are outlined in white and named
    above the panel, in full: a name wider than its group stands upright.
    """
    matrix = np.asarray(matrix, dtype=float)
    groups = np.asarray(groups)
    c, d = matrix.shape
    finite = matrix[np.isfinite(matrix)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    panels = max(1, math.ceil(d / columns_per_row))
    width = min(columns_per_row, d)
    fig = Figure(figsize=(2.2 + 0.25 * width + 0.9, 1.0 + panels * (0.5 + 0.21 * c + 0.55)), layout="constrained")
    axes = fig.subplots(panels, 1, squeeze=False).ravel()
    image = None
    for panel, ax in enumerate(axes):
        start, stop = panel * columns_per_row, min(d, (panel + 1) * columns_per_row)
        block = np.full((c, width), np.nan)
        block[:, : stop - start] = matrix[:, start:stop]
        image = ax.imshow(block, aspect="auto", cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        ax.set_yticks(range(c), list(class_names), fontsize=8)
        ax.set_xticks(range(stop - start), list(dim_labels[start:stop]), fontsize=8)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_xlabel("dimension", fontsize=9)
        ax.set_ylabel("class", fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
        # group edges and names
        edges = [i for i in range(start + 1, stop) if groups[i] != groups[i - 1]]
        for edge in edges:
            ax.axvline(edge - start - 0.5, color="white", linewidth=2.2)
        bounds = [start, *edges, stop]
        top = ax.secondary_xaxis("top")
        centres = [(a + b - 1) / 2 - start for a, b in zip(bounds[:-1], bounds[1:])]
        names = [str(class_names[int(groups[a])]) for a in bounds[:-1]]
        top.set_xticks(centres, names, fontsize=8)
        top.tick_params(length=0)
        for label, a, b in zip(top.get_xticklabels(), bounds[:-1], bounds[1:]):
            if not _fits_across(label.get_text(), b - a):  # a narrow group: its whole name, upright
                label.set_rotation(90)
    fig.colorbar(image, ax=list(axes), fraction=0.025, pad=0.01, aspect=30).set_label(colorbar_label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_class_heatmap(matrix: np.ndarray, class_names: Sequence[str], dim_labels: Sequence[str],
                       groups: Sequence[int], path: str | Path, title: str, colorbar_label: str) -> Path:
    """:func:`class_heatmap_figure` as a PNG."""
    return save_figure(class_heatmap_figure(matrix, class_names, dim_labels, groups, title, colorbar_label), path)


# ----------------------------------------------------------------------------- activation frequency

def activation_frequency_figure(frequency: np.ndarray, num_images: int, features: str,
                                never_active_parts: Mapping[str, int] | None = None) -> Figure:
    """Histogram of each dimension's activation frequency (the share of test images on which it is
    non-zero), on a log axis from 1/num_images to 100 %; dimensions never active (0 %) and active on
    every image (100 %) get their own marked bars, since a log axis cannot show 0.

    frequency: [D] values in [0, 1]; features: the name of the feature set (e.g. ``gated z``);
    never_active_parts: optional reasons -> counts that the legend lists for the never-active bar.
    """
    frequency = np.asarray(frequency, dtype=float)
    never = int(np.sum(frequency <= 0))
    always = int(np.sum(frequency >= 1))
    between = 100.0 * frequency[(frequency > 0) & (frequency < 1)]
    low = 100.0 / max(num_images, 2)
    edges = np.logspace(np.log10(low) - 1e-9, 2, 25)
    fig = Figure(figsize=(8.0, 3.9), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(between, bins=edges, color="#4c72b0", label=f"active on some images: {between.size}")
    ax.set_xscale("log")
    left, right = low / 2.2, 145.0
    parts = ""
    if never_active_parts:
        parts = " (" + ", ".join(f"{name} {count}" for name, count in never_active_parts.items()) + ")"
    ax.bar([left], [never], width=low * 0.3, color="#c44e52", label=f"never active: {never}{parts}")
    ax.bar([right], [always], width=20.0, color="#55a868", label=f"active on every image: {always}")
    ax.set_xlim(left / 1.6, right * 1.3)
    ax.axvline(low, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(100.0, color="grey", linewidth=0.8, linestyle=":")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _percent_axis(value)))
    ax.set_xlabel("share of test images on which the dimension is non-zero (%, log scale)", fontsize=9)
    ax.set_ylabel("dimensions (count)", fontsize=9)
    ax.set_title(f"activation frequency of each dimension of {features} "
                 f"({frequency.size} dimensions, {num_images} test images)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center")
    return fig


def plot_activation_frequency(frequency: np.ndarray, num_images: int, path: str | Path, features: str,
                              never_active_parts: Mapping[str, int] | None = None) -> Path:
    """:func:`activation_frequency_figure` as a PNG."""
    return save_figure(activation_frequency_figure(frequency, num_images, features, never_active_parts), path)


# ----------------------------------------------------------------------------- image grid

def top_images_figure(images: np.ndarray, row_labels: Sequence[str], title: str, inches: float = 0.95) -> Figure:
    """A grid: one row per dimension, its most activating images left to right, the most
    activating first. An image grid has no axes to label; each row is named on its left.

    images: uint8 [K, M, 3, H, W] (or [K, M, H, W, 3]); row_labels: K names; inches: the side
    of one image.
    """
    images = np.asarray(images)
    if images.shape[2] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 1, 3, 4, 2)
    k, m = images.shape[:2]
    fig = Figure(figsize=(inches * m + 2.2, inches * k + 0.7), layout="constrained")
    axes = fig.subplots(k, m, squeeze=False)
    for row in range(k):
        for column in range(m):
            ax = axes[row, column]
            ax.imshow(images[row, column], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[row, 0].set_ylabel(row_labels[row], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_top_images(images: np.ndarray, row_labels: Sequence[str], path: str | Path, title: str,
                    inches: float = 0.95) -> Path:
    """:func:`top_images_figure` as a PNG."""
    return save_figure(top_images_figure(images, row_labels, title, inches), path)
