"""Figures of grids and suites: per-group metrics of an ablation grid, SC before and after training
and SC gain against linear probe per suite dataset, the paired differences of a suite's
comparisons, and the sweep heatmaps.

As in :mod:`bayesncl_pyro.evaluation.plots`, each figure has a builder of arrays (values in the
unit they show, shares in %) that returns a matplotlib ``Figure`` (no pyplot state), and a
``plot_*`` that saves it through :func:`bayesncl_pyro.evaluation.plots.save_figure`. Gathering the
arrays from result rows is the reports' job (:mod:`.ablation_report`, :mod:`.suite_report`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from bayesncl_pyro.evaluation.plots import literal_text, save_figure
from bayesncl_pyro.experiments.stats import mean_sd


def _error(sd: float) -> float:
    """An error bar's half-length: no bar for a single seed (sd undefined)."""
    return 0.0 if math.isnan(sd) else sd


def metrics_figure(labels: Sequence[str], values: Mapping[str, Sequence[Sequence[float]]],
                   axis_labels: Mapping[str, str], group_axis: str) -> Figure:
    """One panel per metric: per group the mean (square) with the sd as error bar, each seed a dot.

    ``values[metric][i]`` are the per-seed values of group ``labels[i]`` in the unit of
    ``axis_labels[metric]`` (the panel's y label); ``group_axis`` names what a group is (the x label).
    """
    metrics = list(values)
    fig = Figure(figsize=(min(12.0, max(6.0, 0.6 * len(labels) + 2.0) * 2), 8.0), layout="constrained")
    axes = fig.subplots(2, max(1, math.ceil(len(metrics) / 2)), squeeze=False).ravel()
    positions = list(range(len(labels)))
    for ax, metric in zip(axes, metrics):
        stats = [mean_sd(v) for v in values[metric]]
        ax.errorbar(positions, [s[0] for s in stats], yerr=[_error(s[1]) for s in stats], fmt="s",
                    color="#38598b", markersize=7, capsize=4, label="mean ± sd over seeds")
        for x, seeds in zip(positions, values[metric]):
            ax.plot([x] * len(seeds), seeds, "o", color="#c0504d", markersize=3, alpha=0.8)
        ax.set_title(literal_text(metric), fontsize=10)
        ax.set_ylabel(axis_labels.get(metric, literal_text(metric)), fontsize=9)
        ax.set_xlabel(group_axis, fontsize=9)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_xticks(positions)
        ax.set_xticklabels([literal_text(label) for label in labels], rotation=45, ha="right", fontsize=8)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if not labels:
        fig.text(0.5, 0.5, "no finished cells", ha="center", va="center")
    fig.suptitle("ablation: mean ± sd over seeds per group (squares), each seed a dot", fontsize=11)
    return fig


def plot_metrics(labels: Sequence[str], values: Mapping[str, Sequence[Sequence[float]]], path: str | Path,
                 axis_labels: Mapping[str, str] | None = None, group_axis: str = "group") -> Path:
    """:func:`metrics_figure` as a PNG."""
    return save_figure(metrics_figure(labels, values, axis_labels or {}, group_axis), path)


SC_GAIN_KEYS = ("sc_init", "sc", "linear_top1", "sc_gain")
"""What :func:`sc_gain_figure` reads for each method: per-seed SC at init and trained (%), linear
probe top-1 (%) and SC gain (points)."""


def sc_gain_figure(datasets: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]]) -> Figure:
    """Per dataset (a column): SC of gated z at initialisation and after training per method (bars,
    mean ± sd over seeds), and the SC gain against the linear-probe top-1 (one point per method).

    datasets: dataset -> method -> key of :data:`SC_GAIN_KEYS` -> per-seed values.
    """
    names = list(datasets) or ["(no runs)"]
    fig = Figure(figsize=(min(12.0, 4.8 * len(names)), 7.8), layout="constrained")
    axes = fig.subplots(2, len(names), squeeze=False)
    for col, dataset in enumerate(names):
        group = datasets.get(dataset, {})
        methods = list(group)
        x = np.arange(len(methods))
        ax = axes[0, col]
        for offset, key, label in ((-0.2, "sc_init", "at initialisation"), (0.2, "sc", "trained")):
            stats = [mean_sd(group[m].get(key, [])) for m in methods]
            ax.bar(x + offset, [s[0] for s in stats], 0.4, yerr=[_error(s[1]) for s in stats], label=label, capsize=3)
        ax.set_xticks(x, [literal_text(m) for m in methods], rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("method", fontsize=9)
        ax.set_ylabel("semantic consistency of gated z (%)", fontsize=9)
        ax.set_title(f"{literal_text(dataset)}: SC at initialisation and trained", fontsize=10)
        ax.legend(fontsize=8)
        ax = axes[1, col]
        for m in methods:
            gx = mean_sd(group[m].get("linear_top1", []))
            gy = mean_sd(group[m].get("sc_gain", []))
            ax.errorbar(gx[0], gy[0], xerr=_error(gx[1]), yerr=_error(gy[1]), fmt="o", capsize=3, label=literal_text(m))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("linear probe top-1 on h (%)", fontsize=9)
        ax.set_ylabel("SC gain from training (points)", fontsize=9)
        ax.set_title(f"{literal_text(dataset)}: SC gain vs linear probe (mean ± sd)", fontsize=10)
        if methods:
            ax.legend(fontsize=7)
    return fig


def plot_sc_gain(datasets: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], path: str | Path) -> Path:
    """:func:`sc_gain_figure` as a PNG."""
    return save_figure(sc_gain_figure(datasets), path)


PairedRow = tuple[str, float, float, float]
"""(label, mean difference, lower, upper) of one comparison on one metric, in points."""


def paired_differences_figure(datasets: Mapping[str, Sequence[PairedRow]], level: float = 0.95) -> Figure:
    """Per dataset (a row of panels, one above the other): each comparison's mean paired difference with its confidence
    interval as a horizontal bar, filled where the interval excludes 0, hollow where it does not.

    datasets: dataset -> rows (label, mean, lower, upper), differences in percentage points
    (NaN bounds: fewer than two pairs, drawn as the mean alone).
    """
    names = list(datasets) or ["(no comparisons)"]
    heights = [max(len(datasets.get(d, ())), 2) for d in names]
    fig = Figure(figsize=(10.0, 0.9 * len(names) + 0.27 * sum(heights)), layout="constrained")
    axes = fig.subplots(len(names), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, dataset in zip(axes, names):
        rows = list(datasets.get(dataset, ()))
        y = np.arange(len(rows))[::-1]
        for position, (_label, mean, lower, upper) in zip(y, rows):
            defined = math.isfinite(lower) and math.isfinite(upper)
            established = defined and (lower > 0 or upper < 0)
            if defined:
                ax.plot([lower, upper], [position, position], color="#38598b", lw=2)
            ax.plot([mean], [position], "o", color="#38598b", markersize=6,
                    markerfacecolor="#38598b" if established else "white")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(y, [literal_text(row[0]) for row in rows], fontsize=8)
        ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
        ax.set_xlabel(f"mean paired difference (points) with its {level:.0%} t interval", fontsize=9)
        ax.set_ylabel("comparison: metric", fontsize=9)
        ax.set_title(f"{literal_text(dataset)}: filled = interval excludes 0", fontsize=10)
        if not rows:
            ax.text(0.5, 0.5, "no comparisons", ha="center", va="center", transform=ax.transAxes)
    return fig


def plot_paired_differences(datasets: Mapping[str, Sequence[PairedRow]], path: str | Path) -> Path:
    """:func:`paired_differences_figure` as a PNG."""
    return save_figure(paired_differences_figure(datasets), path)


def sweep_figure(y_name: str, y_values: Sequence, x_name: str, x_values: Sequence,
                 grids: Mapping[str, np.ndarray]) -> Figure:
    """One heatmap per quantity over two sweep axes, each with its colour bar fitted to its values
    and every cell annotated.

    grids: title with unit -> [len(y_values), len(x_values)] values (nan where missing).
    """
    columns = min(3, max(1, len(grids)))
    rows = max(1, math.ceil(len(grids) / columns))
    fig = Figure(figsize=(4.0 * columns, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(grids):]:
        ax.set_visible(False)
    for ax, (title, grid) in zip(axes, grids.items()):
        grid = np.asarray(grid, dtype=float)
        finite = grid[np.isfinite(grid)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        high = high if high > low else low + 1
        image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=low, vmax=high)
        for (i, j), value in np.ndenumerate(grid):
            bright = not np.isnan(value) and (value - low) / (high - low) > 0.6  # viridis turns yellow
            ax.text(j, i, "no run" if np.isnan(value) else f"{value:.3g}", ha="center", va="center", fontsize=8,
                    color="black" if bright or np.isnan(value) else "white")
        ax.set_xticks(range(len(x_values)), [literal_text(v) for v in x_values], fontsize=8)
        ax.set_yticks(range(len(y_values)), [literal_text(v) for v in y_values], fontsize=8)
        ax.set_xlabel(literal_text(x_name), fontsize=9)
        ax.set_ylabel(literal_text(y_name), fontsize=9)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046).set_label(title, fontsize=8)
    fig.suptitle(f"sweep over {literal_text(y_name)} × {literal_text(x_name)}", fontsize=10)
    return fig


def plot_sweep(y_name: str, y_values: Sequence, x_name: str, x_values: Sequence, grids: Mapping[str, np.ndarray],
               path: str | Path) -> Path:
    """:func:`sweep_figure` as a PNG."""
    return save_figure(sweep_figure(y_name, y_values, x_name, x_values, grids), path)
