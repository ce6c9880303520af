"""The reports of an ablation grid: ``ablation.csv``, ``ablation.md`` and ``ablation.png``.

Rows are dictionaries of axis values, ``status`` (done, skipped, failed), ``note`` and metrics
(None where missing), one per cell, as :func:`bayesncl_pyro.ablation.cell_row` makes them. The
markdown lists the cells, then mean ± sd over ``train.seed`` for every other combination of axes,
then the skipped and failed cells with the reason; the figure shows the same aggregates.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from .io import atomic_write_bytes, atomic_write_text

SEED_KEY = "train.seed"
METRICS = ("final_loss", "surrogate_negative_elbo", "true_negative_elbo", "open_rate", "semantic_consistency")
CSV_METRICS = ("final_loss", "surrogate_negative_elbo", "true_negative_elbo", "true_negative_elbo_stderr", "true_infonce", "true_kl",
               "open_rate", "semantic_consistency", "probe_top1", "sparsity", "steps")


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value) of finite numbers."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, sd


def group_over_seeds(rows: list[dict[str, Any]], axes: Sequence[str]) -> list[tuple[tuple, dict[str, list[float]]]]:
    """Finished rows grouped by every axis but ``train.seed``: [(axis values, metric -> values)]."""
    group_axes = [a for a in axes if a != SEED_KEY]
    groups: dict[tuple, dict[str, list[float]]] = {}
    for row in rows:
        if row["status"] != "done":
            continue
        metrics = groups.setdefault(tuple(row[a] for a in group_axes), {m: [] for m in METRICS})
        for m in METRICS:
            if isinstance(row[m], (int, float)) and math.isfinite(row[m]):
                metrics[m].append(float(row[m]))
    return list(groups.items())


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    mean, sd = mean_sd(values)
    return f"{mean:.4f}" if math.isnan(sd) else f"{mean:.4f} ± {sd:.4f}"


def markdown_report(spec, rows: list[dict[str, Any]]) -> str:
    """``spec``: the :class:`bayesncl_pyro.ablation.AblationSpec` the rows come from."""
    axes = list(spec.grid)
    group_axes = [a for a in axes if a != SEED_KEY]
    lines = ["# Ablation", "",
             f"base config: `{spec.base if spec.base is not None else '(defaults)'}`; "
             f"overrides: `{' '.join(spec.overrides) or '(none)'}`; "
             f"true negative ELBO: {spec.true_elbo_samples} exact gate samples on the first data.batch_size "
             f"test images, seed {spec.true_elbo_seed}.", "",
             "## Cells", ""]
    header = [*axes, "status", "final loss", "surrogate neg. ELBO", "true neg. ELBO (± s.e.)", "open rate",
              "semantic consistency"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row["status"] == "skipped":
            continue
        elbo = "-" if row["true_negative_elbo"] is None else \
            f"{row['true_negative_elbo']:.4f} ± {row['true_negative_elbo_stderr']:.4f}"
        cells = [*(_fmt(row[a]) for a in axes), row["status"], _fmt(row["final_loss"]),
                 _fmt(row.get("surrogate_negative_elbo")), elbo,
                 _fmt(row["open_rate"]), _fmt(row["semantic_consistency"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    grouped = group_over_seeds(rows, axes)
    if grouped:
        lines += ["", f"## Mean ± sd over {SEED_KEY}", ""]
        header = [*group_axes, "runs", *METRICS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key, metrics in grouped:
            runs = max(len(v) for v in metrics.values())
            lines.append("| " + " | ".join([*(_fmt(k) for k in key), str(runs),
                                            *(_fmt_mean_sd(metrics[m]) for m in METRICS)]) + " |")
    problems = [r for r in rows if r["status"] != "done"]
    if problems:
        lines += ["", "## Skipped and failed cells", ""]
        lines += [f"- `{r['cell']}` ({r['status']}): {r['note']}" for r in problems]
    return "\n".join(lines) + "\n"


def csv_report(rows: list[dict[str, Any]], axes: Sequence[str]) -> str:
    columns = ["cell", *axes, "status", "note", *CSV_METRICS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buffer.getvalue()


def plot_metrics(labels: Sequence[str], values: dict[str, list[list[float]]], path: str | Path) -> Path:
    """One panel per metric: per group the mean (square) with the sd as error bar, each seed a dot.

    ``values[metric][i]`` are the per-seed values of group ``labels[i]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = list(values)
    fig = Figure(figsize=(max(6.0, 0.6 * len(labels) + 2.0) * 2, 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, math.ceil(len(metrics) / 2), squeeze=False).ravel()
    positions = list(range(len(labels)))
    for ax, metric in zip(axes, metrics):
        means = [mean_sd(v)[0] if v else math.nan for v in values[metric]]
        sds = [mean_sd(v)[1] if len(v) > 1 else 0.0 for v in values[metric]]
        ax.errorbar(positions, means, yerr=sds, fmt="s", color="#38598b", markersize=7, capsize=4)
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write_bytes(path, buffer.getvalue())


def write_reports(spec, rows: list[dict[str, Any]]) -> tuple[Path, Path, Path]:
    """Write the three reports into ``spec.out_dir``; returns their paths (csv, md, png)."""
    axes = list(spec.grid)
    csv_path = atomic_write_text(spec.out_dir / "ablation.csv", csv_report(rows, axes))
    md_path = atomic_write_text(spec.out_dir / "ablation.md", markdown_report(spec, rows))
    grouped = group_over_seeds(rows, axes)
    labels = ["/".join(_fmt(k) for k in key) or "all" for key, _ in grouped]
    png_path = plot_metrics(labels, {m: [metrics[m] for _, metrics in grouped] for m in METRICS},
                            spec.out_dir / "ablation.png")
    return csv_path, md_path, png_path
