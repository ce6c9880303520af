"""The tables and figures of a result suite: ``results.md``, ``results.json``, ``sc_gain.png`` and
(with a sweep) ``sweep.png``, from the rows of :func:`bayesncl_pyro.experiments.suite.collect`."""
from __future__ import annotations

from typing import Any, Sequence

from bayesncl_pyro.experiments.figures import is_sweep_row, sc_gain_figure, sweep_heatmaps
from bayesncl_pyro.experiments.run_results import probe_mark, probe_note
from bayesncl_pyro.experiments.stats import format_mean_sd
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
COLUMNS = [
    ("sc_init", "SC init"), ("sc", "SC"), ("sc_gain", "SC gain"), ("entropy_freq", "entropy (freq)"),
    ("sparsity", "sparsity"), ("active_dims", "active dims"), ("open_rate", "gates open"),
    ("linear_top1", "linear top-1"), ("knn_top1", "k-NN top-1"), ("surrogate_neg_elbo", "surrogate −ELBO"),
    ("true_neg_elbo", "true −ELBO"),
    ("kl_share", "KL share"), ("train_seconds", "train s"),
]
PERCENT_OF_FRACTION = ("sparsity", "open_rate", "kl_share", "background_closed", "object_open")
"""Quantities stored as fractions and shown in % in the tables."""


def _cell(values: Sequence[Any], key: str) -> str:
    scale = 100.0 if key in PERCENT_OF_FRACTION else 1.0
    return format_mean_sd(values, digits=4 if key == "kl_share" else 2, scale=scale)


def _group_cell(group: list[dict[str, Any]], key: str) -> str:
    """A table cell over the runs of a group; linear top-1 marked when a probe did not converge."""
    text = _cell([r.get(key) for r in group], key)
    return text + probe_mark(group) if key == "linear_top1" else text


def method_tables(spec, rows: list[dict[str, Any]]) -> str:
    """One Markdown table per dataset: a row per method, mean ± sd over seeds."""
    parts = []
    for dataset in spec.datasets:
        head = "| method | " + " | ".join(label for _, label in COLUMNS) + " |"
        lines = [f"### {dataset}", "", head, "|" + "---|" * (len(COLUMNS) + 1)]
        shown = []
        for method in spec.methods:
            group = [r for r in rows if r["dataset"] == dataset and r["method"] == method and not is_sweep_row(r)]
            if group:
                lines.append(f"| {method} | " + " | ".join(_group_cell(group, k) for k, _ in COLUMNS) + " |")
                shown += group
        flagged = probe_note(shown, "name")
        parts.append("\n".join(lines) + (f"\n\n{flagged}" if flagged else ""))
    note = ("SC, entropy and sparsity are on the gated features of the test split (normalize(z) for "
            "ungated methods); SC init is the same network at its seeded initialisation; sparsity, gates "
            "open and KL share (KL term / loss, last tenth of training) in %; linear top-1 on frozen h "
            "(standardised, weight decay chosen on a validation split, solved to a stated tolerance; "
            "† where a probe did not meet it); "
            "surrogate −ELBO = the loss the estimator trains on and true −ELBO = Monte-Carlo "
            "E_q[InfoNCE] + KL (exact gate draws), both on the same fixed held-out batch. "
            "Mean ± sample sd over seeds; a single seed shows the mean alone.")
    return "\n\n".join(parts) + "\n\n" + note + "\n"


def sweep_table(spec, rows: list[dict[str, Any]]) -> str:
    if spec.sweep is None:
        return ""
    keys = list(spec.sweep.grid)
    cols = [("sc", "SC"), ("sc_gain", "SC gain"), ("open_rate", "gates open"), ("background_closed", "bg dims closed"),
            ("object_open", "object dims open"), ("linear_top1", "linear top-1")]
    lines = ["| " + " | ".join(keys) + " | " + " | ".join(c for _, c in cols) + " |",
             "|" + "---|" * (len(keys) + len(cols))]
    points = [r for r in rows if is_sweep_row(r)]
    for r in points:
        lines.append("| " + " | ".join(str(r[f"sweep:{k}"]) for k in keys) + " | "
                     + " | ".join(_group_cell([r], k) for k, _ in cols) + " |")
    note = probe_note(points, "name")
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def write_results(spec, results: dict[str, Any]) -> None:
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = results["rows"]
    figures = [sc_gain_figure(spec, rows, out / "sc_gain.png")]
    if spec.sweep is not None:
        figures.append(sweep_heatmaps(spec, rows, out / "sweep.png"))
    text = [f"# Suite `{spec.path.stem}`", "", method_tables(spec, rows)]
    if spec.sweep is not None:
        text += ["## Sweep", "", sweep_table(spec, rows)]
    text += ["Figures: " + ", ".join(f"`{p.name}`" for p in figures if p is not None), ""]
    atomic_write_text(out / RESULTS_MD, "\n".join(text))
    atomic_write_json(out / RESULTS_JSON, results)
