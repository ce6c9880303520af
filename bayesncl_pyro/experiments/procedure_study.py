"""Does the evaluation procedure move SC, or the gain of the gates? A suite's finished runs
measured under several procedures (:mod:`bayesncl_pyro.evaluation.procedure`), with paired
differences by seed.

For every dataset and procedure: each method's plain, supported and weighted SC (trained, and
the gain over the same network at initialisation); each method − the first method of the suite
(NCL in the shipped suites), paired by seed, also relative to the baseline as the paper states
its gains (100 (method / baseline − 1), %); and each procedure − the first procedure (ours,
running statistics) on the same runs, paired by seed — for the levels and for the difference
between methods. Written as ``procedure.md``, ``procedure.json`` and ``procedure.png`` into the
suite's folder.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure
from tqdm.auto import tqdm

from bayesncl_pyro.evaluation.markdown import markdown_table
from bayesncl_pyro.evaluation.plots import literal_text, save_figure
from bayesncl_pyro.evaluation.procedure import PROCEDURES, evaluate_procedures
from bayesncl_pyro.experiments.stats import format_difference, format_mean_sd, mean_sd, paired_difference
from bayesncl_pyro.experiments.suite import Job, SuiteSpec, plan
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text
from bayesncl_pyro.training.loop import SUMMARY_FILE

MEASURES = ("semantic_consistency", "semantic_consistency_supported", "semantic_consistency_weighted")
SHORT = {"semantic_consistency": "SC", "semantic_consistency_supported": "supported SC",
         "semantic_consistency_weighted": "weighted SC"}
DEFAULT_PROCEDURES = tuple(PROCEDURES)


def _values(entry: dict[str, Any], measure: str) -> tuple[float | None, float | None]:
    """(trained value, gain over initialisation) of one measure of one procedure entry."""
    trained, init = (entry.get("trained") or {}).get(measure), (entry.get("init") or {}).get(measure)
    gain = trained - init if trained is not None and init is not None else None
    return trained, gain


def _relative(value: float | None, baseline: float | None) -> float | None:
    """100 (value / baseline − 1), None where either is missing or the baseline is 0."""
    if value is None or baseline is None or baseline == 0:
        return None
    return 100.0 * (value / baseline - 1.0)


def _gap(seeds: dict[int, Any], base: dict[int, Any], seed: int, procedure: str, measure: str) -> float | None:
    """method − baseline of one measure on one seed under one procedure (None when either is missing)."""
    value = _values(seeds[seed][procedure], measure)[0]
    other = _values(base[seed][procedure], measure)[0] if seed in base else None
    return value - other if value is not None and other is not None else None


def measure_suite(spec: SuiteSpec, names: Sequence[str] = DEFAULT_PROCEDURES, device: str | None = None,
                  progress: bool = True) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """{dataset: {method: {seed: {procedure: entry}}}} for every finished run of the suite
    (a run without ``summary.json`` is still training and is left out)."""
    jobs: list[Job] = [j for j in plan(spec) if j.sweep_point is None and (j.directory / SUMMARY_FILE).is_file()]
    found: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for job in tqdm(jobs, disable=not progress, desc="runs under each evaluation procedure", unit="run"):
        found.setdefault(job.dataset, {}).setdefault(job.method, {})[job.seed] = \
            evaluate_procedures(job.directory, names, device)
    return found


def summarize(found: dict[str, dict[str, dict[int, dict[str, Any]]]], names: Sequence[str]) -> dict[str, Any]:
    """The study's numbers (module docstring) from :func:`measure_suite`'s result."""
    result: dict[str, Any] = {"procedures": {n: PROCEDURES[n].to_dict() for n in names}, "datasets": {}}
    for dataset, methods in found.items():
        baseline_method = next(iter(methods))
        block: dict[str, Any] = {"levels": [], "methods": [], "procedures": []}
        for name in names:
            for method, seeds in methods.items():
                row = {"procedure": name, "method": method, "runs": len(seeds),
                       "classes_per_batch": [e[name]["mean_classes_per_batch"] for e in seeds.values()][:1]}
                for m in MEASURES:
                    row[m] = [_values(e[name], m)[0] for e in seeds.values()]
                    row[f"{m}_gain"] = [_values(e[name], m)[1] for e in seeds.values()]
                row["open_rate"] = [(e[name].get("trained") or {}).get("open_rate") for e in seeds.values()]
                block["levels"].append(row)
            for method, seeds in methods.items():
                if method == baseline_method:
                    continue
                base = methods[baseline_method]
                for m in MEASURES:
                    for suffix, pick in (("", 0), ("_gain", 1)):
                        diff = paired_difference({s: _values(e[name], m)[pick] for s, e in seeds.items()},
                                                 {s: _values(e[name], m)[pick] for s, e in base.items()})
                        block["methods"].append({"procedure": name, "method": method, "against": baseline_method,
                                                 "measure": m + suffix, **diff.to_dict()})
                    # the paper states its gains relative to NCL: 100 (method / baseline − 1) of the trained level
                    ratios = {s: _relative(_values(e[name], m)[0], _values(base[s][name], m)[0])
                              for s, e in seeds.items() if s in base}
                    diff = paired_difference(ratios, {s: 0.0 for s in ratios})
                    block["methods"].append({"procedure": name, "method": method, "against": baseline_method,
                                             "measure": m + "_relative_percent", **diff.to_dict()})
        first = names[0]
        for name in names[1:]:
            for method, seeds in methods.items():
                for m in MEASURES:
                    diff = paired_difference({s: _values(e[name], m)[0] for s, e in seeds.items()},
                                             {s: _values(e[first], m)[0] for s, e in seeds.items()})
                    block["procedures"].append({"procedure": name, "against": first, "method": method,
                                                "measure": m, **diff.to_dict()})
            for method, seeds in methods.items():
                if method == baseline_method:
                    continue
                base = methods[baseline_method]
                for m in MEASURES:
                    diff = paired_difference({s: _gap(seeds, base, s, name, m) for s in seeds},
                                             {s: _gap(seeds, base, s, first, m) for s in seeds})
                    block["procedures"].append({"procedure": name, "against": first,
                                                "method": f"{method} − {baseline_method}", "measure": m,
                                                **diff.to_dict()})
                    relative = {proc: {s: _relative(_values(e[proc], m)[0], _values(base[s][proc], m)[0])
                                       for s, e in seeds.items() if s in base} for proc in (name, first)}
                    diff = paired_difference(relative[name], relative[first])
                    block["procedures"].append({"procedure": name, "against": first,
                                                "method": f"{method} / {baseline_method} − 1 (%)", "measure": m,
                                                **diff.to_dict()})
        result["datasets"][dataset] = block
    return result


def format_study(result: dict[str, Any]) -> str:
    """procedure.md: the settings, then per dataset the levels, the method differences and the
    procedure differences (95 % t intervals over paired seeds)."""
    lines = ["# SC under the evaluation procedure\n",
             "Procedures (batch statistics: every BatchNorm layer normalises with the test batch's own "
             "statistics, as the authors' evaluation does; running: eval mode, ours):\n",
             markdown_table(["procedure", "batchnorm", "order", "batch size", "classes per batch (class_blocks)"],
                            [[n, p["batchnorm"], p["order"], p["batch_size"],
                              p["classes_per_batch"] if p["order"] == "class_blocks" else "–"]
                             for n, p in result["procedures"].items()]),
             "Values in % (SC) and % (hard-gate open share); mean ± sd over seeds; differences are paired by seed, "
             "mean [95 % t interval] (n = pairs).\n"]
    for dataset, block in result["datasets"].items():
        lines.append(f"## {dataset}\n")
        lines.append(markdown_table(
            ["procedure", "method", "runs", "classes per test batch", *(SHORT[m] for m in MEASURES),
             *(f"{SHORT[m]} gain" for m in MEASURES), "hard-gate open share (%)"],
            [[r["procedure"], r["method"], r["runs"],
              r["classes_per_batch"][0] if r["classes_per_batch"] and
              result["procedures"][r["procedure"]]["batchnorm"] == "batch" else "–",
              *(format_mean_sd(r[m], digits=2) for m in MEASURES),
              *(format_mean_sd(r[f"{m}_gain"], digits=2) for m in MEASURES),
              format_mean_sd(r["open_rate"], digits=2, scale=100.0)] for r in block["levels"]]))
        lines.append("Between methods, under each procedure:\n")
        lines.append(markdown_table(["procedure", "difference", "measure", "mean [95 % CI]"],
                                    [[r["procedure"], f"{r['method']} − {r['against']}", r["measure"], format_difference(r)]
                                     for r in block["methods"]]))
        lines.append("Between procedures, on the same runs:\n")
        lines.append(markdown_table(["procedure", "of", "measure", "mean [95 % CI]"],
                                    [[f"{r['procedure']} − {r['against']}", r["method"], r["measure"], format_difference(r)]
                                     for r in block["procedures"]]))
    return "\n".join(lines)


def study_figure(result: dict[str, Any]) -> Figure:
    """Per dataset (rows): SC, weighted SC and their gains (columns) of each method under each
    procedure, mean ± sd over seeds (squares) and every seed (dots)."""
    datasets = list(result["datasets"])
    keys = ("semantic_consistency", "semantic_consistency_gain", "semantic_consistency_weighted",
            "semantic_consistency_weighted_gain")
    fig = Figure(figsize=(13.0, 3.4 * max(1, len(datasets))), layout="constrained")
    axes = fig.subplots(max(1, len(datasets)), len(keys), squeeze=False)
    colours = ["#c0504d", "#38598b", "#4f8f4f", "#8064a2"]
    for row, dataset in zip(axes, datasets):
        levels = result["datasets"][dataset]["levels"]
        procedures = list(dict.fromkeys(r["procedure"] for r in levels))
        methods = list(dict.fromkeys(r["method"] for r in levels))
        for ax, key in zip(row, keys):
            for j, method in enumerate(methods):
                offset = (j - (len(methods) - 1) / 2) * 0.2
                for i, proc in enumerate(procedures):
                    values = next(r[key] for r in levels if r["procedure"] == proc and r["method"] == method)
                    mean, sd, n = mean_sd(values)
                    if n == 0:
                        continue
                    ax.errorbar([i + offset], [mean], yerr=[0.0 if math.isnan(sd) else sd], fmt="s",
                                color=colours[j % len(colours)], capsize=3,
                                label=literal_text(method) if i == 0 else None)
                    finite = [v for v in values if v is not None]
                    ax.plot([i + offset] * len(finite), finite, "o", color=colours[j % len(colours)],
                            markersize=2.5, alpha=0.6)
            ax.set_xticks(range(len(procedures)))
            ax.set_xticklabels([literal_text(p) for p in procedures], rotation=20, ha="right", fontsize=8)
            label = SHORT[key.removesuffix("_gain")] + (" gain (points)" if key.endswith("_gain") else " (%)")
            ax.set_ylabel(label, fontsize=9)
            ax.set_title(f"{literal_text(dataset)}: {label}", fontsize=9)
            if key.endswith("_gain"):
                ax.axhline(0.0, color="#888888", linewidth=0.8)
        row[0].legend(fontsize=7)
    return fig


def write_study(spec: SuiteSpec, names: Sequence[str] = DEFAULT_PROCEDURES, device: str | None = None,
                progress: bool = True) -> Path:
    """Measure, summarise and write ``procedure.md`` / ``procedure.json``; returns the .md path."""
    result = summarize(measure_suite(spec, names, device, progress), names)
    atomic_write_json(spec.out_dir / "procedure.json", result)
    save_figure(study_figure(result), spec.out_dir / "procedure.png")
    return atomic_write_text(spec.out_dir / "procedure.md", format_study(result))
