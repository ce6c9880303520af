"""The reports of an ablation grid: ``ablation.csv``, ``ablation.md`` and ``ablation.png``.

Rows are dictionaries of axis values, ``status`` (done, skipped, failed), ``note`` and metrics
(None where missing), one per cell, as :func:`bayesncl_pyro.experiments.ablation.cell_row` makes them. The
markdown lists the cells, then mean ± sd over ``train.seed`` for every other combination of axes,
then the skipped and failed cells with the reason; the figure shows the same aggregates. The
markdown and the figure show the hard-gate open share in %; ``ablation.csv`` keeps the stored
values (``open_rate`` and ``sparsity`` as fractions, ``semantic_consistency``, ``probe_top1`` and
``linear_top1`` in %); a linear top-1 whose probe did not converge is marked †, and the linear top-1
column is there only when some cell was evaluated. A number that cannot be computed (NaN) reads
``not defined: <reason>``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from bayesncl_pyro.evaluation import glossary
from bayesncl_pyro.experiments.figures import plot_metrics
from bayesncl_pyro.experiments.run_results import probe_mark, probe_note
from bayesncl_pyro.experiments.stats import finite_values, format_mean_sd
from bayesncl_pyro.storage.atomic import atomic_write_text

SEED_KEY = "train.seed"
METRICS = ("final_loss", "surrogate_negative_elbo", "true_negative_elbo", "open_rate", "semantic_consistency")
METRIC_LABELS = {
    "final_loss": ("final loss (nats)", 1.0),
    "surrogate_negative_elbo": ("surrogate neg. ELBO (nats)", 1.0),
    "true_negative_elbo": ("true neg. ELBO (nats)", 1.0),
    "open_rate": ("hard-gate open share (%)", 100.0),
    "semantic_consistency": ("semantic consistency of gated z (%)", 1.0),
}
"""How the markdown and the figure name each metric, with its unit, and the factor from the stored
value (``open_rate`` is stored as a fraction in ablation.csv, shown in %)."""
CSV_METRICS = ("final_loss", "surrogate_negative_elbo", "true_negative_elbo", "true_negative_elbo_stderr", "true_infonce", "true_kl",
               "open_rate", "semantic_consistency", "probe_top1", "linear_top1", "linear_converged", "sparsity", "steps")


def group_over_seeds(rows: list[dict[str, Any]], axes: Sequence[str]) -> list[tuple[tuple, dict[str, list[float]]]]:
    """Finished rows grouped by every axis but ``train.seed``: [(axis values, metric -> values)]."""
    return [(key, {m: [v for r in group for v in finite_values([r.get(m)])] for m in METRICS})
            for key, group in _groups(rows, axes)]


def _groups(rows: list[dict[str, Any]], axes: Sequence[str]) -> list[tuple[tuple, list[dict[str, Any]]]]:
    """Finished rows grouped by every axis but ``train.seed``: [(axis values, rows)]."""
    group_axes = [a for a in axes if a != SEED_KEY]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "done":
            groups.setdefault(tuple(row[a] for a in group_axes), []).append(row)
    return list(groups.items())


def _linear(rows: list[dict[str, Any]]) -> str:
    """Linear-probe top-1 (mean ± sd; from eval.json, '-' where no cell was evaluated), marked †
    when a probe did not converge."""
    return format_mean_sd([r.get("linear_top1") for r in rows], digits=2, missing="-") + probe_mark(rows)


def _fmt(value: Any, digits: int = 4, name: str = "") -> str:
    """A cell: None (not measured) as "-", NaN as ``not defined: <reason>`` of key ``name``."""
    if value is None:
        return "-"
    if glossary.is_undefined(value):
        return glossary.not_defined(name)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _elbo(row: dict[str, Any]) -> str:
    """The true negative ELBO ± its standard error (nats)."""
    value, stderr = row["true_negative_elbo"], row.get("true_negative_elbo_stderr")
    if value is None or glossary.is_undefined(value) or stderr is None:
        return _fmt(value)
    return f"{value:.4f} ± {_fmt(stderr)}"


def _evaluated(rows: list[dict[str, Any]]) -> bool:
    """Whether some cell has a linear-probe top-1 (``bayesncl-eval`` ran on it): the column is
    left out of the tables otherwise, rather than shown empty."""
    return any(r.get("linear_top1") is not None for r in rows if r["status"] != "skipped")


def markdown_report(spec, rows: list[dict[str, Any]]) -> str:
    """``spec``: the :class:`~bayesncl_pyro.experiments.ablation_plan.AblationSpec` the rows come from."""
    axes = list(spec.grid)
    group_axes = [a for a in axes if a != SEED_KEY]
    lines = ["# Ablation", "",
             f"base config: `{spec.base if spec.base is not None else '(defaults)'}`; "
             f"overrides: `{' '.join(spec.overrides) or '(none)'}`; "
             f"true negative ELBO: {spec.true_elbo.samples} exact gate samples on the first data.batch_size "
             f"test images, seed {spec.true_elbo.seed}. Mean ± sd over seeds uses the sample sd; a "
             f"single seed shows the mean alone. " + (
                 "Linear top-1 is the linear probe of a cell's eval.json (`bayesncl-eval` on its directory; - "
                 "where none), † where that probe did not converge." if _evaluated(rows) else
                 "No cell was evaluated, so there is no linear top-1 column (`bayesncl-eval` on a cell's "
                 "directory adds it)."), "",
             "## Cells", ""]
    linear = _evaluated(rows)
    header = [*axes, "status", "final loss (nats)", "surrogate neg. ELBO (nats)", "true neg. ELBO (± s.e., nats)",
              "hard-gate open share (%)", "semantic consistency of gated z (%)",
              *(["linear top-1 (h, %)"] if linear else [])]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row["status"] == "skipped":
            continue
        cells = [*(_fmt(row[a]) for a in axes), row["status"], _fmt(row["final_loss"], name="final_loss"),
                 _fmt(row.get("surrogate_negative_elbo")), _elbo(row),
                 _fmt(None if row["open_rate"] is None else 100.0 * row["open_rate"], 2),
                 _fmt(row["semantic_consistency"], 2, "semantic_consistency"), *([_linear([row])] if linear else [])]
        lines.append("| " + " | ".join(cells) + " |")
    flagged = probe_note([r for r in rows if r["status"] != "skipped"], "cell")
    if flagged:
        lines += ["", flagged]
    grouped = group_over_seeds(rows, axes)
    if grouped:
        lines += ["", f"## Mean ± sd over {SEED_KEY}", ""]
        header = [*group_axes, "runs", *(METRIC_LABELS[m][0] for m in METRICS),
                  *(["linear top-1 (h, %)"] if linear else [])]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for key, group in _groups(rows, axes):
            lines.append("| " + " | ".join([*(_fmt(k) for k in key), str(len(group)),
                                            *(format_mean_sd([r.get(m) for r in group], scale=METRIC_LABELS[m][1],
                                                             missing="-", undefined=glossary.not_defined(m))
                                              for m in METRICS),
                                            *([_linear(group)] if linear else [])]) + " |")
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


def write_reports(spec, rows: list[dict[str, Any]]) -> tuple[Path, Path, Path]:
    """Write the three reports into ``spec.out_dir``; returns their paths (csv, md, png)."""
    axes = list(spec.grid)
    csv_path = atomic_write_text(spec.out_dir / "ablation.csv", csv_report(rows, axes))
    md_path = atomic_write_text(spec.out_dir / "ablation.md", markdown_report(spec, rows))
    grouped = group_over_seeds(rows, axes)
    labels = ["/".join(_fmt(k) for k in key) or "all" for key, _ in grouped]
    values = {m: [[v * METRIC_LABELS[m][1] for v in metrics[m]] for _, metrics in grouped] for m in METRICS}
    png_path = plot_metrics(labels, values, spec.out_dir / "ablation.png",
                            axis_labels={m: label for m, (label, _) in METRIC_LABELS.items()},
                            group_axis=" / ".join(a for a in axes if a != SEED_KEY) or "all cells")
    return csv_path, md_path, png_path
