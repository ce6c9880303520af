"""Named result suites (``configs/suites/*.yaml``): train every method × seed on every dataset,
evaluate at initialisation and after training, inspect, sweep, and write tables and figures.

A suite file::

    out_dir: runs/suites/cpu
    prepare:                                  # inputs made once (each skipped when ``into`` exists)
      - {archive: ../shared/data/cifar10-jpeg.tar.gz, into: ~/.cache/bayesncl_pyro/datasets/cifar10-jpeg}
      - {backbone_of: runs/suites/cpu_seeds/runs/scenes/simclr/seed0, into: runs/encoders/scenes.pt}
    base: ../scenes_quick.yaml                # relative to the suite file
    overrides: [train.epochs=10]              # every run
    datasets:                                 # name -> overrides
      scenes: [data.name=scenes]
    methods:                                  # name -> overrides (a method is a bundle of keys)
      simclr: [gate.prior=none, model.nonneg=none]
      bayesncl_ste: [gate.prior=bernoulli, gate.estimator=ste]
    seeds: [0, 1]
    inspect: {draws: 100, seeds: [0]}         # ArviZ export for these seeds of gated methods
    true_elbo: {samples: 64, seed: 0}
    comparisons:                              # optional: paired differences (by seed), 95 % t CI
      - {method: bayesncl_ste, against: ncl, metrics: [sc_gain, linear_top1]}
      - {method: learned_mask, against: bayesncl_ste, suite: cpu_seeds.yaml, metrics: [sc_gain]}
    sweep:                                    # optional: a grid of one method on one dataset
      dataset: scenes
      method: bayesncl_ste
      overrides: [train.epochs=3]
      grid: {gate.kl_weight: [3e-5, 1e-3], gate.prior_prob: [0.5, 0.8]}

The fields shared with ablation grids are read and checked by :mod:`.grid_file`; each run is a
grid point of :mod:`.cells`. A comparison's ``against`` is a method of this suite or, with
``suite`` (a suite file, relative to this one), of that suite, whose finished runs are read (never
trained) and paired with this suite's by dataset name and seed. Every step of every run is skipped when its output file exists, so
re-running a suite resumes it (a run interrupted after a checkpoint resumes from that checkpoint).
An output stands for a run only while the run's recorded config equals the planned one (all keys
but :data:`~bayesncl_pyro.storage.run_directory.NOT_RESULTS`): a suite with a run directory of
another config is refused before any job starts, naming the first difference.
"""
from __future__ import annotations

import itertools
import os
import platform
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from bayesncl_pyro.config import Config, load_config
from bayesncl_pyro.config.errors import DataError
from bayesncl_pyro.evaluation.evaluate import evaluate_run, result_files
from bayesncl_pyro.evaluation.gate_posterior import NETCDF_FILE, inspect_run
from bayesncl_pyro.evaluation.glossary import measured
from bayesncl_pyro.evaluation.sc_variants import ensure_sc_variants, read_sc_variants, sc_variant
from bayesncl_pyro.experiments.cells import (
    TRUE_ELBO_FILE,
    ensure_trained,
    ensure_true_elbo,
)
from bayesncl_pyro.experiments.grid_file import GridFile, TrueElboSettings
from bayesncl_pyro.experiments.grid_points import cell_name, point_overrides
from bayesncl_pyro.experiments.run_results import final_loss, kl_share, probe_not_converged, read_json
from bayesncl_pyro.experiments.stats import paired_difference
from bayesncl_pyro.experiments.suite_report import write_results
from bayesncl_pyro.storage.checkpoints import export_backbone
from bayesncl_pyro.storage.run_directory import check_same_config
from bayesncl_pyro.storage.shared_lock import exclusive
from bayesncl_pyro.training.loop import SUMMARY_FILE

ALLOWED_KEYS = ("out_dir", "prepare", "base", "overrides", "datasets", "methods", "seeds", "inspect",
                "true_elbo", "sweep", "comparisons")
ROW_METRICS = ("sc_init", "sc", "sc_gain", "sc_sampled", "sc_sampled_gain",
               "sc_supported", "sc_supported_init", "sc_supported_gain", "sc_supported_sampled",
               "sc_supported_sampled_init", "sc_supported_sampled_gain", "sc_weighted", "sc_weighted_init",
               "sc_weighted_gain", "sc_weighted_sampled", "sc_weighted_sampled_init", "sc_weighted_sampled_gain",
               "entropy_freq", "entropy_sum",
               "entropy_mean", "sparsity", "active_dims", "open_rate", "linear_top1", "linear_top1_init",
               "knn_top1", "knn_top1_gated", "true_neg_elbo", "surrogate_neg_elbo", "kl_share", "train_seconds", "final_loss",
               "background_closed", "object_open", "linear_top1_agrees", "linear_top1_disagrees", "linear_top1_gap")
"""The numbers of a run's table row (:func:`job_row`): what a comparison may name."""


@dataclass
class Sweep:
    dataset: str
    method: str
    overrides: list[str]
    grid: dict[str, list[Any]]


@dataclass
class Comparison:
    """``method`` − ``against``, paired by seed, on each of ``metrics``; ``against_suite``: the
    suite file ``against`` is read from (None: this suite)."""

    method: str
    against: str
    metrics: list[str]
    against_suite: Path | None = None

    @property
    def label(self) -> str:
        where = f" ({self.against_suite.stem})" if self.against_suite is not None else ""
        return f"{self.method} − {self.against}{where}"


@dataclass
class SuiteSpec:
    path: Path
    out_dir: Path
    base: Path | None
    overrides: list[str]
    datasets: dict[str, list[str]]
    methods: dict[str, list[str]]
    seeds: list[int]
    prepare: list[dict[str, str]] = field(default_factory=list)
    inspect_draws: int = 100
    inspect_seeds: list[int] = field(default_factory=lambda: [0])
    true_elbo: TrueElboSettings = field(default_factory=TrueElboSettings)
    sweep: Sweep | None = None
    comparisons: list[Comparison] = field(default_factory=list)


@dataclass
class Job:
    """One training run of the suite and the steps that follow it."""

    name: str
    directory: Path
    cfg: Config
    dataset: str
    method: str
    seed: int
    sweep_point: dict[str, Any] | None = None
    inspect: bool = False

    @property
    def gated(self) -> bool:
        return self.cfg.gate.prior != "none"

    @property
    def cost(self) -> float:
        """Relative cost, for the suite's time-left estimate: training images seen."""
        size = self.cfg.data.train_subset or (self.cfg.data.scenes.num_train if self.cfg.data.name == "scenes" else 50000)
        return float(self.cfg.train.epochs * size)


# ----------------------------------------------------------------------------- the file

def load_suite(path: str | Path, out_dir: str | Path | None = None) -> SuiteSpec:
    """Read and check a suite file; every run's config is validated by :func:`plan`."""
    file = GridFile(path, "suite file", ALLOWED_KEYS)
    tree = file.tree
    seeds = file.seeds(tree.get("seeds", [0]), "seeds")
    prepare = tree.get("prepare") or []
    kinds = ({"archive", "into"}, {"backbone_of", "into"})
    if not isinstance(prepare, list) or not all(isinstance(p, dict) and set(p) in kinds for p in prepare):
        raise file.error(f"prepare must be a list of {{archive, into}} or {{backbone_of, into}} mappings; got {prepare!r}")
    inspect = tree.get("inspect") or {}
    if not isinstance(inspect, dict) or set(inspect) - {"draws", "seeds"}:
        raise file.error(f"inspect takes draws and seeds; got {inspect!r}")
    draws = inspect.get("draws", 100)
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise file.error(f"inspect.draws={draws!r} is not allowed; allowed: an integer >= 1")
    inspect_seeds = file.seeds(inspect.get("seeds", [seeds[0]]), "inspect.seeds")
    datasets = file.named_overrides(tree.get("datasets"), "datasets")
    methods = file.named_overrides(tree.get("methods"), "methods")
    sweep = None
    if tree.get("sweep"):
        s = tree["sweep"]
        if not isinstance(s, dict) or set(s) - {"dataset", "method", "overrides", "grid"}:
            raise file.error(f"sweep takes dataset, method, overrides, grid; got {s!r}")
        sweep = Sweep(str(s.get("dataset")), str(s.get("method")), file.overrides(s.get("overrides"), "sweep.overrides"),
                      file.axes(s.get("grid"), "sweep.grid"))
        if sweep.dataset not in datasets or sweep.method not in methods:
            raise file.error(f"sweep.dataset={sweep.dataset!r} and sweep.method={sweep.method!r} must name a "
                             f"dataset ({', '.join(datasets)}) and a method ({', '.join(methods)})")
    comparisons = read_comparisons(file, tree.get("comparisons"), methods)
    return SuiteSpec(
        path=file.path,
        out_dir=file.out_dir(out_dir, default=f"runs/suites/{file.path.stem}"),
        base=file.base(),
        overrides=file.overrides(tree.get("overrides"), "overrides"),
        datasets=datasets,
        methods=methods,
        seeds=seeds,
        prepare=[{k: str(v) for k, v in p.items()} for p in prepare],
        inspect_draws=draws,
        inspect_seeds=inspect_seeds,
        true_elbo=file.true_elbo(),
        sweep=sweep,
        comparisons=comparisons,
    )


def read_comparisons(file: GridFile, value: Any, methods: dict[str, list[str]]) -> list[Comparison]:
    """The ``comparisons`` list: each a mapping {method, against, metrics[, suite]}."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise file.error(f"comparisons must be a list of {{method, against, metrics}} mappings; got {value!r}")
    comparisons = []
    for i, item in enumerate(value):
        where = f"comparisons[{i}]"
        if not isinstance(item, dict) or not {"method", "against", "metrics"} <= set(item) \
                or set(item) - {"method", "against", "metrics", "suite"}:
            raise file.error(f"{where} must be a mapping with method, against, metrics (and optionally suite); "
                             f"got {item!r}")
        method, against, metrics = str(item["method"]), str(item["against"]), item["metrics"]
        if method not in methods:
            raise file.error(f"{where}.method={method!r} is not a method of this suite; allowed: {', '.join(methods)}")
        other = None
        if item.get("suite") is not None:
            other = Path(str(item["suite"])).expanduser()
            other = (other if other.is_absolute() else file.path.parent / other).resolve()
            if not other.is_file():
                raise file.error(f"{where}.suite={item['suite']!r} does not exist (looked for {other})")
            other_file = GridFile(other, "suite file", ALLOWED_KEYS)
            other_methods = other_file.named_overrides(other_file.tree.get("methods"), "methods")
        else:
            other_methods = methods
        if against not in other_methods or (other is None and against == method):
            allowed = [m for m in other_methods if other is not None or m != method]
            raise file.error(f"{where}.against={against!r} is not allowed; allowed: {', '.join(allowed)}"
                             + (f" (methods of {other.name})" if other is not None else ""))
        if not isinstance(metrics, list) or not metrics or any(m not in ROW_METRICS for m in metrics):
            raise file.error(f"{where}.metrics={metrics!r} is not allowed; allowed: a non-empty list of "
                             f"{', '.join(ROW_METRICS)}")
        comparisons.append(Comparison(method, against, [str(m) for m in metrics], other))
    return comparisons


def plan(spec: SuiteSpec) -> list[Job]:
    """Every run of the suite: datasets × seeds × methods, then the sweep points."""
    jobs = []
    # seed before method: a suite stopped part-way leaves complete pairs for its comparisons
    for (dataset, data_over), seed, (method, method_over) in itertools.product(
            spec.datasets.items(), spec.seeds, spec.methods.items()):
        directory = spec.out_dir / "runs" / dataset / method / f"seed{seed}"
        cfg = load_config(spec.base, [*spec.overrides, *data_over, *method_over, f"train.seed={seed}",
                                      f"train.out_dir={directory}"])
        jobs.append(Job(f"{dataset}/{method}/seed{seed}", directory, cfg, dataset, method, seed,
                        inspect=seed in spec.inspect_seeds and cfg.gate.prior != "none"))
    if spec.sweep is not None:
        sw = spec.sweep
        for values in itertools.product(*sw.grid.values()):
            point = dict(zip(sw.grid, values))
            label = cell_name(point)
            directory = spec.out_dir / "sweep" / label
            cfg = load_config(spec.base, [*spec.overrides, *spec.datasets[sw.dataset], *spec.methods[sw.method],
                                          *sw.overrides, *point_overrides(point),
                                          f"train.seed={spec.seeds[0]}", f"train.out_dir={directory}"])
            jobs.append(Job(f"sweep/{label}", directory, cfg, sw.dataset, sw.method, spec.seeds[0], sweep_point=point))
    return jobs


# ----------------------------------------------------------------------------- running

RESULTS_LOCK = ".results.lock"
"""In the suite's out_dir: held while the tables are collected and written, so that of two
processes sharing the suite the one that writes last has read every run the other finished."""

def prepare_inputs(spec: SuiteSpec) -> None:
    """Make each input of ``prepare`` once: unpack an ``archive`` (relative to the suite file) into
    its folder (into a temporary sibling, then renamed; under the lock ``<folder>.lock``, so that
    processes sharing a suite unpack it once), or write the backbone weights of a finished run
    ``backbone_of`` (a run directory, relative to the working directory, as ``out_dir`` is) as the
    state dict ``into`` that ``model.weights`` reads."""
    for item in spec.prepare:
        if "backbone_of" in item:
            into = Path(item["into"]).expanduser()
            if not into.is_file():
                export_backbone(Path(item["backbone_of"]), into)
            continue
        archive = Path(item["archive"]).expanduser()
        archive = archive if archive.is_absolute() else (spec.path.parent / archive).resolve()
        into = Path(os.path.expanduser(item["into"]))
        if into.is_dir():
            continue
        if not archive.is_file():
            raise DataError(f"suite {spec.path}: archive {archive} does not exist (needed to fill {into})")
        with exclusive(into.with_name(into.name + ".lock"), f"unpacking {archive} into {into}"):
            if into.is_dir():  # unpacked by the process this one waited for
                continue
            partial = into.with_name(into.name + ".partial")
            partial.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in tqdm(members, desc=f"unpack {archive.name} (files)", unit="file", leave=False):
                    tar.extract(member, partial, filter="data")
            os.replace(partial, into)


def run_job(job: Job, spec: SuiteSpec, progress: bool = False) -> None:
    """Train (or resume), evaluate at init and after training, true ELBO, inspect; each step once."""
    directory = job.directory
    ensure_trained(job.cfg, progress=progress)
    for init in (True, False):
        if not (directory / result_files(init)[0]).is_file():
            evaluate_run(directory, init=init, progress=False)
    ensure_sc_variants(directory)  # a run evaluated before eval.json held the supported / weighted SC
    if job.gated:
        ensure_true_elbo(job.cfg, spec.true_elbo.samples, spec.true_elbo.seed)
    if job.inspect and not (directory / NETCDF_FILE).is_file():
        inspect_run(directory, draws=spec.inspect_draws, progress=False)


def run_suite(spec: SuiteSpec, progress: bool = True, only: Callable[[Job], bool] | None = None) -> dict[str, Any]:
    """Run every unfinished job (``only``: of those it accepts), one progress bar over them
    (weighted by training images), then write ``results.md``, ``results.json`` and the figures
    into ``spec.out_dir`` from every finished run of the suite, so that processes sharing a suite
    through ``only`` each leave whole tables."""
    prepare_inputs(spec)
    jobs = [job for job in plan(spec) if only is None or only(job)]
    for job in jobs:  # all before the first: a changed suite must not fail hours in
        check_same_config(job.directory, job.cfg)
    started = time.perf_counter()
    bar = tqdm(total=sum(j.cost for j in jobs), disable=not progress,
               desc=f"suite {spec.path.stem} (jobs done, weighted by training images)",
               unit="img", unit_scale=True, dynamic_ncols=True)
    try:
        for job in jobs:
            bar.set_postfix_str(job.name)
            run_job(job, spec, progress=False)
            bar.update(job.cost)
    finally:
        bar.close()
    return write_tables(spec, jobs if only is None else None, suite_seconds_this_call=time.perf_counter() - started)


def write_tables(spec: SuiteSpec, jobs: Sequence[Job] | None = None, **extra: Any) -> dict[str, Any]:
    """Collect the rows of ``jobs`` (default: every run of the suite) and write ``results.md``,
    ``results.json`` and the figures, under the suite's :data:`RESULTS_LOCK`; ``extra`` goes into
    the results as it is."""
    with exclusive(spec.out_dir / RESULTS_LOCK, f"writing the tables of {spec.out_dir}"):
        results = {**collect(spec, jobs), **extra}
        write_results(spec, results)
    return results


# ----------------------------------------------------------------------------- results

def job_row(job: Job) -> dict[str, Any]:
    """The numbers of one run that the tables show: None where not measured (no eval.json yet),
    nan where measured but not defined (a null in eval.json), so that the tables can tell them apart."""
    d = job.directory
    trained = read_json(d / result_files(False)[0]) or {}
    init = read_json(d / result_files(True)[0]) or {}
    summary, elbo = read_json(d / SUMMARY_FILE) or {}, read_json(d / TRUE_ELBO_FILE) or {}

    def gated(result: dict, key: str, features: str = "gated") -> float | None:
        return measured((result.get("metrics") or {}).get(features), key)

    row: dict[str, Any] = {
        "name": job.name, "dataset": job.dataset, "method": job.method, "seed": job.seed,
        "sc_init": gated(init, "semantic_consistency"),
        "sc": gated(trained, "semantic_consistency"),
        "sc_sampled_init": gated(init, "semantic_consistency", "gated_sampled"),
        "sc_sampled": gated(trained, "semantic_consistency", "gated_sampled"),
        "entropy_freq": gated(trained, "semantic_entropy_frequency"),
        "entropy_sum": gated(trained, "semantic_entropy_sum"),
        "entropy_mean": gated(trained, "semantic_entropy_mean"),
        "sparsity": gated(trained, "sparsity"),
        "active_dims": gated(trained, "active_dims"),
        "open_rate": measured(trained.get("gates"), "open_rate"),
        "linear_top1": measured(trained.get("linear_probe"), "top1"),
        "linear_converged": (trained.get("linear_probe") or {}).get("converged"),
        "linear_top1_init": measured(init.get("linear_probe"), "top1"),
        "knn_top1": gated(trained, "knn_top1", "h"),
        "knn_top1_gated": gated(trained, "knn_top1"),
        "true_neg_elbo": measured(elbo, "negative_elbo"),
        "surrogate_neg_elbo": measured(elbo, "surrogate"),
        "kl_share": kl_share(d) if job.gated else None,
        "train_seconds": summary.get("train_seconds"),
        "final_loss": final_loss(d, summary) if summary else None,
    }
    pairing = trained.get("background_pairing") or {}
    for key in ("linear_top1_agrees", "linear_top1_disagrees", "linear_top1_gap"):
        row[key] = measured(pairing, key)
    fc = trained.get("factor_check")
    row["background_closed"] = measured(fc, "background_closed_share")
    row["object_open"] = measured(fc, "object_open_share")
    if row["sc"] is not None and row["sc_init"] is not None:
        row["sc_gain"] = row["sc"] - row["sc_init"]
    if row["sc_sampled"] is not None and row["sc_sampled_init"] is not None:
        row["sc_sampled_gain"] = row["sc_sampled"] - row["sc_sampled_init"]
    variants = read_sc_variants(d)
    for name, key in (("sc_supported", "semantic_consistency_supported"), ("sc_weighted", "semantic_consistency_weighted")):
        for features, suffix in (("gated", ""), ("gated_sampled", "_sampled")):
            now, before = sc_variant(trained, variants, False, key, features), sc_variant(init, variants, True, key, features)
            row[f"{name}{suffix}"], row[f"{name}{suffix}_init"] = now, before
            if now is not None and before is not None:
                row[f"{name}{suffix}_gain"] = now - before
    if job.sweep_point is not None:
        row.update({f"sweep:{k}": v for k, v in job.sweep_point.items()})
    return row


def collect(spec: SuiteSpec, jobs: Sequence[Job] | None = None) -> dict[str, Any]:
    """The table rows of ``jobs`` (default: every job of the suite) and the suite's comparisons."""
    jobs = plan(spec) if jobs is None else jobs
    rows = [job_row(j) for j in jobs]
    return {"rows": rows, "comparisons": compare(spec, rows), "machine": machine_description()}


def compare(spec: SuiteSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every comparison of the suite on every dataset and metric: the mean paired difference
    ``method − against`` over the seeds both have, with its 95 % t interval, and the runs whose
    linear probe did not converge (for a linear-probe metric)."""
    results = []
    elsewhere: dict[Path, list[dict[str, Any]]] = {}
    for comparison in spec.comparisons:
        against_rows = rows
        if comparison.against_suite is not None:
            path = comparison.against_suite
            if path not in elsewhere:  # read, never run: the other suite's finished runs
                elsewhere[path] = [job_row(j) for j in plan(load_suite(path)) if j.sweep_point is None]
            against_rows = elsewhere[path]
        for dataset in spec.datasets:
            mine = _by_seed(rows, dataset, comparison.method)
            theirs = _by_seed(against_rows, dataset, comparison.against)
            for metric in comparison.metrics:
                difference = paired_difference({s: r.get(metric) for s, r in mine.items()},
                                               {s: r.get(metric) for s, r in theirs.items()})
                paired = [r for s in difference.seeds for r in (mine[s], theirs[s])]
                unconverged = [r["name"] for r in paired if metric.startswith("linear_") and probe_not_converged(r)]
                results.append({"dataset": dataset, "method": comparison.method, "against": comparison.against,
                                "label": comparison.label, "metric": metric, **difference.to_dict(),
                                "probe_not_converged": unconverged})
    return results


def _by_seed(rows: list[dict[str, Any]], dataset: str, method: str) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in rows if r["dataset"] == dataset and r["method"] == method
            and not any(k.startswith("sweep:") for k in r)}


def machine_description() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}"
