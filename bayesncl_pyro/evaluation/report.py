"""One self-contained HTML page for one run or several side by side: first a one-screen summary
of each run (method, data, the main numbers with units, a link to its feature browser when
``bayesncl-browse`` made one, its best and worst dimensions with their top images), then the
details: training curves, evaluation tables, the ArviZ summary of the gate posterior and its
figures (PNG embedded as base64), and the glossary of the words it uses.

The report only gathers what the run directories hold (``metrics.jsonl``, ``eval.json``,
``eval_init.json``, ``dims.json``, ``gates_summary.csv`` and the figures of ``bayesncl-inspect``);
it computes nothing heavier than the training-curve figure, and says which command fills a
missing part. A figure is shown at its natural size when the page is wide enough (runs side by
side where they fit, else one under the other), and never narrower than the page allows.
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayesncl_pyro.config import read_yaml_mapping
from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.evaluation import gate_posterior, glossary, plots
from bayesncl_pyro.evaluation.dimension_ranking import DIMS_FILE
from bayesncl_pyro.evaluation.evaluate import FEATURE_SETS, metric_names, result_files
from bayesncl_pyro.evaluation.markdown import fixed_number
from bayesncl_pyro.evaluation.run_summary import format_headline, headline, lookup
from bayesncl_pyro.storage import run_directory
from bayesncl_pyro.storage.atomic import atomic_write_text, read_json
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


def _read_json(path: Path) -> dict[str, Any] | None:
    return read_json(path, "result file")


def load_artifacts(path: str | Path, label: str | None = None) -> RunArtifacts:
    """Read a run directory; raises CheckpointError when it does not hold a run."""
    path = Path(path)
    config_file = path / run_directory.CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(f"{path} does not hold a run (no {run_directory.CONFIG_FILE})")
    summary_file = path / gate_posterior.SUMMARY_CSV
    summary = None
    if summary_file.is_file():
        with summary_file.open(newline="") as handle:
            summary = list(csv.DictReader(handle))
    figures = {key: path / name for key, (name, _) in FIGURES.items() if (path / name).is_file()}
    if (path / gate_posterior.BEST_WORST_PNG).is_file():
        figures[BEST_WORST] = path / gate_posterior.BEST_WORST_PNG
    browser = path / run_directory.BROWSER_DIR / "index.html"
    return RunArtifacts(
        path=path, label=label or path.name, config=read_yaml_mapping(config_file, "run config", CheckpointError),
        metrics=read_metrics(path), evaluation=_read_json(path / result_files(False)[0]),
        evaluation_init=_read_json(path / result_files(True)[0]), gate_summary=summary, figures=figures,
        dims=_read_json(path / DIMS_FILE), browser=browser if browser.is_file() else None,
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


def _table(headers: list[str], rows: list[list[Any]], cell=_fmt) -> str:
    """An HTML table whose first column names the row; ``cell`` writes the values."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = [f"<tr><th scope='row'>{html.escape(str(row[0]))}</th>" + "".join(f"<td>{cell(v)}</td>" for v in row[1:])
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
        name: {r.label: ([m["step"] for m in r.metrics if m.get(name) is not None],
                         [m[name] * factor for m in r.metrics if m.get(name) is not None])
               for r in runs}
        for name, (_, _, factor) in CURVES.items()
    }
    if not any(steps for per_run in curves.values() for steps, _ in per_run.values()):
        return "<p class='missing'>No training steps logged (metrics.jsonl is empty or missing).</p>"
    with tempfile.TemporaryDirectory() as tmp:
        png = plots.plot_training_curves(curves, Path(tmp) / "curves.png",
                                         labels={name: (what, unit) for name, (what, unit, _) in CURVES.items()})
        return f"<img alt='training curves' src='{_png_data_uri(png)}'>"


def _metrics_table(labels: list[str], results: list[dict[str, Any]]) -> str:
    """Rows = metrics (key and unit); columns = runs, each split into h | z | gated."""
    names = metric_names()
    for result in results:
        names += [n for n in (lookup(result, "metrics", "h") or {}) if n not in names]
    top = "<th></th>" + "".join(f"<th colspan='{len(FEATURE_SETS)}' class='run'>{html.escape(label)}</th>"
                                for label in labels)
    sub = "<th>metric (unit)</th>" + "".join(f"<th class='{'run' if i == 0 else ''}'>{s}</th>"
                                             for _ in labels for i, s in enumerate(FEATURE_SETS))
    body = []
    for name in names:
        cells = "".join(f"<td class='{'run' if i == 0 else ''}'>"
                        f"{_fmt(glossary.shown_value(name, lookup(result, 'metrics', s, name)))}</td>"
                        for result in results for i, s in enumerate(FEATURE_SETS))
        body.append(f"<tr><th scope='row'>{html.escape(glossary.metric_label(name))}</th>{cells}</tr>")
    return f"<table><thead><tr>{top}</tr><tr>{sub}</tr></thead><tbody>{''.join(body)}</tbody></table>"


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
    results = [getattr(r, key) for r in evaluated]
    counts = [_counts(r, getattr(r, key)) for r in evaluated]
    headers = ["", *(r.label for r in evaluated)]
    downstream = [
        ["linear probe top-1 (h, %)", *(_fmt(lookup(e, "linear_probe", "top1"))
                                        + glossary.unconverged_mark(e.get("linear_probe")) for e in results)],
        ["linear probe top-5 (h, %)", *(lookup(e, "linear_probe", "top5") for e in results)],
        ["online probe top-1 (h, %)", *(e.get("online_probe_top1") for e in results)],
        ["k-NN top-1 (h, %)", *(lookup(e, "metrics", "h", "knn_top1") for e in results)],
        *([label, *(lookup(e, "background_pairing", key) for e in results)] for label, key in (
            ("linear probe top-1, background agrees (h, %)", "linear_top1_agrees"),
            ("linear probe top-1, background disagrees (h, %)", "linear_top1_disagrees"))
          if any(e.get("background_pairing") for e in results)),
        ["hard-gate open share (open_rate, %)",
         *(glossary.shown_value("open_rate", lookup(e, "gates", "open_rate")) for e in results)],
        ["mean q(gate = 1 | x) = mean posterior open share (mean_gate_prob, %)",
         *(glossary.shown_value("mean_gate_prob", lookup(e, "gates", "mean_gate_prob")) for e in results)],
        ["output dimensions (z)", *(c["dims"] for c in counts)],
        *([label, *(c[count] for c in counts)] for count, label in glossary.COUNT_LABELS.items()),
        *([label, *(glossary.shown_value(name, lookup(e, "factor_check", name)) for e in results)] for label, name in (
            ("background dims the gate closes (factor check, %)", "background_closed_share"),
            ("class dims the gate keeps open (factor check, %)", "class_open_share"),
            ("object dims the gate keeps open (factor check, %)", "object_open_share"))),
    ]
    parts.append("<h3>Downstream, gates and dimensions</h3>" + _table(headers, downstream))
    if any(glossary.unconverged_mark(e.get("linear_probe")) for e in results):
        parts.append(f"<p>{glossary.NOT_CONVERGED_MARK} the linear probe did not converge: its top-1 is not the "
                     "probe's optimum (eval.md gives its gradient and tolerance).</p>")
    parts.append("<h3>Metrics on h, z and gated z</h3><p>gated: gated z with the test-time gate; gated_sampled: "
                 "gated z with drawn gates (see the glossary).</p>"
                 + _metrics_table([r.label for r in evaluated], results))
    checks = [(r.label, lookup(getattr(r, key), "factor_check")) for r in evaluated]
    if any(check for _, check in checks):
        parts.append("<h3>Ground-truth factor check (label of each dimension of z)</h3>" + _grid(420))
        for label, check in checks:
            if not check:
                continue
            rows = [["dead (z)" if name == "dead" else name, int(entry["dims"]),
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
    return run.metrics[-1].get("step") if run.metrics else None


def run_headline(run: RunArtifacts) -> dict[str, str]:
    """The run's headline numbers (:func:`.run_summary.headline`)."""
    return headline(run.config, run.evaluation, run.evaluation_init, _last_step(run))


def _browser_link(run: RunArtifacts, base: Path | None) -> str:
    """A link to the run's feature browser (``bayesncl-browse``), relative to the folder ``base``
    of the report (an absolute ``file://`` link without it); empty when the run has none."""
    if run.browser is None:
        return ""
    href = Path(os.path.relpath(run.browser, base)).as_posix() if base else run.browser.resolve().as_uri()
    return f"<p class='browser'>Feature browser: <a href='{html.escape(href)}'>{html.escape(run.label)}</a></p>"


def _summary_card(run: RunArtifacts, base: Path | None = None) -> str:
    """The one-screen summary of a run: what it is, its main numbers, the link to its feature
    browser, its best and worst dimensions."""
    rows = run_headline(run)
    table = "".join(f"<tr><th scope='row'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows.items())
    parts = [f"<section class='card'><h2>{html.escape(run.label)}</h2><div class='card-body'><div>",
             f"<table class='headline'><tbody>{table}</tbody></table>", _browser_link(run, base)]
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
thead th { background: #f3f3f3; } tbody th { text-align: left; font-weight: normal; background: #fafafa; }
img { max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, var(--min)), 1fr));
        gap: 1em; align-items: start; }
figure { margin: 0; } figcaption { font-weight: bold; margin-bottom: .3em; }
th.run, td.run { border-left: 2px solid #999; } thead th.run { text-align: center; }
.missing { color: #a33; } code { background: #f3f3f3; padding: 0 .2em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: .2em 1em 1em; margin: 1em 0; }
.card h2 { margin-top: .4em; } table.headline { font-size: .9em; max-width: 440px; }
table.headline td { text-align: left; }
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
