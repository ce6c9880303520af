"""The optimisation conflict across runs: background against object dimensions and one method
against another, paired by seed, over training (:mod:`bayesncl_pyro.evaluation.gradient_conflict`
measures one run; this compares many).

Every run result (``conflict.json``) holds, per checkpoint (epoch 0 = initialisation), the mean
of each statistic over the dimensions of each group. A comparison takes one number per seed:

- within a method, background − object (both from the same run);
- between methods, ``method`` − ``against`` on one group (runs paired by seed);
- the difference of those: (background − object)_method − (background − object)_against;
- without labels, within a method: Spearman's ρ across dimensions between how shared a dimension
  is (the share of images on which it fires) and the statistic (:func:`sharing_correlation`);

at the last epoch that all runs reached, and averaged over the trained epochs that all runs have
(one mean per run first). Figures show the epochs all runs have. Intervals are the project's paired t intervals (:func:`.stats.paired_difference`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.evaluation.plots import literal_text, save_figure
from bayesncl_pyro.experiments.stats import CONFIDENCE, finite_values, paired_difference, t_quantile

SHOWN = ("opposite", "opposite_open", "cancellation", "summed_cancellation", "sign_disagreement")
"""The statistics of the figure and the table (the others are kept in the JSON)."""
TABLED = (*SHOWN, "active")
"""The table adds how shared a group's dimensions are (``active``: the share of rows on which a
dimension is live), the premise of the paper's mechanism and of a frequency-aware prior."""
TITLES = {
    "opposite": "opposite signs (share of live entries)",
    "opposite_open": "opposite signs where the gate is open",
    "cancellation": "cancellation 1 − |g⁺+g⁻| / (|g⁺|+|g⁻|)",
    "summed_cancellation": "cancellation of the batch-summed gradient",
    "sign_disagreement": "sign disagreement between batches",
}


def by_method(results: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, Mapping[str, Any]]]:
    """Run results keyed by method, then seed. Two runs of one method with one seed are refused."""
    table: dict[str, dict[int, Mapping[str, Any]]] = {}
    for result in results:
        seeds = table.setdefault(result["method"], {})
        if result["seed"] in seeds:
            raise ConfigError(f"two runs of method {result['method']} with seed {result['seed']}: "
                             f"{seeds[result['seed']]['run']} and {result['run']}; allowed: one per seed")
        seeds[result["seed"]] = result
    return table


def value(result: Mapping[str, Any], epoch: int, group: str, statistic: str) -> float:
    """A run's group mean of ``statistic`` at ``epoch`` (NaN when the run lacks it)."""
    for checkpoint in result["checkpoints"]:
        if checkpoint["epoch"] == epoch:
            number = checkpoint["groups"][group].get(statistic)
            return math.nan if number is None else float(number)
    return math.nan


def contrast(result: Mapping[str, Any], epoch: int, statistic: str) -> float:
    """background − object of one run at ``epoch``."""
    return value(result, epoch, "background", statistic) - value(result, epoch, "object", statistic)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n−1 of ``values``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    start = np.cumsum(counts) - counts
    return (start + (counts - 1) / 2.0)[inverse]


def rank_correlation(x: Sequence[Any], y: Sequence[Any]) -> float:
    """Spearman's ρ of the pairs where both are finite numbers (NaN for fewer than three pairs or
    a constant side): the Pearson correlation of their average ranks."""
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if finite_values([a]) and finite_values([b])]
    if len(pairs) < 3:
        return math.nan
    rx, ry = (average_ranks(np.array(side)) for side in zip(*pairs))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float((rx ** 2).sum() * (ry ** 2).sum()))
    return float((rx * ry).sum()) / norm if norm > 0 else math.nan


def sharing_correlation(result: Mapping[str, Any], epoch: int, statistic: str) -> float:
    """Across the live dimensions of one run at ``epoch``: Spearman's ρ between how shared a
    dimension is (``active``, the share of rows on which it is live) and ``statistic``. The
    paper's mechanism predicts ρ > 0: the more images share a dimension, the more its positive
    and negative parts fight. No labels involved."""
    for checkpoint in result["checkpoints"]:
        if checkpoint["epoch"] == epoch:
            per_dimension = checkpoint["per_dimension"]
            return rank_correlation(per_dimension["active"], per_dimension[statistic])
    return math.nan


def common_epochs(results: Iterable[Mapping[str, Any]]) -> list[int]:
    """The epochs (0 included) that every run has a checkpoint of."""
    sets = [{c["epoch"] for c in result["checkpoints"]} for result in results]
    return sorted(set.intersection(*sets)) if sets else []


def trained_epochs(results: Iterable[Mapping[str, Any]]) -> list[int]:
    """The epochs ≥ 1 that every run has a checkpoint of."""
    return [e for e in common_epochs(results) if e >= 1]


def _per_seed(runs: Mapping[int, Mapping[str, Any]], epochs: Sequence[int], pick) -> dict[int, float]:
    """seed -> mean over ``epochs`` of ``pick(result, epoch)`` (finite values only; NaN if none)."""
    out = {}
    for seed, result in runs.items():
        values = finite_values(pick(result, e) for e in epochs)
        out[seed] = sum(values) / len(values) if values else math.nan
    return out


def comparisons(results: Iterable[Mapping[str, Any]], method: str, against: str,
                statistics: Sequence[str] = SHOWN) -> list[dict[str, Any]]:
    """Rows of the paired comparisons (module docstring) for each statistic, at the last common
    epoch (``when`` = ``"epoch E"``) and averaged over the trained epochs all runs have
    (``"mean of epochs 2, 6, 10"``)."""
    table = by_method(results)
    if method not in table or against not in table:
        raise ConfigError(f"methods {method!r} and {against!r} are not both among the runs; allowed: "
                         f"{', '.join(sorted(table))}")
    epochs = trained_epochs([r for m in (method, against) for r in table[m].values()])
    if not epochs:
        raise ConfigError("the runs share no trained epoch (no epoch_NNNN.pt common to all)")
    rows = []
    for statistic in statistics:
        def diff(r, e, s=statistic):
            return contrast(r, e, s)

        def background(r, e, s=statistic):
            return value(r, e, "background", s)

        def obj(r, e, s=statistic):
            return value(r, e, "object", s)

        def sharing(r, e, s=statistic):
            return sharing_correlation(r, e, s)

        for when, span in ((f"epoch {epochs[-1]}", epochs[-1:]), (f"mean of epochs {', '.join(map(str, epochs))}", epochs)):
            def seeds(name, pick, span=span):
                return _per_seed(table[name], span, pick)

            cases = [
                (f"{against}: background − object", seeds(against, diff), {s: 0.0 for s in table[against]}),
                (f"{method}: background − object", seeds(method, diff), {s: 0.0 for s in table[method]}),
                (f"background: {method} − {against}", seeds(method, background), seeds(against, background)),
                (f"object: {method} − {against}", seeds(method, obj), seeds(against, obj)),
                (f"(background − object): {method} − {against}", seeds(method, diff), seeds(against, diff)),
            ]
            if statistic != "active":  # ρ(active, active) = 1 says nothing
                cases += [(f"{name}: ρ(active, {statistic}) across dims", seeds(name, sharing),
                           {s: 0.0 for s in table[name]}) for name in (against, method)]
            for name, left, right in cases:
                rows.append({"statistic": statistic, "when": when, "comparison": name,
                             **paired_difference(left, right).to_dict()})
    return rows


def level_means(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per method, group and statistic: the seeds' mean at every epoch with its t interval
    (``{"epochs": [...], "mean": [...], "lower": [...], "upper": [...], "seeds": n}``), and
    the mean number of dimensions of each group."""
    table = by_method(results)
    out: dict[str, Any] = {}
    for method, seeds in table.items():
        epochs = common_epochs(seeds.values())
        statistics = next(iter(seeds.values()))["statistics"] + ["dims"]
        for group in ("background", "object", "class"):
            for statistic in statistics:
                columns = [mean_interval([value(r, e, group, statistic) for r in seeds.values()]) for e in epochs]
                out.setdefault(method, {}).setdefault(group, {})[statistic] = {
                    "epochs": epochs, "mean": [c[0] for c in columns], "lower": [c[1] for c in columns],
                    "upper": [c[2] for c in columns], "seeds": len(seeds)}
    return out


def mean_interval(values: Iterable[Any], level: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, lower, upper): the t interval of the mean of the finite values (NaN bounds for
    fewer than two)."""
    clean = finite_values(values)
    n = len(clean)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(clean) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def difference_series(results: Iterable[Mapping[str, Any]], method: str, against: str,
                      statistic: str) -> dict[str, dict[str, list[float]]]:
    """Per epoch, the paired differences of the figure's lower row: background − object of each
    method, and ``method`` − ``against`` on the background dimensions."""
    table = by_method(results)
    epochs = common_epochs([r for m in (method, against) for r in table[m].values()])
    series: dict[str, dict[str, list[float]]] = {}

    def add(name: str, left_of, right_of) -> None:
        entry = series.setdefault(name, {"epochs": epochs, "mean": [], "lower": [], "upper": []})
        for e in epochs:
            d = paired_difference(left_of(e), right_of(e))
            entry["mean"].append(d.mean)
            entry["lower"].append(d.lower)
            entry["upper"].append(d.upper)

    for name in (against, method):
        add(f"{name}: background − object",
            lambda e, n=name: {s: contrast(r, e, statistic) for s, r in table[n].items()},
            lambda e, n=name: {s: 0.0 for s in table[n]})
    add(f"background: {method} − {against}",
        lambda e: {s: value(r, e, "background", statistic) for s, r in table[method].items()},
        lambda e: {s: value(r, e, "background", statistic) for s, r in table[against].items()})
    return series


COLOURS = {0: "#38598b", 1: "#c0504d", 2: "#6a8f3a"}


def conflict_figure(results: Sequence[Mapping[str, Any]], method: str, against: str,
                    statistics: Sequence[str] = SHOWN) -> Figure:
    """Top row: each statistic over epochs, mean over seeds with its 95 % t interval (band), for
    background (solid) and object (dashed) dimensions of both methods. Bottom row: the paired
    differences of :func:`difference_series` with their 95 % intervals, and 0."""
    levels = level_means(results)
    fig = Figure(figsize=(4.2 * len(statistics), 7.5), layout="constrained")
    axes = fig.subplots(2, len(statistics), squeeze=False)
    for col, statistic in enumerate(statistics):
        ax = axes[0, col]
        for k, name in enumerate((against, method)):
            for group, style in (("background", "-"), ("object", "--")):
                s = levels[name][group][statistic]
                ax.plot(s["epochs"], s["mean"], style, color=COLOURS[k], marker="o", markersize=3,
                        label=f"{literal_text(name)}, {group}")
                ax.fill_between(s["epochs"], _finite(s["lower"]), _finite(s["upper"]), color=COLOURS[k], alpha=0.12)
        ax.set_title(TITLES.get(statistic, statistic), fontsize=9)
        ax.set_xlabel("epoch (0 = initialisation)", fontsize=8)
        ax.set_ylim(-0.02, 1.02)  # every statistic is a share
        if col == 0:
            ax.set_ylabel("mean over a group's dimensions", fontsize=8)
            ax.legend(fontsize=7)
        ax = axes[1, col]
        for k, (name, s) in enumerate(difference_series(results, method, against, statistic).items()):
            ax.plot(s["epochs"], s["mean"], "-", color=COLOURS[k], marker="o", markersize=3, label=literal_text(name))
            ax.fill_between(s["epochs"], _finite(s["lower"]), _finite(s["upper"]), color=COLOURS[k], alpha=0.15)
        ax.axhline(0.0, color="black", linewidth=0.8)
        for row in axes[:, col]:
            row.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0 = initialisation)", fontsize=8)
        if col == 0:
            ax.set_ylabel("paired difference (95 % t interval)", fontsize=8)
            ax.legend(fontsize=7)
    seeds = min(len(v) for v in by_method(results).values())
    fig.suptitle(f"InfoNCE gradient on z split into positive- and negative-pair parts, per dimension: "
                 f"{literal_text(method)} vs {literal_text(against)}, {seeds} paired seeds (bands: 95 % t intervals)", fontsize=10)
    return fig


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.array([v if v is not None and math.isfinite(v) else np.nan for v in values], dtype=float)


def plot_conflict(results: Sequence[Mapping[str, Any]], method: str, against: str, path: str | Path,
                  statistics: Sequence[str] = SHOWN) -> Path:
    """Save :func:`conflict_figure` as a PNG at ``path``."""
    return save_figure(conflict_figure(results, method, against, statistics), path)


def markdown_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """The comparison rows as a Markdown table: mean [lower, upper] (pairs)."""
    lines = ["| statistic | when | comparison | mean paired difference [95 % CI] | pairs |",
             "|---|---|---|---|---|"]

    def number(v) -> str:
        return "–" if v is None or not math.isfinite(v) else f"{v:+.{digits}f}"

    for row in rows:
        lines.append(f"| {row['statistic']} | {row['when']} | {row['comparison']} | {number(row['mean'])} "
                     f"[{number(row['lower'])}, {number(row['upper'])}] | {row['pairs']} |")
    return "\n".join(lines) + "\n"
