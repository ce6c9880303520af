"""One self-contained HTML page for one run or several side by side: training curves, evaluation
tables, the ArviZ summary of the gate posterior and its figures (PNG embedded as base64).

The report only gathers what the run directories hold (``metrics.jsonl``, ``eval.json``,
``eval_init.json``, ``gates_summary.csv`` and the ``gates_*.png`` figures); it computes nothing
heavier than the training-curve figure, and says which command fills a missing part.
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayesncl_pyro.config import read_yaml_mapping
from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.evaluation import gate_posterior, plots
from bayesncl_pyro.evaluation.evaluate import FEATURE_SETS, metric_names, result_files
from bayesncl_pyro.storage import run_directory
from bayesncl_pyro.storage.atomic import atomic_write_text, read_json
from bayesncl_pyro.storage.metrics_log import read_metrics

REPORT_FILE = "report.html"
CURVES = ("loss", "infonce", "kl", "open_rate", "probe_acc")
FIGURES = {
    "forest": (gate_posterior.FOREST_PNG, "Gate-open rate: posterior mean and 94 % HDI"),
    "class_heatmap": (gate_posterior.HEATMAP_PNG, "Mean q(gate = 1 | x) per class"),
    "activation_frequency": (gate_posterior.FREQUENCY_PNG, "Activation frequency per dimension"),
    "top_images": (gate_posterior.TOP_IMAGES_PNG, "Most activating test images of the top dimensions"),
}
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
    browser = path / run_directory.BROWSER_DIR / "index.html"
    return RunArtifacts(
        path=path, label=label or path.name, config=read_yaml_mapping(config_file, "run config", CheckpointError),
        metrics=read_metrics(path), evaluation=_read_json(path / result_files(False)[0]),
        evaluation_init=_read_json(path / result_files(True)[0]), gate_summary=summary, figures=figures,
        browser=browser if browser.is_file() else None,
    )


def _labels(paths: list[Path]) -> list[str]:
    """Directory names, with the parent added where two runs share a name."""
    names = [p.name or str(p) for p in paths]
    return [f"{p.parent.name}/{p.name}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def _grid(columns: int) -> str:
    """Opening tag of a row of ``columns`` equal columns (at most 3 side by side)."""
    return f"<div class='grid' style='--columns: {max(1, min(columns, 3))}'>"


def _missing(what: str, runs: list[RunArtifacts], command: str | None = None) -> str:
    """One line naming the runs that lack a part, with the command that makes it."""
    names = [html.escape(r.label) + (f" (run <code>{command} {html.escape(str(r.path))}</code>)" if command else "")
             for r in runs]
    return f"<p class='missing'>{what}: {', '.join(names)}</p>"


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    """An HTML table whose first column names the row."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = [f"<tr><th scope='row'>{html.escape(str(row[0]))}</th>" + "".join(f"<td>{_fmt(v)}</td>" for v in row[1:])
            + "</tr>" for row in rows]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _get(tree: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def _gate_setting(run: RunArtifacts, key: str) -> Any:
    """A gate.* setting, or None for an ungated run (where it has no effect)."""
    return None if _get(run.config, "gate", "prior") == "none" else _get(run.config, "gate", key)


def _runs_table(runs: list[RunArtifacts]) -> str:
    rows = [
        ["dataset", *(_get(r.config, "data", "name") for r in runs)],
        ["prior", *(_get(r.config, "gate", "prior") for r in runs)],
        ["estimator", *(_gate_setting(r, "estimator") for r in runs)],
        ["nonneg", *(_get(r.config, "model", "nonneg") for r in runs)],
        ["backbone", *(_get(r.config, "model", "backbone") for r in runs)],
        ["proj_dim", *(_get(r.config, "model", "proj_dim") for r in runs)],
        ["kl_weight", *(_gate_setting(r, "kl_weight") for r in runs)],
        ["prior_prob", *(_gate_setting(r, "prior_prob") for r in runs)],
        ["logged steps", *((r.metrics[-1].get("step") if r.metrics else None) for r in runs)],
        ["directory", *(str(r.path) for r in runs)],
    ]
    return _table(["", *(r.label for r in runs)], rows)


def _curves_figure(runs: list[RunArtifacts]) -> str:
    curves = {
        name: {r.label: ([m["step"] for m in r.metrics if name in m], [m[name] for m in r.metrics if name in m])
               for r in runs}
        for name in CURVES
    }
    if not any(steps for per_run in curves.values() for steps, _ in per_run.values()):
        return "<p class='missing'>No training steps logged (metrics.jsonl is empty or missing).</p>"
    with tempfile.TemporaryDirectory() as tmp:
        png = plots.plot_training_curves(curves, Path(tmp) / "curves.png")
        return f"<img alt='training curves' src='{_png_data_uri(png)}'>"


def _metrics_table(labels: list[str], results: list[dict[str, Any]]) -> str:
    """Rows = metrics; columns = runs, each split into h | z | gated."""
    names = metric_names()
    for result in results:
        names += [n for n in (_get(result, "metrics", "h") or {}) if n not in names]
    top = "<th></th>" + "".join(f"<th colspan='{len(FEATURE_SETS)}' class='run'>{html.escape(label)}</th>"
                                for label in labels)
    sub = "<th>metric</th>" + "".join(f"<th class='{'run' if i == 0 else ''}'>{s}</th>"
                                      for _ in labels for i, s in enumerate(FEATURE_SETS))
    body = []
    for name in names:
        cells = "".join(f"<td class='{'run' if i == 0 else ''}'>{_fmt(_get(result, 'metrics', s, name))}</td>"
                        for result in results for i, s in enumerate(FEATURE_SETS))
        body.append(f"<tr><th scope='row'>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><thead><tr>{top}</tr><tr>{sub}</tr></thead><tbody>{''.join(body)}</tbody></table>"


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
    headers = ["", *(r.label for r in evaluated)]
    downstream = [
        ["linear probe top-1 (h, %)", *(_get(e, "linear_probe", "top1") for e in results)],
        ["linear probe top-5 (h, %)", *(_get(e, "linear_probe", "top5") for e in results)],
        ["online probe top-1 (h, %)", *(e.get("online_probe_top1") for e in results)],
        ["k-NN top-1 (h, %)", *(_get(e, "metrics", "h", "knn_top1") for e in results)],
        ["gate open rate (test)", *(_get(e, "gates", "open_rate") for e in results)],
        ["dims never open", *(_get(e, "gates", "dims_never_open") for e in results)],
        ["dims always open", *(_get(e, "gates", "dims_always_open") for e in results)],
        *([label, *(_get(e, "factor_check", key) for e in results)] for label, key in (
            ("share of background dims the gate closes", "background_closed_share"),
            ("share of class dims the gate keeps open", "class_open_share"),
            ("share of object dims the gate keeps open", "object_open_share"))),
    ]
    parts.append("<h3>Downstream and gates</h3>" + _table(headers, downstream))
    parts.append("<h3>Metrics on h, z and gated z</h3>" + _metrics_table([r.label for r in evaluated], results))
    checks = [(r.label, _get(getattr(r, key), "factor_check")) for r in evaluated]
    if any(check for _, check in checks):
        parts.append("<h3>Ground-truth factor check (label of each dimension of z)</h3>"
                     + _grid(sum(1 for _, check in checks if check)))
        for label, check in checks:
            if not check:
                continue
            rows = [[name, int(entry["dims"]), entry.get("mean_open_rate"), entry.get("share_kept_open")]
                    for name, entry in check["by_label"].items()]
            parts.append(f"<div><h4>{html.escape(label)}</h4>"
                         + _table(["label", "dims", "mean open rate", "share kept open"], rows) + "</div>")
        parts.append("</div>")
    return "".join(parts)


def _posterior_section(runs: list[RunArtifacts]) -> str:
    parts = []
    missing = [r for r in runs if r.gate_summary is None and _get(r.config, "gate", "prior") != "none"]
    ungated = [r for r in runs if _get(r.config, "gate", "prior") == "none"]
    if ungated:
        parts.append(_missing("No gates to inspect", ungated))
    if missing:
        parts.append(_missing("Not inspected", missing, "bayesncl-inspect"))
    inspected = [r for r in runs if r.gate_summary is not None or r.figures]
    if not inspected:
        return "".join(parts)
    for key, (_, caption) in FIGURES.items():
        cells = [f"<figure><figcaption>{html.escape(r.label)}</figcaption>"
                 + (f"<img alt='{html.escape(caption)}' src='{_png_data_uri(r.figures[key])}'>" if key in r.figures
                    else "<p class='missing'>missing</p>") + "</figure>" for r in inspected]
        parts.append(f"<h3>{html.escape(caption)}</h3>{_grid(len(inspected))}{''.join(cells)}</div>")
    parts.append("<h3>ArviZ summary (kind = stats; draws are independent, so no r-hat/ESS)</h3>"
                 + _grid(len(inspected)))
    for r in inspected:
        rows = [row for row in (r.gate_summary or []) if not row.get("", "").startswith("class_open_rate")]
        shown = rows[:SUMMARY_ROWS]
        columns = [c for c in (rows[0].keys() if rows else []) if c]
        table = _table(["entry", *columns], [[row[""], *(float(row[c]) for c in columns)] for row in shown])
        more = f"<p>{len(rows) - len(shown)} more rows in {gate_posterior.SUMMARY_CSV}</p>" if rows[len(shown):] else ""
        summary = f"<summary>{html.escape(r.label)}: {len(rows)} rows</summary>"
        parts.append(f"<div><details>{summary}{table}{more}</details></div>")
    parts.append("</div>")
    return "".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .85em; margin: .4em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
thead th { background: #f3f3f3; } tbody th { text-align: left; font-weight: normal; background: #fafafa; }
img { max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(var(--columns), minmax(0, 1fr)); gap: 1em; align-items: start; }
figure { margin: 0; } figcaption { font-weight: bold; margin-bottom: .3em; }
th.run, td.run { border-left: 2px solid #999; } thead th.run { text-align: center; }
.missing { color: #a33; } code { background: #f3f3f3; padding: 0 .2em; }
"""


def _browser_links(runs: list[RunArtifacts], base: Path | None) -> str:
    """Links to the runs' feature browsers (``bayesncl-browse``), relative to the report's folder."""
    def href(index: Path) -> str:
        return Path(os.path.relpath(index, base)).as_posix() if base else index.resolve().as_uri()

    links = [f"<a href='{html.escape(href(r.browser))}'>{html.escape(r.label)}</a>" for r in runs if r.browser]
    return f"<p class='browser'>Feature browser: {', '.join(links)}</p>" if links else ""


def render_report(runs: list[RunArtifacts], base: Path | None = None) -> str:
    """The HTML page of ``runs`` (one column per run where figures stand side by side); links to
    other files are relative to the folder ``base`` (absolute ``file://`` links without it)."""
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = "BayesNCL report: " + ", ".join(r.label for r in runs)
    body = [
        f"<h1>{html.escape(title)}</h1><p>Generated {created}.</p>",
        "<h2>Runs</h2>", _runs_table(runs), _browser_links(runs, base),
        "<h2>Training curves</h2>", _curves_figure(runs),
        "<h2>Evaluation (test split)</h2>", _evaluation_section(runs, init=False),
        "<h2>Evaluation at initialisation</h2>", _evaluation_section(runs, init=True),
        "<h2>Gate posterior</h2>", _posterior_section(runs),
    ]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(paths: list[str | Path], out: str | Path | None = None) -> Path:
    """Gather the runs in ``paths`` into one HTML file; ``out`` defaults to ``report.html`` in the
    run directory (one run) or the current directory (several)."""
    if not paths:
        raise CheckpointError("no run directory given; pass one or more RUN_DIRs")
    paths = [Path(p) for p in paths]
    runs = [load_artifacts(p, label) for p, label in zip(paths, _labels(paths))]
    if out is None:
        out = paths[0] / REPORT_FILE if len(paths) == 1 else Path.cwd() / REPORT_FILE
    return atomic_write_text(out, render_report(runs, Path(out).resolve().parent))
