"""One self-contained HTML page for one run or several side by side: first a one-screen summary
of each run (method, data, the main numbers with units, a link to its feature browser when
``bayesncl-browse`` made one, its best and worst dimensions with their top images), then the
details: training curves, evaluation tables, the ArviZ summary of the gate posterior and its
figures (PNG embedded as base64), and the glossary of the words it uses.

The report only gathers what the run directories hold (``metrics.jsonl``, ``eval.json``,
``eval_init.json``, ``dims.json``, ``gates_summary.csv`` and the figures of ``bayesncl-inspect``);
it computes nothing heavier than the training-curve figure, and says which command fills a
missing part. Each derived file is checked against the checkpoint step it was made from
(:mod:`.provenance`): a stale one, or one of unknown step, is marked on the page and in the
printed summary; a damaged one (not JSON of the expected shape, not a PNG, a CSV that does not
parse) is one error line naming it and the command that writes it again. A figure is shown at
its natural size when the page is wide enough (runs side by side where they fit, else one under
the other), and never narrower than the page allows.
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import math
import os
import re
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayesncl_pyro.config import read_yaml_mapping
from bayesncl_pyro.config.errors import CheckpointError, StorageError, shown
from bayesncl_pyro.evaluation import gate_posterior, glossary, plots
from bayesncl_pyro.evaluation.dimension_ranking import DIMS_FILE
from bayesncl_pyro.evaluation.evaluate import FEATURE_SETS, metric_names, result_files
from bayesncl_pyro.evaluation.markdown import fixed_number
from bayesncl_pyro.evaluation.provenance import BROWSER_RECORD, Provenance, provenance
from bayesncl_pyro.evaluation.run_summary import format_headline, headline, lookup
from bayesncl_pyro.storage import run_directory
from bayesncl_pyro.storage.atomic import atomic_write_text, read_json, read_regular
from bayesncl_pyro.storage.metrics_log import read_metrics

REPORT_FILE = "report.html"
CURVES = {
    "loss": ("negative ELBO", "nats per row", 1.0),
    "infonce": ("InfoNCE", "nats per row", 1.0),
    "kl": ("λ-weighted KL, λ · mean of Σ_d KL", "nats per row", 1.0),
    "open_rate": ("hard-gate open share (training batch)", "%", 100.0),
    "probe_acc": ("online-probe accuracy (batch)", "%", 100.0),
    "test_probe_top1": ("online-probe top-1 (test)", "%", 1.0),
    "test_semantic_consistency": ("SC of gated z (test)", "%", 1.0),
}
"""Logged quantity (the key of metrics.jsonl) -> (what it is, the unit it is plotted in, factor
from the logged value to that unit). The ``test_*`` ones are logged every ``train.eval_every``
epochs."""
FIGURES = {
    "forest": (gate_posterior.FOREST_PNG, "Posterior open share per dimension: posterior (and prior) mean and intervals"),
    "class_heatmap": (gate_posterior.HEATMAP_PNG, "Mean q(gate = 1 | x) per class and dimension"),
    "activation_frequency": (gate_posterior.FREQUENCY_PNG, "Activation frequency of each dimension of gated z"),
    "top_images": (gate_posterior.TOP_IMAGES_PNG, "Most activating test images of the largest dimensions"),
}
BEST_WORST = "best_worst"
SUMMARY_ROWS = 64
"""Rows of the ArviZ summary shown per run (the CSV in the run directory has all of them)."""


@dataclass
class RunArtifacts:
    """What one run directory holds for the report; a missing part is None (or empty)."""

    path: Path
    label: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    evaluation: dict[str, Any] | None
    evaluation_init: dict[str, Any] | None
    gate_summary: list[dict[str, str]] | None
    figures: dict[str, Path] = field(default_factory=dict)
    dims: dict[str, Any] | None = None
    browser: Path | None = None
    provenance: Provenance | None = None
    dropped_metrics: int = 0
    """Logged values left out of the curves because they are not finite numbers."""


FIGURE_LIMIT = 64 << 20
"""Largest figure (PNG) or summary CSV the report reads (64 MiB); inspect writes kilobytes."""


def _damaged(path: Path, what: str, command: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged: {what}; delete it and run {command} {path.parent} to write it again")


def _read_json(path: Path, command: str) -> dict[str, Any] | None:
    value = read_json(path, "result file")
    if value is not None and not isinstance(value, dict):
        raise _damaged(path, f"it holds a JSON {type(value).__name__}, not an object", command)
    return value


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_evaluation(result: dict[str, Any] | None, path: Path, command: str) -> dict[str, Any] | None:
    """``result`` (a parsed eval.json) when every part the report reads has the right type."""
    if result is None:
        return None

    def need(ok: bool, where: str, value: Any, what: str) -> None:
        if not ok:
            raise _damaged(path, f"{where} is {shown(value, 60)}, not {what}", command)

    for key in ("num_train", "num_test"):
        need(isinstance(result.get(key), int) and not isinstance(result.get(key), bool), key, result.get(key),
             "an integer")
    for key in ("step", "output_dims", "online_probe_top1"):
        need(_is_number(result.get(key)), key, result.get(key), "a number")
    metrics = result.get("metrics")
    need(isinstance(metrics, dict), "metrics", metrics, "an object")
    for features, values in metrics.items():
        need(isinstance(values, dict), f"metrics.{features}", values, "an object")
        for name, value in values.items():
            need(_is_number(value), f"metrics.{features}.{name}", value, "a number")
    for key in ("linear_probe", "gates", "factor_check", "background_pairing"):
        part = result.get(key)
        need(part is None or isinstance(part, dict), key, part, "an object")
    for key in ("top1", "top5", "grad_norm", "tolerance"):
        value = (result.get("linear_probe") or {}).get(key)
        need(_is_number(value), f"linear_probe.{key}", value, "a number")
    for key, value in (result.get("gates") or {}).items():
        need(_is_number(value), f"gates.{key}", value, "a number")
    check = result.get("factor_check")
    if check is not None:
        need(isinstance(check.get("by_label"), dict), "factor_check.by_label", check.get("by_label"), "an object")
        for label, entry in check["by_label"].items():
            need(isinstance(entry, dict) and isinstance(entry.get("dims"), (int, float))
                 and all(_is_number(v) for v in entry.values()), f"factor_check.by_label.{label}", entry,
                 "an object of numbers")
        for key, value in check.items():
            need(key == "by_label" or _is_number(value) or isinstance(value, (str, list, dict)),
                 f"factor_check.{key}", value, "a number")
    return result


def _read_summary_csv(path: Path) -> list[dict[str, str]] | None:
    """The rows of ``gates_summary.csv`` (None without one); a file that does not parse, or whose
    entries are not numbers, is refused naming it."""
    if not path.is_file():
        return None
    command = "bayesncl-inspect"
    try:
        text = read_regular(path, "the posterior summary", FIGURE_LIMIT).decode("utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text", command) from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        header = reader.fieldnames or []
    except csv.Error as error:
        raise _damaged(path, f"not CSV ({error})", command) from None
    if not header or header[0] != "" or len(header) < 2:
        raise _damaged(path, f"its header {shown(header, 80)} is not that of az.summary", command)
    for number, row in enumerate(rows, 2):
        if None in row or any(value is None for value in row.values()):
            raise _damaged(path, f"line {number} does not have the {len(header)} fields of its header", command)
        for column in header[1:]:
            try:
                float(row[column])
            except ValueError:
                raise _damaged(path, f"line {number}, column {column!r} is {shown(row[column], 40)}, not a number",
                               command) from None
    return rows


def _check_png(path: Path) -> Path:
    """``path`` when it is a PNG file whose header gives its size, else an error naming it."""
    data = read_regular(path, "figure", FIGURE_LIMIT)
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        raise _damaged(path, "not a PNG image", "bayesncl-inspect")
    if not 0 < struct.unpack(">I", data[16:20])[0] < 1 << 20:
        raise _damaged(path, "its PNG header gives an impossible width", "bayesncl-inspect")
    return path


def _clean_metrics(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """The logged records with an integer step, with only their finite numeric values; and how
    many values (or records without a step) were left out."""
    kept, dropped = [], 0
    for record in records:
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            dropped += 1
            continue
        clean = {"step": step}
        for key, value in record.items():
            if key == "step":
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                clean[key] = value
            elif value is not None:
                dropped += 1
        kept.append(clean)
    return kept, dropped


def _read_browser_record(site: Path) -> dict[str, Any] | None:
    try:
        record = read_json(site / BROWSER_RECORD, "browser record")
    except (StorageError, CheckpointError):
        return None
    return record if isinstance(record, dict) else None


def load_artifacts(path: str | Path, label: str | None = None) -> RunArtifacts:
    """Read a run directory; raises CheckpointError when it does not hold a run."""
    path = Path(path)
    config_file = path / run_directory.CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(f"{path} does not hold a run (no {run_directory.CONFIG_FILE})")
    summary = _read_summary_csv(path / gate_posterior.SUMMARY_CSV)
    figures = {key: _check_png(path / name) for key, (name, _) in FIGURES.items() if (path / name).is_file()}
    if (path / gate_posterior.BEST_WORST_PNG).is_file():
        figures[BEST_WORST] = _check_png(path / gate_posterior.BEST_WORST_PNG)
    browser = path / run_directory.BROWSER_DIR / "index.html"
    browser = browser if browser.is_file() else None
    evaluation = _check_evaluation(_read_json(path / result_files(False)[0], "bayesncl-eval"),
                                   path / result_files(False)[0], "bayesncl-eval")
    evaluation_init = _check_evaluation(_read_json(path / result_files(True)[0], "bayesncl-eval --init"),
                                        path / result_files(True)[0], "bayesncl-eval --init")
    dims = _read_json(path / DIMS_FILE, "bayesncl-inspect")
    metrics, dropped = _clean_metrics(read_metrics(path))
    browser_record = _read_browser_record(browser.parent) if browser is not None else None
    return RunArtifacts(
        path=path, label=label or path.name, config=read_yaml_mapping(config_file, "run config", CheckpointError),
        metrics=metrics, evaluation=evaluation, evaluation_init=evaluation_init, gate_summary=summary,
        figures=figures, dims=dims, browser=browser,
        provenance=provenance(path, evaluation, dims, browser_record, browser is not None), dropped_metrics=dropped,
    )


def _labels(paths: list[Path]) -> list[str]:
    """Directory names, with the parent added where two runs share a name."""
    names = [p.name or str(p) for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def _grid(min_width: int) -> str:
    """Opening tag of a row of equal columns at least ``min_width`` px wide: as many side by side
    as fit the page, the rest below."""
    return f"<div class='grid' style='--min: {int(min_width)}px'>"


def png_width(path: Path) -> int:
    """Width in pixels of a PNG file (from its IHDR chunk)."""
    with path.open("rb") as handle:
        header = handle.read(24)
    return struct.unpack(">I", header[16:20])[0]


def _missing(what: str, runs: list[RunArtifacts], command: str | None = None) -> str:
    """One line naming the runs that lack a part, with the command that makes it."""
    names = [html.escape(r.label) + (f" (run <code>{command} {html.escape(str(r.path))}</code>)" if command else "")
             for r in runs]
    return f"<p class='missing'>{what}: {', '.join(names)}</p>"


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value: Any) -> str:
    """A measured number as every table of the page shows it (the same decimals everywhere)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return html.escape(fixed_number(value))


def _setting(value: Any) -> str:
    """A config value as it was written (``3e-05``, ``0.8``): settings are not measurements."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "–" if value is None else html.escape(str(value))


def _td(value: Any, cell=_fmt) -> str:
    """A cell: a number stays on one line (never broken), text (a setting, a path, ``not defined:
    <reason>``) wraps so that the table fits the page."""
    text = isinstance(value, str) and not re.match(r"[-–\d]", value)
    return f"<td class='text'>{cell(value)}</td>" if text else f"<td>{cell(value)}</td>"


def _table(headers: list[str], rows: list[list[Any]], cell=_fmt) -> str:
    """An HTML table whose first column names the row; ``cell`` writes the values."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = [f"<tr><th scope='row'>{html.escape(str(row[0]))}</th>" + "".join(_td(v, cell) for v in row[1:])
            + "</tr>" for row in rows]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _gate_setting(run: RunArtifacts, key: str) -> Any:
    """A gate.* setting, or None for an ungated run (where it has no effect)."""
    return None if lookup(run.config, "gate", "prior") == "none" else lookup(run.config, "gate", key)


def _runs_table(runs: list[RunArtifacts]) -> str:
    rows = [
        ["dataset", *(lookup(r.config, "data", "name") for r in runs)],
        ["prior", *(lookup(r.config, "gate", "prior") for r in runs)],
        ["estimator", *(_gate_setting(r, "estimator") for r in runs)],
        ["nonneg", *(lookup(r.config, "model", "nonneg") for r in runs)],
        ["backbone", *(lookup(r.config, "model", "backbone") for r in runs)],
        ["proj_dim", *(lookup(r.config, "model", "proj_dim") for r in runs)],
        ["kl_weight", *(_gate_setting(r, "kl_weight") for r in runs)],
        ["prior_prob", *(_gate_setting(r, "prior_prob") for r in runs)],
        ["logged steps", *((r.metrics[-1].get("step") if r.metrics else None) for r in runs)],
        ["directory", *(str(r.path) for r in runs)],
    ]
    return _table(["", *(r.label for r in runs)], rows, cell=_setting)


def _curves_figure(runs: list[RunArtifacts]) -> str:
    curves = {
        name: {plots.literal_text(r.label): ([m["step"] for m in r.metrics if m.get(name) is not None],
                         [m[name] * factor for m in r.metrics if m.get(name) is not None])
               for r in runs}
        for name, (_, _, factor) in CURVES.items()
    }
    dropped = "".join(f"<p class='missing'>{html.escape(r.label)}: {r.dropped_metrics} logged value(s) of "
                      "metrics.jsonl that are not finite numbers (or records without an integer step) are left "
                      "out of the curves.</p>" for r in runs if r.dropped_metrics)
    if not any(steps for per_run in curves.values() for steps, _ in per_run.values()):
        return dropped + "<p class='missing'>No training steps logged (metrics.jsonl is empty or missing).</p>"
    with tempfile.TemporaryDirectory() as tmp:
        png = plots.plot_training_curves(curves, Path(tmp) / "curves.png",
                                         labels={name: (what, unit) for name, (what, unit, _) in CURVES.items()})
        return f"{dropped}<img alt='training curves' src='{_png_data_uri(png)}'>"


FEATURE_SET_NAMES = {
    "h": "h: backbone features",
    "z": "z: projector output",
    "gated": "gated z: the test-time gate",
    "gated_sampled": "gated_sampled: gated z with drawn gates",
}
"""The heading of each feature set's table when several runs are compared."""


def _metric_cell(result: dict[str, Any], features: str, name: str) -> Any:
    return glossary.shown_value(name, glossary.measured(lookup(result, "metrics", features), name))


def _metrics_table(labels: list[str], results: list[dict[str, Any]]) -> str:
    """Rows = metrics (key and unit). One run: a column per feature set (h, z, gated, ...). Several
    runs: a table per feature set with a column per run, side by side where they fit, so that the
    page stays as narrow as a run's column count allows (800 px for a handful of runs) instead of
    growing by four columns per run."""
    names = metric_names()
    for result in results:
        names += [n for n in (lookup(result, "metrics", "h") or {}) if n not in names]
    if len(results) == 1:
        rows = [[glossary.metric_label(n), *(_metric_cell(results[0], s, n) for s in FEATURE_SETS)] for n in names]
        return _table(["metric (unit)", *FEATURE_SETS], rows)
    parts = [_grid(420)]
    for features in FEATURE_SETS:
        rows = [[glossary.metric_label(n), *(_metric_cell(r, features, n) for r in results)] for n in names]
        parts.append(f"<div><h4>{html.escape(FEATURE_SET_NAMES.get(features, features))}</h4>"
                     f"{_table(['metric (unit)', *labels], rows)}</div>")
    return "".join(parts) + "</div>"


def _counts(run: RunArtifacts, evaluation: dict[str, Any]) -> dict[str, int | None]:
    dims = evaluation.get("output_dims") or lookup(run.config, "model", "proj_dim")
    return glossary.dimension_counts(dims, lookup(evaluation, "metrics", "z", "active_dims"),
                                     lookup(evaluation, "metrics", "gated", "active_dims"), evaluation.get("gates"))


def _evaluation_section(runs: list[RunArtifacts], init: bool) -> str:
    key = "evaluation_init" if init else "evaluation"
    evaluated = [r for r in runs if getattr(r, key) is not None]
    command = "bayesncl-eval --init" if init else "bayesncl-eval"
    missing = [r for r in runs if getattr(r, key) is None]
    parts = []
    if missing:
        parts.append(_missing("Not evaluated", missing, command))
    if not evaluated:
        return "".join(parts)
    if not init:
        parts += [_stale_notes(r, ("evaluation",)) for r in evaluated]
    results = [getattr(r, key) for r in evaluated]
    counts = [_counts(r, getattr(r, key)) for r in evaluated]
    headers = ["", *(r.label for r in evaluated)]
    downstream = [
        ["linear probe top-1 (h, %)", *(_fmt(lookup(e, "linear_probe", "top1"))
                                        + glossary.unconverged_mark(e.get("linear_probe")) for e in results)],
        ["linear probe top-5 (h, %)", *(lookup(e, "linear_probe", "top5") for e in results)],
        ["online probe top-1 (h, %)", *(e.get("online_probe_top1") for e in results)],
        ["k-NN top-1 (h, %)", *(_metric_cell(e, "h", "knn_top1") for e in results)],
        *([label, *(glossary.shown_value(key, glossary.measured(e.get("background_pairing"), key)) for e in results)]
          for label, key in (
            ("linear probe top-1, background agrees (h, %)", "linear_top1_agrees"),
            ("linear probe top-1, background disagrees (h, %)", "linear_top1_disagrees"))
          if any(e.get("background_pairing") for e in results)),
        ["hard-gate open share (open_rate, %)",
         *(glossary.shown_value("open_rate", lookup(e, "gates", "open_rate")) for e in results)],
        ["mean q(gate = 1 | x) = mean posterior open share (mean_gate_prob, %)",
         *(glossary.shown_value("mean_gate_prob", lookup(e, "gates", "mean_gate_prob")) for e in results)],
        ["output dimensions (z)", *(c["dims"] for c in counts)],
        *([label, *(c[count] for c in counts)] for count, label in glossary.COUNT_LABELS.items()),
        *([label, *(glossary.shown_value(name, glossary.measured(e.get("factor_check"), name))
                    if e.get("gates") is not None else None for e in results)]
          for label, name in (
            ("background dims the gate closes (factor check, %)", "background_closed_share"),
            ("class dims the gate keeps open (factor check, %)", "class_open_share"),
            ("object dims the gate keeps open (factor check, %)", "object_open_share"))),
    ]
    parts.append("<h3>Downstream, gates and dimensions</h3>" + _table(headers, downstream))
    if any(glossary.unconverged_mark(e.get("linear_probe")) for e in results):
        parts.append(f"<p>{glossary.NOT_CONVERGED_MARK} the linear probe did not converge: its top-1 is not the "
                     "probe's optimum (eval.md gives its gradient and tolerance).</p>")
    parts.append("<h3>Metrics on h, z and gated z</h3><p>gated: gated z with the test-time gate; gated_sampled: "
                 "gated z with drawn gates (see the glossary); a number that cannot be computed says why "
                 "(not defined: ...).</p>"
                 + _metrics_table([r.label for r in evaluated], results))
    checks = [(r.label, lookup(getattr(r, key), "factor_check")) for r in evaluated]
    if any(check for _, check in checks):
        parts.append("<h3>Ground-truth factor check (label of each dimension of z)</h3>" + _grid(420))
        for label, check in checks:
            if not check:
                continue
            rows = [["dead (z)" if name == "dead" else glossary.factor_name(name), int(entry["dims"]),
                     glossary.shown_value("mean_open_rate", entry.get("mean_open_rate")),
                     glossary.shown_value("share_kept_open", entry.get("share_kept_open"))]
                    for name, entry in check["by_label"].items()]
            parts.append(f"<div><h4>{html.escape(label)}</h4>"
                         + _table(["label", "dims", "mean hard-gate open share (%)", "share kept open (%)"], rows) + "</div>")
        parts.append("</div>")
    return "".join(parts)


def _figure_row(runs: list[RunArtifacts], key: str, caption: str) -> str:
    """One figure of each run, side by side where they fit at natural size."""
    widths = [png_width(r.figures[key]) for r in runs if key in r.figures]
    cells = [f"<figure><figcaption>{html.escape(r.label)}</figcaption>"
             + (f"<img alt='{html.escape(caption)}' src='{_png_data_uri(r.figures[key])}'>" if key in r.figures
                else "<p class='missing'>missing</p>") + "</figure>" for r in runs]
    return f"{_grid(max(widths, default=300))}{''.join(cells)}</div>"


def _posterior_section(runs: list[RunArtifacts]) -> str:
    parts = []
    missing = [r for r in runs if r.gate_summary is None and lookup(r.config, "gate", "prior") != "none"]
    ungated = [r for r in runs if lookup(r.config, "gate", "prior") == "none"]
    if ungated:
        parts.append(_missing("No gates to inspect", ungated))
    if missing:
        parts.append(_missing("Not inspected", missing, "bayesncl-inspect"))
    inspected = [r for r in runs if r.gate_summary is not None or any(k in r.figures for k in FIGURES)]
    parts += [_stale_notes(r, ("inspection",)) for r in runs]
    if not inspected:
        return "".join(parts)
    for key, (_, caption) in FIGURES.items():
        parts.append(f"<h3>{html.escape(caption)}</h3>{_figure_row(inspected, key, caption)}")
    parts.append("<h3>ArviZ summary of the posterior (%)</h3>"
                 f"<p>{html.escape(gate_posterior.DIAGNOSTICS_NOTE)} Values in % of test images; "
                 f"{gate_posterior.SUMMARY_CSV} in the run directory holds them as fractions.</p>" + _grid(420))
    for r in inspected:
        rows = [row for row in (r.gate_summary or []) if not row.get("", "").startswith("class_open_rate")]
        shown = rows[:SUMMARY_ROWS]
        columns = [c for c in (rows[0].keys() if rows else []) if c]
        table = _table(["entry", *(f"{c} (%)" for c in columns)],
                       [[row[""], *(round(100.0 * float(row[c]), 2) for c in columns)] for row in shown])
        more = f"<p>{len(rows) - len(shown)} more rows in {gate_posterior.SUMMARY_CSV}</p>" if rows[len(shown):] else ""
        summary = f"<summary>{html.escape(r.label)}: {len(rows)} rows</summary>"
        parts.append(f"<div><details>{summary}{table}{more}</details></div>")
    parts.append("</div>")
    return "".join(parts)


def _last_step(run: RunArtifacts) -> int | None:
    """The step the run's checkpoint is at (the last logged step when its checkpoint is unreadable)."""
    if run.provenance is not None and run.provenance.checkpoint is not None:
        return run.provenance.checkpoint
    return run.metrics[-1].get("step") if run.metrics else None


STALE_MARK = "⚠"


def _stale(run: RunArtifacts, part: str) -> bool:
    return run.provenance is not None and part in run.provenance.stale_parts


def run_headline(run: RunArtifacts) -> dict[str, str]:
    """The run's headline numbers (:func:`.run_summary.headline`); when eval.json is not from the
    checkpoint's step (or its step is unknown), every number taken from it says so."""
    rows = headline(run.config, run.evaluation, run.evaluation_init, _last_step(run))
    if run.evaluation is not None and _stale(run, "evaluation"):
        step = run.provenance.evaluation
        mark = f" {STALE_MARK} eval.json of step {step if step is not None else 'unknown'}, not current"
        rows = {key: value + mark if i > 2 and value not in ("–", "no gates") else value
                for i, (key, value) in enumerate(rows.items())}
    if run.provenance is not None and run.provenance.stale:
        rows[f"{STALE_MARK} not current"] = " ".join(run.provenance.stale)
    return rows


def _stale_notes(run: RunArtifacts, parts: tuple[str, ...] | None = None) -> str:
    """The run's stale-file sentences (those of ``parts`` only, when given), marked."""
    if run.provenance is None:
        return ""
    notes = [text for part, text in run.provenance.notes if parts is None or part in parts]
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(text)}</li>" for text in notes)
    return f"<div class='stale'><strong>{STALE_MARK} {html.escape(run.label)}: not current</strong><ul>{items}</ul></div>"



def _browser_link(run: RunArtifacts, base: Path | None) -> str:
    """A link to the run's feature browser (``bayesncl-browse``), relative to the folder ``base``
    of the report (an absolute ``file://`` link without it); empty when the run has none."""
    if run.browser is None:
        return ""
    href = Path(os.path.relpath(run.browser, base)).as_posix() if base else run.browser.resolve().as_uri()
    mark = ""
    if _stale(run, "browser"):
        step = run.provenance.browser
        mark = (f" <span class='stale'>{STALE_MARK} built from step {step if step is not None else 'unknown'}, "
                "not the checkpoint's: run bayesncl-browse again</span>")
    return (f"<p class='browser'>Feature browser: <a href='{html.escape(href)}'>{html.escape(run.label)}</a>"
            f"{mark}</p>")


def _summary_card(run: RunArtifacts, base: Path | None = None) -> str:
    """The one-screen summary of a run: what it is, its main numbers, the link to its feature
    browser, its best and worst dimensions."""
    rows = run_headline(run)
    table = "".join(f"<tr><th scope='row'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows.items())
    parts = [f"<section class='card'><h2>{html.escape(run.label)}</h2><div class='card-body'><div>",
             f"<table class='headline'><tbody>{table}</tbody></table>", _browser_link(run, base), _stale_notes(run)]
    if run.evaluation is None:
        parts.append(_missing("Not evaluated", [run], "bayesncl-eval"))
    parts.append("</div>")
    if BEST_WORST in run.figures:
        caption = "Best and worst dimensions, with their top test images"
        parts.append(f"<figure><figcaption>{caption}</figcaption><img alt='{caption}' "
                     f"src='{_png_data_uri(run.figures[BEST_WORST])}'></figure>")
    else:
        parts.append(_missing("Best and worst dimensions not drawn", [run], "bayesncl-inspect"))
    parts.append("</div></section>")
    return "".join(parts)


def _glossary() -> str:
    items = "".join(f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>"
                    for term, text in glossary.TERMS.items())
    return (f"<dl>{items}</dl><p>Tables and figures show shares in %; eval.json, dims.json, "
            f"{gate_posterior.SUMMARY_CSV} and gates.nc store fractions (0–1) except the accuracies, semantic "
            "consistency and retrieval precision, which are stored in %.</p>")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .85em; margin: .4em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
td { white-space: nowrap; } td.text { white-space: normal; overflow-wrap: anywhere; text-align: left; }
th { overflow-wrap: anywhere; }
thead th { background: #f3f3f3; } tbody th { text-align: left; font-weight: normal; background: #fafafa; }
img { max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, var(--min)), 1fr));
        gap: 1em; align-items: start; }
figure { margin: 0; } figcaption { font-weight: bold; margin-bottom: .3em; }
th.run, td.run { border-left: 2px solid #999; } thead th.run { text-align: center; }
.missing, .stale { color: #a33; } code { background: #f3f3f3; padding: 0 .2em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: .2em 1em 1em; margin: 1em 0; }
.card h2 { margin-top: .4em; } table.headline { font-size: .9em; max-width: 440px; }
table.headline td { text-align: left; white-space: normal; }
.card-body { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
dt { font-weight: bold; } dd { margin: 0 0 .5em 1.5em; }
"""


def render_report(runs: list[RunArtifacts], base: Path | None = None) -> str:
    """The HTML page of ``runs``: a summary card per run, then the details side by side; links to
    other files (the feature browsers) are relative to the folder ``base`` (absolute ``file://``
    links without it)."""
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = "BayesNCL report: " + ", ".join(r.label for r in runs)
    body = [
        f"<h1>{html.escape(title)}</h1><p>Generated {created}. Shares are in %; the words dead, never open, "
        "never active, always open and active are defined in the <a href='#glossary'>glossary</a>.</p>",
        *(_summary_card(r, base) for r in runs),
        "<h2>Runs</h2>", _runs_table(runs),
        "<h2>Training curves</h2>", _curves_figure(runs),
        "<h2>Evaluation (test split)</h2>", _evaluation_section(runs, init=False),
        "<h2>Evaluation at initialisation</h2>", _evaluation_section(runs, init=True),
        "<h2>Gate posterior</h2>", _posterior_section(runs),
        "<h2 id='glossary'>Glossary</h2>", _glossary(),
    ]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def load_runs(paths: list[str | Path]) -> list[RunArtifacts]:
    """The artifacts of each run directory, labelled by name (parent added where names repeat)."""
    if not paths:
        raise CheckpointError("no run directory given; pass one or more RUN_DIRs")
    paths = [Path(p) for p in paths]
    return [load_artifacts(p, label) for p, label in zip(paths, _labels(paths))]


def write_report(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Gather the runs in ``paths`` into one HTML file; ``out`` defaults to ``report.html`` in the
    run directory (one run) or the current directory (several)."""
    return save_report(load_runs(paths), out)


def save_report(runs: list[RunArtifacts], out: str | Path | None = None) -> Path:
    """:func:`write_report` of runs already loaded."""
    if out is None:
        out = runs[0].path / REPORT_FILE if len(runs) == 1 else Path.cwd() / REPORT_FILE
    return atomic_write_text(out, render_report(runs, Path(out).resolve().parent))


def text_summary(runs: list[RunArtifacts]) -> str:
    """The headline of each run as text, as ``bayesncl-report`` prints it."""
    return "\n\n".join(format_headline(r.label, run_headline(r)) for r in runs)
