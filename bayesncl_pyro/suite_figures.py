"""Figures of a result suite: SC gain from training against linear-probe accuracy, and the sweep
heatmaps. Functions of the suite's rows and a path; nothing else."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _stats(values: Sequence[Any]) -> tuple[float, float]:
    clean = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not clean:
        return math.nan, math.nan
    return float(np.mean(clean)), float(np.std(clean, ddof=1)) if len(clean) > 1 else 0.0


def sc_gain_figure(spec, rows: list[dict[str, Any]], path: Path) -> Path:
    """Per dataset: SC after training vs at initialisation (bars), and SC gain vs linear top-1."""
    datasets = list(spec.datasets)
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.2 * len(datasets), 7.5), squeeze=False)
    for col, dataset in enumerate(datasets):
        methods = [m for m in spec.methods if any(r["dataset"] == dataset and r["method"] == m for r in rows)]
        group = {m: [r for r in rows if r["dataset"] == dataset and r["method"] == m
                     and not any(k.startswith("sweep:") for k in r)] for m in methods}
        x = np.arange(len(methods))
        ax = axes[0, col]
        for offset, key, label in ((-0.2, "sc_init", "at init"), (0.2, "sc", "trained")):
            stats = [_stats([r.get(key) for r in group[m]]) for m in methods]
            ax.bar(x + offset, [s[0] for s in stats], 0.4, yerr=[s[1] for s in stats], label=label, capsize=3)
        ax.set_xticks(x, methods, rotation=30, ha="right")
        ax.set_ylabel("semantic consistency (%)")
        ax.set_title(dataset)
        ax.legend(fontsize=8)
        ax = axes[1, col]
        for m in methods:
            gx = _stats([r.get("linear_top1") for r in group[m]])
            gy = _stats([r.get("sc_gain") for r in group[m]])
            ax.errorbar(gx[0], gy[0], xerr=gx[1], yerr=gy[1], fmt="o", capsize=3, label=m)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("linear probe top-1 on h (%)")
        ax.set_ylabel("SC gain from training (points)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def sweep_heatmaps(spec, rows: list[dict[str, Any]], path: Path) -> Path | None:
    """One heatmap per quantity over the first two sweep axes."""
    keys = list(spec.sweep.grid)
    if len(keys) < 2:
        return None
    ya, xa = keys[0], keys[1]
    yv, xv = spec.sweep.grid[ya], spec.sweep.grid[xa]
    quantities = [("sc", "SC (%)"), ("sc_gain", "SC gain"), ("open_rate", "gates open"),
                  ("background_closed", "background dims closed"), ("object_open", "object dims open")]
    fig, axes = plt.subplots(1, len(quantities), figsize=(3.3 * len(quantities), 3.2))
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
    return _save(fig, path)
