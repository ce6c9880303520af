"""Figures of grids and suites: per-group metrics of an ablation grid, SC gain against linear
probe per suite dataset, and the sweep heatmaps. Functions of rows (or values) and a path; each
draws on a matplotlib ``Figure`` (no pyplot state) and saves through
:func:`bayesncl_pyro.evaluation.plots.save_figure`."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from bayesncl_pyro.evaluation.plots import save_figure
from bayesncl_pyro.experiments.stats import mean_sd


def _error(sd: float) -> float:
    """An error bar's half-length: no bar for a single seed (sd undefined)."""
    return 0.0 if math.isnan(sd) else sd


def plot_metrics(labels: Sequence[str], values: dict[str, list[list[float]]], path: str | Path) -> Path:
    """One panel per metric: per group the mean (square) with the sd as error bar, each seed a dot.

    ``values[metric][i]`` are the per-seed values of group ``labels[i]``.
    """
    metrics = list(values)
    fig = Figure(figsize=(max(6.0, 0.6 * len(labels) + 2.0) * 2, 7.5))
    axes = fig.subplots(2, math.ceil(len(metrics) / 2), squeeze=False).ravel()
    positions = list(range(len(labels)))
    for ax, metric in zip(axes, metrics):
        stats = [mean_sd(v) for v in values[metric]]
        ax.errorbar(positions, [s[0] for s in stats], yerr=[_error(s[1]) for s in stats], fmt="s",
                    color="#38598b", markersize=7, capsize=4)
        for x, seeds in zip(positions, values[metric]):
            ax.plot([x] * len(seeds), seeds, "o", color="#c0504d", markersize=3, alpha=0.8)
        ax.set_title(metric)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if not labels:
        fig.text(0.5, 0.5, "no finished cells", ha="center", va="center")
    fig.tight_layout()
    return save_figure(fig, path)


def _method_rows(rows: list[dict[str, Any]], dataset: str, method: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["dataset"] == dataset and r["method"] == method and not is_sweep_row(r)]


def is_sweep_row(row: dict[str, Any]) -> bool:
    """Whether a suite row is a point of the sweep rather than a method × seed run."""
    return any(key.startswith("sweep:") for key in row)


def sc_gain_figure(spec, rows: list[dict[str, Any]], path: Path) -> Path:
    """Per dataset: SC after training vs at initialisation (bars), and SC gain vs linear top-1."""
    datasets = list(spec.datasets)
    fig = Figure(figsize=(5.2 * len(datasets), 7.5))
    axes = fig.subplots(2, len(datasets), squeeze=False)
    for col, dataset in enumerate(datasets):
        methods = [m for m in spec.methods if _method_rows(rows, dataset, m)]
        group = {m: _method_rows(rows, dataset, m) for m in methods}
        x = np.arange(len(methods))
        ax = axes[0, col]
        for offset, key, label in ((-0.2, "sc_init", "at init"), (0.2, "sc", "trained")):
            stats = [mean_sd(r.get(key) for r in group[m]) for m in methods]
            ax.bar(x + offset, [s[0] for s in stats], 0.4, yerr=[_error(s[1]) for s in stats], label=label, capsize=3)
        ax.set_xticks(x, methods, rotation=30, ha="right")
        ax.set_ylabel("semantic consistency (%)")
        ax.set_title(dataset)
        ax.legend(fontsize=8)
        ax = axes[1, col]
        for m in methods:
            gx = mean_sd(r.get("linear_top1") for r in group[m])
            gy = mean_sd(r.get("sc_gain") for r in group[m])
            ax.errorbar(gx[0], gy[0], xerr=_error(gx[1]), yerr=_error(gy[1]), fmt="o", capsize=3, label=m)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("linear probe top-1 on h (%)")
        ax.set_ylabel("SC gain from training (points)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def sweep_heatmaps(spec, rows: list[dict[str, Any]], path: Path) -> Path | None:
    """One heatmap per quantity over the first two sweep axes."""
    keys = list(spec.sweep.grid)
    if len(keys) < 2:
        return None
    ya, xa = keys[0], keys[1]
    yv, xv = spec.sweep.grid[ya], spec.sweep.grid[xa]
    quantities = [("sc", "SC (%)"), ("sc_gain", "SC gain"), ("open_rate", "gates open"),
                  ("background_closed", "background dims closed"), ("object_open", "object dims open")]
    fig = Figure(figsize=(3.3 * len(quantities), 3.2))
    axes = fig.subplots(1, len(quantities))
    for ax, (key, title) in zip(axes, quantities):
        grid = np.full((len(yv), len(xv)), np.nan)
        for r in rows:
            if f"sweep:{ya}" in r and r.get(key) is not None:
                grid[yv.index(r[f"sweep:{ya}"]), xv.index(r[f"sweep:{xa}"])] = r[key]
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2g}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(xv)), [str(v) for v in xv], fontsize=7)
        ax.set_yticks(range(len(yv)), [str(v) for v in yv], fontsize=7)
        ax.set_xlabel(xa.split(".")[-1])
        ax.set_ylabel(ya.split(".")[-1])
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)
