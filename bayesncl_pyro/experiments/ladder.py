"""A scale ladder: several suites of the same two methods, each a rung (more epochs, more images),
read together — does the gain of the gates over NCL grow, shrink or stay as the encoder gets
better?

Per rung: each method's SC, supported and weighted SC and their gains, k-NN and linear probe, the
hard-gate open share (mean ± sd over seeds), and the method − baseline differences paired by seed
(95 % t interval), and optionally those of several rungs pooled. Runs that kept their epoch checkpoints add their SC over training
(:mod:`bayesncl_pyro.evaluation.training_trace`). Two figures: the gain difference (plain and
weighted) against training images seen, and SC against k-NN per method.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.evaluation.markdown import markdown_table
from bayesncl_pyro.evaluation.evaluate import result_files
from bayesncl_pyro.evaluation.plots import literal_text, save_figure
from bayesncl_pyro.evaluation.training_trace import TRACE_FILE, epoch_checkpoints, trace_run
from bayesncl_pyro.experiments.stats import format_difference, format_mean_sd, paired_difference
from bayesncl_pyro.experiments.suite import SuiteSpec, job_row, plan
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text, read_json
from bayesncl_pyro.training.loop import SUMMARY_FILE

LEVELS = ("sc", "sc_supported", "sc_weighted", "sc_gain", "sc_supported_gain", "sc_weighted_gain",
          "knn_top1", "linear_top1", "open_rate")
DIFFERENCES = ("sc_gain", "sc_supported_gain", "sc_weighted_gain", "sc", "sc_weighted", "knn_top1", "linear_top1")
LABELS = {"sc": "SC", "sc_supported": "supported SC", "sc_weighted": "weighted SC", "sc_gain": "SC gain",
          "sc_supported_gain": "supported SC gain", "sc_weighted_gain": "weighted SC gain",
          "knn_top1": "k-NN top-1", "linear_top1": "linear top-1", "open_rate": "hard-gate open share"}
TRACE_MEASURES = {"sc": "semantic_consistency", "sc_supported": "semantic_consistency_supported",
                  "sc_weighted": "semantic_consistency_weighted"}


def trace_spacing(every: int, every_images: int | None, images_per_epoch: float) -> int:
    """Which epoch checkpoints to measure: every ``every``-th, or, with ``every_images``, the
    multiples of the whole number of epochs nearest to that many training images (at least 1), so
    that rungs of different data sizes are measured at comparable images seen."""
    if every_images is None:
        return every
    return max(1, math.floor(every_images / images_per_epoch + 0.5))


def rung_rows(spec: SuiteSpec, dataset: str, trace: bool = True, every: int = 10,
              every_images: int | None = None) -> list[dict[str, Any]]:
    """The table rows of the suite's finished, evaluated runs on ``dataset``, each with
    ``images_seen`` (epochs × training images) and, where epoch checkpoints were kept and
    ``trace`` is set, its SC over training (``trace``: one point per ``every``-th epoch checkpoint,
    or about every ``every_images`` training images, :func:`trace_spacing`)."""
    rows = []
    for job in plan(spec):
        if job.dataset != dataset or job.sweep_point is not None or not (job.directory / SUMMARY_FILE).is_file():
            continue
        row = job_row(job)
        if row.get("sc") is None:
            continue
        # the run's own training-set size (eval.json), not a guess from the dataset's name
        size = (read_json(job.directory / result_files(False)[0]) or {}).get("num_train") or job.cost / job.cfg.train.epochs
        row["images_per_epoch"] = float(size)
        row["images_seen"] = job.cfg.train.epochs * row["images_per_epoch"]
        # a run that kept only its last checkpoint has no course to trace: its end is the row itself
        kept = len(epoch_checkpoints(job.directory)) > 1
        spacing = trace_spacing(every, every_images, row["images_per_epoch"])
        points = trace_run(job.directory, every=spacing) if trace and kept else \
            (read_json(job.directory / TRACE_FILE) or {})
        if trace:  # points stored at another spacing stay on disk, not in this ladder
            points = {name: p for name, p in points.items() if p["epoch"] % spacing == 0}
        row["trace"] = [{"images_seen": p["epoch"] * row["images_per_epoch"], "knn_top1": p["knn_top1"],
                         **{short: p[long] for short, long in TRACE_MEASURES.items()},
                         **{f"{short}_gain": (p[long] - row[f"{short}_init"]
                                              if p[long] is not None and row.get(f"{short}_init") is not None else None)
                            for short, long in TRACE_MEASURES.items()}}
                        for p in sorted(points.values(), key=lambda p: p["epoch"])]
        rows.append(row)
    return rows


def _by_method(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    by_method: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], {})[row["seed"]] = row
    return by_method


def check_pool(names: Sequence[str], pool: Sequence[str]) -> None:
    """Refuse a pool that is not two or more different rungs of this ladder (a :class:`ConfigError`
    naming what was given and what is allowed)."""
    if len(set(pool)) < 2 or len(set(pool)) < len(pool) or set(pool) - set(names):
        raise ConfigError(f"pooling needs two or more different rungs of this ladder ({', '.join(names)}); "
                          f"got {list(pool)}")


def pooled_differences(rungs: dict[str, list[dict[str, Any]]], pool: Sequence[str], method: str,
                       baseline: str) -> dict[str, Any]:
    """``method − baseline`` over the seed pairs of several rungs together, each pair (rung, seed)
    one observation: whether a difference holds across the better-trained rungs when each has
    too few pairs alone. Rung-to-rung differences count as spread, so the interval is wider than
    one that models them, not narrower."""
    check_pool(list(rungs), pool)
    values: dict[str, tuple[dict, dict]] = {key: ({}, {}) for key in DIFFERENCES}
    for rung in pool:
        by_method = _by_method(rungs[rung])
        for key in DIFFERENCES:
            for side, name in zip(values[key], (method, baseline)):
                side.update({(rung, seed): row.get(key) for seed, row in by_method.get(name, {}).items()})
    return {"rungs": list(pool),
            "differences": {key: paired_difference(ours, theirs).to_dict() for key, (ours, theirs) in values.items()}}


def summarize(rungs: dict[str, list[dict[str, Any]]], method: str, baseline: str,
              pool: Sequence[str] = ()) -> dict[str, Any]:
    """Per rung: levels per method and ``method − baseline`` paired by seed; with ``pool``, also
    those rungs' pairs together (:func:`pooled_differences`)."""
    result: dict[str, Any] = {"method": method, "baseline": baseline, "rungs": {}}
    if pool:
        result["pooled"] = pooled_differences(rungs, pool, method, baseline)
    for rung, rows in rungs.items():
        by_method = _by_method(rows)
        levels = {m: {key: [r.get(key) for r in seeds.values()] for key in LEVELS}
                  for m, seeds in by_method.items()}
        images = sorted({r["images_seen"] for r in rows})
        differences = {}
        if method in by_method and baseline in by_method:
            for key in DIFFERENCES:
                differences[key] = paired_difference({s: r.get(key) for s, r in by_method[method].items()},
                                                     {s: r.get(key) for s, r in by_method[baseline].items()}).to_dict()
        result["rungs"][rung] = {"images_seen": images, "runs": {m: sorted(s) for m, s in by_method.items()},
                                 "levels": levels, "differences": differences}
    return result


def format_ladder(result: dict[str, Any]) -> str:
    """ladder.md: one table of levels and one of paired differences."""
    method, baseline = result["method"], result["baseline"]
    lines = ["# Scale ladder\n",
             f"Levels: mean ± sd over seeds (%, the open share in % of gates). Differences: {method} − "
             f"{baseline} paired by seed, mean [95 % t interval] (n = pairs); * where the interval excludes 0.\n"]
    level_rows = []
    for rung, block in result["rungs"].items():
        for m, values in block["levels"].items():
            level_rows.append([rung, ", ".join(f"{i:,.0f}" for i in block["images_seen"]), m,
                               *(format_mean_sd(values[k], digits=2, scale=100.0 if k == "open_rate" else 1.0)
                                 for k in LEVELS)])
    lines.append(markdown_table(["rung", "images seen", "method", *(LABELS[k] for k in LEVELS)], level_rows))
    lines.append(f"\n{method} − {baseline}:\n")
    table = [[rung, *(format_difference(block["differences"].get(k), mark=True) for k in DIFFERENCES)]
             for rung, block in result["rungs"].items()]
    pooled = result.get("pooled")
    if pooled:
        table.append([f"pooled: {' + '.join(pooled['rungs'])}",
                      *(format_difference(pooled["differences"].get(k), mark=True) for k in DIFFERENCES)])
    lines.append(markdown_table(["rung", *(LABELS[k] for k in DIFFERENCES)], table))
    if pooled:
        lines.append("\nPooled: the seed pairs of those rungs together, each (rung, seed) one pair; the rungs' "
                     "own differences count as spread (a wider interval than one that models them).")
    return "\n".join(lines)


def _paired_trace(rows: list[dict[str, Any]], method: str, baseline: str, key: str) -> dict[float, list[float]]:
    """images seen -> per-seed ``method − baseline`` of ``key`` along training (seeds with both traced)."""
    by = {(r["method"], r["seed"]): {p["images_seen"]: p.get(key) for p in r["trace"]} for r in rows}
    out: dict[float, list[float]] = {}
    for (m, seed), points in by.items():
        if m != method or (baseline, seed) not in by:
            continue
        for images, value in points.items():
            other = by[(baseline, seed)].get(images)
            if value is not None and other is not None:
                out.setdefault(images, []).append(value - other)
    return out


def gain_figure(rungs: dict[str, list[dict[str, Any]]], result: dict[str, Any]) -> Figure:
    """The paired ``method − baseline`` gain (plain and weighted SC) against training images seen:
    each rung's end point with its 95 % interval, and the traced runs' checkpoints (seed mean)."""
    method, baseline = result["method"], result["baseline"]
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = ["#38598b", "#c0504d", "#4f8f4f", "#8064a2", "#f79646"]
    for ax, key in zip(axes, ("sc_gain", "sc_weighted_gain")):
        ax.axhline(0.0, color="#888888", linewidth=0.8)
        for i, (rung, rows) in enumerate(rungs.items()):
            colour = colours[i % len(colours)]
            d = result["rungs"][rung]["differences"].get(key) or {}
            images = result["rungs"][rung]["images_seen"]
            if d.get("mean") is not None and images:
                low = d["mean"] - d["lower"] if d.get("lower") is not None else 0.0
                high = d["upper"] - d["mean"] if d.get("upper") is not None else 0.0
                ax.errorbar([images[-1]], [d["mean"]], yerr=[[low], [high]], fmt="s", color=colour, capsize=4,
                            markersize=7, label=f"{literal_text(rung)} (end, n={d['pairs']})")
            trace = _paired_trace(rows, method, baseline, key)
            if len(trace) > 1:  # a course needs two checkpoints at least
                xs = sorted(trace)
                ax.plot(xs, [float(np.mean(trace[x])) for x in xs], "-", color=colour, alpha=0.6,
                        label=f"{literal_text(rung)} along training (seed mean)")
        ax.set_xscale("log")
        ax.set_xlabel("training images seen (epochs × images)")
        ax.set_ylabel(f"{LABELS[key]}: {literal_text(method)} − {literal_text(baseline)} (points)")
        ax.set_title(LABELS[key])
        ax.legend(fontsize=7)
    return fig


def sc_knn_figure(rungs: dict[str, list[dict[str, Any]]], methods: Sequence[str]) -> Figure:
    """SC (plain and weighted) against k-NN top-1 on h, one colour per method: every finished run
    (squares) and every traced checkpoint (dots)."""
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = dict(zip(methods, ["#38598b", "#c0504d", "#4f8f4f", "#8064a2"]))
    for ax, key in zip(axes, ("sc", "sc_weighted")):
        for m in methods:
            rows = [r for rs in rungs.values() for r in rs if r["method"] == m]
            ax.plot([p["knn_top1"] for r in rows for p in r["trace"]], [p[key] for r in rows for p in r["trace"]],
                    "o", color=colours[m], markersize=3, alpha=0.4)
            ax.plot([r["knn_top1"] for r in rows], [r[key] for r in rows], "s", color=colours[m], markersize=6,
                    label=f"{literal_text(m)} (squares: end of run; dots: checkpoints)")
        ax.set_xlabel("k-NN top-1 on h (%)")
        ax.set_ylabel(f"{LABELS[key]} of gated z (%)")
        ax.legend(fontsize=7)
    return fig


def write_ladder(specs: Sequence[SuiteSpec], dataset: str, out_dir: str | Path, method: str = "bayesncl_ste",
                 baseline: str = "ncl", trace: bool = True, every: int = 10, every_images: int | None = None,
                 pool: Sequence[str] = ()) -> Path:
    """Read every rung (suite), measure traces where checkpoints were kept, write ``ladder.md``,
    ``ladder.json``, ``ladder_gain.png`` and ``ladder_sc_knn.png`` into ``out_dir``; ``pool``
    names rungs whose pairs are also taken together (:func:`pooled_differences`)."""
    out = Path(out_dir)
    names = [spec.path.stem for spec in specs]
    if pool:  # refused before any checkpoint is measured
        check_pool(names, pool)
    rungs = {spec.path.stem: rung_rows(spec, dataset, trace, every, every_images) for spec in specs}
    result = summarize(rungs, method, baseline, pool)
    atomic_write_json(out / "ladder.json", {**result, "rows": {k: [{key: r.get(key) for key in (
        "name", "seed", "method", "images_seen", *LEVELS)} | {"trace": r["trace"]} for r in v] for k, v in rungs.items()}})
    save_figure(gain_figure(rungs, result), out / "ladder_gain.png")
    save_figure(sc_knn_figure(rungs, [method, baseline]), out / "ladder_sc_knn.png")
    return atomic_write_text(out / "ladder.md", format_ladder(result))
