"""The tables and figures of a result suite: ``results.md``, ``results.json``, ``sc_gain.png``,
(with comparisons) ``paired_differences.png`` and (with a sweep) ``sweep.png``, from the rows of :func:`bayesncl_pyro.experiments.suite.collect`.

Tables show shares in % (the README's Glossary), "–" for a number not measured (a run not yet
evaluated) and ``not defined: <reason>`` for one measured but undefined; ``results.json`` keeps the
rows as stored (the latter as NaN), with the shares of :data:`PERCENT_OF_FRACTION` as fractions."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from bayesncl_pyro.evaluation import glossary
from bayesncl_pyro.experiments.figures import SC_GAIN_KEYS, plot_paired_differences, plot_sc_gain, plot_sweep
from bayesncl_pyro.experiments.run_results import NOT_CONVERGED_MARK, probe_mark, probe_note
from bayesncl_pyro.experiments.stats import format_mean_sd
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
COLUMNS = [
    ("sc_init", "SC init (%)"), ("sc", "SC (%)"), ("sc_gain", "SC gain (points)"),
    ("sc_sampled_gain", "SC gain, drawn gates (points)"),
    ("sc_supported_gain", "supported SC gain (points)"), ("sc_weighted_gain", "weighted SC gain (points)"),
    ("entropy_freq", "entropy (freq, nats)"), ("sparsity", "sparsity (%)"), ("active_dims", "active dims (gated z)"),
    ("open_rate", "hard-gate open share (%)"), ("linear_top1", "linear top-1 (%)"), ("knn_top1", "k-NN top-1 (%)"),
    ("surrogate_neg_elbo", "surrogate −ELBO (nats)"), ("true_neg_elbo", "true −ELBO (nats)"),
    ("kl_share", "KL share (%)"), ("train_seconds", "training time (s)"),
]
PAIRING_COLUMNS = [("linear_top1_agrees", "linear top-1, bg agrees (%)"),
                   ("linear_top1_disagrees", "linear top-1, bg disagrees (%)"), ("linear_top1_gap", "bg gap (points)")]
"""Shown when a dataset ties the background to the class in training (the spurious-background variant)."""
PERCENT_OF_FRACTION = ("sparsity", "open_rate", "kl_share", "background_closed", "object_open")
"""Row keys stored as fractions and shown in % in the tables (``background_closed`` and ``object_open``
are the factor check's ``background_closed_share`` and ``object_open_share``)."""


def is_sweep_row(row: dict[str, Any]) -> bool:
    """Whether a suite row is a point of the sweep rather than a method × seed run."""
    return any(key.startswith("sweep:") for key in row)


def _method_rows(rows: list[dict[str, Any]], dataset: str, method: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["dataset"] == dataset and r["method"] == method and not is_sweep_row(r)]


WHOLE_NUMBERS = ("active_dims", "train_seconds")
"""Columns of counts and seconds: shown without decimals."""


GLOSSARY_KEYS = {
    "sc_init": "semantic_consistency", "sc": "semantic_consistency", "sc_gain": "semantic_consistency",
    "sc_sampled_gain": "semantic_consistency", "sc_supported_gain": "semantic_consistency_supported",
    "sc_weighted_gain": "semantic_consistency_weighted", "entropy_freq": "semantic_entropy_frequency",
    "background_closed": "background_closed_share", "object_open": "object_open_share",
}
"""Row key -> the eval.json key whose "not defined" reason it shares (a gain is not defined when the
SC at initialisation or after training is not); other row keys are their eval.json keys."""


def _cell(values: Sequence[Any], key: str) -> str:
    """Mean ± sd of a column over runs: "–" when no run measured it (not evaluated yet), ``not
    defined: <reason>`` when every run that did found it undefined (nan, a null in eval.json)."""
    scale = 100.0 if key in PERCENT_OF_FRACTION else 1.0
    digits = 0 if key in WHOLE_NUMBERS else 4 if key == "kl_share" else 2
    return format_mean_sd(values, digits=digits, scale=scale,
                          undefined=glossary.not_defined(GLOSSARY_KEYS.get(key, key)))


def _group_cell(group: list[dict[str, Any]], key: str) -> str:
    """A table cell over the runs of a group; linear top-1 marked when a probe did not converge."""
    text = _cell([r.get(key) for r in group], key)
    return text + probe_mark(group) if key.startswith("linear_top1") else text


def method_tables(spec, rows: list[dict[str, Any]]) -> str:
    """One Markdown table per dataset: a row per method, mean ± sd over seeds."""
    parts = []
    for dataset in spec.datasets:
        paired = any(r.get("linear_top1_agrees") is not None for r in rows if r["dataset"] == dataset)
        columns = COLUMNS + (PAIRING_COLUMNS if paired else [])
        head = "| method | " + " | ".join(label for _, label in columns) + " |"
        lines = [f"### {dataset}", "", head, "|" + "---|" * (len(columns) + 1)]
        shown = []
        for method in spec.methods:
            group = _method_rows(rows, dataset, method)
            if group:
                lines.append(f"| {method} | " + " | ".join(_group_cell(group, k) for k, _ in columns) + " |")
                shown += group
        flagged = probe_note(shown, "name")
        parts.append("\n".join(lines) + (f"\n\n{flagged}" if flagged else ""))
    note = ("SC, entropy, sparsity and active dims are on gated z of the test split (normalize(z) for "
            "ungated methods); SC init is the same network at its seeded initialisation; \"SC gain, "
            "drawn gates\" is the same gain on gated z with drawn gates, m ~ Bern(q(gate = 1 | x)), instead of "
            "the thresholded test-time gate (equal to SC gain for ungated methods); supported SC = SC over the "
            "dimensions active on at least 1 % of the test images, weighted SC = share of active entries in "
            "their dimension's majority class (gains: trained − initialisation, thresholded gates); shares in % "
            "(KL share = KL term / loss, last tenth of training); linear top-1 on frozen h "
            "(standardised, weight decay chosen on a validation split, solved to a stated tolerance; "
            "† where a probe did not meet it); "
            "surrogate −ELBO = the loss the estimator trains on and true −ELBO = Monte-Carlo "
            "E_q[InfoNCE] + KL (exact gate draws), both on the same fixed held-out batch. "
            "Mean ± sample sd over seeds; a single seed shows the mean alone. Where the training split "
            "ties the background to the class, linear top-1 is also shown on the test images whose "
            "background agrees / disagrees with that pairing, and bg gap = agrees − disagrees.")
    return "\n\n".join(parts) + "\n\n" + note + "\n"


def sweep_table(spec, rows: list[dict[str, Any]]) -> str:
    if spec.sweep is None:
        return ""
    keys = list(spec.sweep.grid)
    cols = [("sc", "SC (%)"), ("sc_gain", "SC gain (points)"), ("open_rate", "hard-gate open share (%)"),
            ("background_closed", "bg dims closed (%)"), ("object_open", "object dims open (%)"),
            ("linear_top1", "linear top-1 (%)")]
    lines = ["| " + " | ".join(keys) + " | " + " | ".join(c for _, c in cols) + " |",
             "|" + "---|" * (len(keys) + len(cols))]
    points = [r for r in rows if is_sweep_row(r)]
    for r in points:
        lines.append("| " + " | ".join(str(r[f"sweep:{k}"]) for k in keys) + " | "
                     + " | ".join(_group_cell([r], k) for k, _ in cols) + " |")
    note = probe_note(points, "name")
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def comparison_tables(spec, comparisons: list[dict[str, Any]]) -> str:
    """One table per dataset: for each comparison and metric, the pairs, the mean paired
    difference, its 95 % t interval and whether the interval excludes 0."""
    if not comparisons:
        return ""
    parts = []
    for dataset in spec.datasets:
        entries = [c for c in comparisons if c["dataset"] == dataset]
        lines = [f"### {dataset}", "", "| comparison | metric | pairs | mean difference | 95 % CI | CI excludes 0 |",
                 "|---|---|---|---|---|---|"]
        for c in entries:
            scale = 100.0 if c["metric"] in PERCENT_OF_FRACTION else 1.0
            mark = f" {NOT_CONVERGED_MARK}" if c["probe_not_converged"] else ""
            mean = "–" if c["pairs"] == 0 else f"{c['mean'] * scale:+.2f}{mark}"
            interval = "–" if c["pairs"] < 2 else f"[{c['lower'] * scale:+.2f}, {c['upper'] * scale:+.2f}]"
            verdict = "–" if c["pairs"] < 2 else ("yes" if c["excludes_zero"] else "no")
            lines.append(f"| {c['label']} | {c['metric']} | {c['pairs']} | {mean} | {interval} | {verdict} |")
        flagged = sorted({name for c in entries for name in c["probe_not_converged"]})
        if flagged:
            lines += ["", f"{NOT_CONVERGED_MARK} a linear probe of the pairs did not converge: {', '.join(flagged)}."]
        parts.append("\n".join(lines))
    note = ("Mean of method − against over the seeds both have finished (runs of one seed share the "
            "initialisation, data order and augmentations), with the two-sided 95 % t interval "
            "mean ± t(0.975, n − 1) · sd / √n; \"CI excludes 0\" = the difference is established at that "
            "level. Percentages as in the tables above.")
    return "\n\n".join(parts) + "\n\n" + note + "\n"


POINT_METRICS_PREFIXES = ("sc", "linear_top1", "knn_top1")
"""Comparison metrics whose differences are percentage points (with :data:`PERCENT_OF_FRACTION`):
what the paired-differences figure shows; the others (nats, counts) stay in the table."""


def paired_rows(spec, comparisons: list[dict[str, Any]]) -> dict[str, list[tuple[str, float, float, float]]]:
    """dataset -> (label, mean, lower, upper) in points of every comparison on a metric in points."""
    def number(value: Any) -> float:
        return math.nan if value is None else float(value)

    out: dict[str, list[tuple[str, float, float, float]]] = {}
    for dataset in spec.datasets:
        rows = []
        for c in comparisons:
            metric = c["metric"]
            in_points = metric.startswith(POINT_METRICS_PREFIXES) or metric in PERCENT_OF_FRACTION
            if c["dataset"] != dataset or c["pairs"] == 0 or not in_points:
                continue
            scale = 100.0 if metric in PERCENT_OF_FRACTION else 1.0
            rows.append((f"{c['label']}: {metric} (n={c['pairs']})", number(c["mean"]) * scale,
                         number(c["lower"]) * scale, number(c["upper"]) * scale))
        out[dataset] = rows
    return out


def write_results(spec, results: dict[str, Any]) -> None:
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = results["rows"]
    figures = [plot_sc_gain(sc_gain_values(spec, rows), out / "sc_gain.png")]
    if spec.sweep is not None and len(spec.sweep.grid) >= 2:
        figures.append(plot_sweep(*sweep_grids(spec, rows), out / "sweep.png"))
    if results.get("comparisons"):
        figures.append(plot_paired_differences(paired_rows(spec, results["comparisons"]), out / "paired_differences.png"))
    text = [f"# Suite `{spec.path.stem}`", "", method_tables(spec, rows)]
    if results.get("comparisons"):
        text += ["## Paired differences", "", comparison_tables(spec, results["comparisons"])]
    if spec.sweep is not None:
        text += ["## Sweep", "", sweep_table(spec, rows)]
    text += ["Figures: " + ", ".join(f"`{p.name}`" for p in figures if p is not None), ""]
    atomic_write_text(out / RESULTS_MD, "\n".join(text))
    atomic_write_json(out / RESULTS_JSON, results)


def sc_gain_values(spec, rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list]]]:
    """dataset -> method -> key of ``SC_GAIN_KEYS`` -> per-seed values, for the methods that ran."""
    return {dataset: {method: {key: [r.get(key) for r in group] for key in SC_GAIN_KEYS}
                      for method in spec.methods if (group := _method_rows(rows, dataset, method))}
            for dataset in spec.datasets}


SWEEP_QUANTITIES = (("sc", "SC (%)"), ("sc_gain", "SC gain (points)"), ("open_rate", "hard-gate open share (%)"),
                    ("background_closed", "background dims closed (%)"), ("object_open", "object dims open (%)"))


def sweep_grids(spec, rows: list[dict[str, Any]]) -> tuple[str, list, str, list, dict[str, np.ndarray]]:
    """(y axis key, its values, x axis key, its values, title -> grid) over the first two sweep axes,
    in the units the titles name."""
    keys = list(spec.sweep.grid)
    ya, xa = keys[0], keys[1]
    yv, xv = spec.sweep.grid[ya], spec.sweep.grid[xa]
    grids = {}
    for key, title in SWEEP_QUANTITIES:
        grid = np.full((len(yv), len(xv)), np.nan)
        for r in rows:
            if f"sweep:{ya}" in r and r.get(key) is not None:
                scale = 100.0 if key in PERCENT_OF_FRACTION else 1.0
                grid[yv.index(r[f"sweep:{ya}"]), xv.index(r[f"sweep:{xa}"])] = r[key] * scale
        grids[title] = grid
    return ya, yv, xa, xv, grids
