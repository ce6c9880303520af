"""Figures of the evaluation, the gate posterior and the training curves.

Each function takes arrays (numpy, or anything ``np.asarray`` accepts) and a path, draws one PNG
with matplotlib's Agg backend (no display, no global pyplot state) and writes it atomically.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bayesncl_pyro.storage.atomic import atomic_write_bytes  # noqa: E402

DPI = 110
HDI_PROB = 0.94


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Draw ``fig`` with the Agg canvas (no display, no pyplot state) and write it as PNG atomically."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_training_curves(curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                         path: str | Path) -> Path:
    """One panel per logged quantity, one line per run.

    curves: quantity (e.g. ``loss``, ``infonce``, ``kl``, ``open_rate``, ``probe_acc``) -> run label
    -> (steps [T], values [T]). A quantity no run logged is left out.
    """
    names = [name for name, runs in curves.items() if any(len(steps) for steps, _ in runs.values())]
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    fig = Figure(figsize=(4.2 * columns, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        for label, (steps, values) in curves[name].items():
            if len(steps):
                ax.plot(np.asarray(steps), np.asarray(values, dtype=float), label=label, linewidth=1.4)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if name in ("kl",) and all(np.all(np.asarray(v, dtype=float) > 0) for _, v in curves[name].values() if len(v)):
            ax.set_yscale("log")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if not names:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no logged steps", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    if len(next(iter(curves.values()), {})) > 1 and names:
        axes[0].legend(fontsize=8)
    return save_figure(fig, path)


def plot_forest(draws: Mapping[str, np.ndarray], dim_labels: Sequence[str], path: str | Path,
                hdi_prob: float = HDI_PROB, title: str = "") -> Path:
    """ArviZ forest plot: for each variable, each selected dimension's posterior mean and HDI.

    draws: variable name -> [chains, draws, K] (the same K selected dimensions for each);
    dim_labels: K names of those dimensions.
    """
    import arviz as az

    dims = {name: ["dim"] for name in draws}
    data = az.from_dict(posterior={name: np.asarray(value, dtype=float) for name, value in draws.items()},
                        coords={"dim": list(dim_labels)}, dims=dims)
    rows = len(dim_labels) * len(draws)
    fig = Figure(figsize=(6.5, 1.2 + 0.28 * rows), layout="constrained")
    ax = fig.add_subplot()
    az.plot_forest(data, combined=True, hdi_prob=hdi_prob, ax=ax, textsize=9)
    ax.set_title(title or f"gate-open rate, posterior mean and {int(round(hdi_prob * 100))} % HDI", fontsize=10)
    ax.set_xlim(-0.02, 1.02)
    return save_figure(fig, path)


def plot_class_heatmap(matrix: np.ndarray, class_names: Sequence[str], dim_labels: Sequence[str],
                       path: str | Path, title: str = "mean q(gate = 1 | x) per class") -> Path:
    """matrix: [C, D] values in [0, 1] (rows = classes, columns = dimensions in display order)."""
    matrix = np.asarray(matrix, dtype=float)
    c, d = matrix.shape
    fig = Figure(figsize=(min(18.0, 2.5 + 0.16 * d), 1.4 + 0.32 * c), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks(range(c), list(class_names), fontsize=8)
    step = max(1, d // 40)
    ax.set_xticks(range(0, d, step), [dim_labels[i] for i in range(0, d, step)], fontsize=7, rotation=90)
    ax.set_xlabel("dimension")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    return save_figure(fig, path)


def plot_activation_frequency(frequency: np.ndarray, num_images: int, path: str | Path) -> Path:
    """Histogram of each dimension's activation frequency (share of images where it is active),
    on a log axis from 1/num_images to 1; dead (0) and always-on (1) dimensions get their own
    marked bars, since a log axis cannot show 0.

    frequency: [D] values in [0, 1].
    """
    frequency = np.asarray(frequency, dtype=float)
    dead = int(np.sum(frequency <= 0))
    always = int(np.sum(frequency >= 1))
    between = frequency[(frequency > 0) & (frequency < 1)]
    low = 1.0 / max(num_images, 2)
    edges = np.logspace(np.log10(low) - 1e-9, 0, 25)
    fig = Figure(figsize=(7.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(between, bins=edges, color="#4c72b0", label=f"between: {between.size}")
    ax.set_xscale("log")
    left, right = low / 2.2, 1.45
    ax.bar([left], [dead], width=low * 0.3, color="#c44e52", label=f"dead (never active): {dead}")
    ax.bar([right], [always], width=0.2, color="#55a868", label=f"always on: {always}")
    ax.set_xlim(left / 1.6, right * 1.3)
    ax.axvline(low, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("activation frequency (share of test images, log scale)")
    ax.set_ylabel("dimensions")
    ax.set_title(f"per-dimension activation frequency ({frequency.size} dimensions, {num_images} images)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center")
    return save_figure(fig, path)


def plot_top_images(images: np.ndarray, row_labels: Sequence[str], path: str | Path,
                    title: str = "most activating test images per dimension") -> Path:
    """A grid: one row per dimension, its most activating images left to right.

    images: uint8 [K, M, 3, H, W] (or [K, M, H, W, 3]); row_labels: K names.
    """
    images = np.asarray(images)
    if images.shape[2] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 1, 3, 4, 2)
    k, m = images.shape[:2]
    fig = Figure(figsize=(0.95 * m + 1.3, 0.95 * k + 0.5), layout="constrained")
    axes = fig.subplots(k, m, squeeze=False)
    for row in range(k):
        for column in range(m):
            ax = axes[row, column]
            ax.imshow(images[row, column], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[row, 0].set_ylabel(row_labels[row], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
