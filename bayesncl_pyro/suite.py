"""Named result suites (``configs/suites/*.yaml``): train every method × seed on every dataset,
evaluate at initialisation and after training, inspect, sweep, and write tables and figures.

A suite file::

    out_dir: runs/suites/cpu
    prepare:                                  # archives unpacked once (skipped when present)
      - {archive: ../shared/data/cifar10-jpeg.tar.gz, into: ~/.cache/bayesncl_pyro/datasets/cifar10-jpeg}
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
    sweep:                                    # optional: a grid of one method on one dataset
      dataset: scenes
      method: bayesncl_ste
      overrides: [train.epochs=3]
      grid: {gate.kl_weight: [3e-5, 1e-3], gate.prior_prob: [0.5, 0.8]}

Every step of every run is skipped when its output file exists, so re-running a suite resumes it
(a run interrupted after a checkpoint resumes from that checkpoint).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import platform
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from .ablation import _yaml_value
from .config import Config, _check_override_key, load_config, read_yaml_mapping
from .errors import ConfigError, DataError
from .io import atomic_write_json, atomic_write_text

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"


@dataclass
class Sweep:
    dataset: str
    method: str
    overrides: list[str]
    grid: dict[str, list[Any]]


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
    true_elbo_samples: int = 64
    true_elbo_seed: int = 0
    sweep: Sweep | None = None


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

def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of key=value strings; got {value!r}")
    return list(value)


def _named_overrides(value: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where} must map names to lists of key=value overrides; got {value!r}")
    return {str(name): _string_list(items, f"{where}.{name}") for name, items in value.items()}


def load_suite(path: str | Path, out_dir: str | Path | None = None) -> SuiteSpec:
    """Read and check a suite file; every run's config is validated before anything runs."""
    path = Path(path)
    tree = read_yaml_mapping(path, "suite file")
    allowed = {"out_dir", "prepare", "base", "overrides", "datasets", "methods", "seeds", "inspect", "true_elbo", "sweep"}
    unknown = sorted(set(tree) - allowed)
    if unknown:
        raise ConfigError(f"suite file {path}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    base = tree.get("base")
    base_path = None if base is None else (path.parent / base).resolve()
    if base_path is not None and not base_path.is_file():
        raise ConfigError(f"suite file {path}: base={base!r} does not exist (looked for {base_path})")
    seeds = tree.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"suite file {path}: seeds must be a non-empty list of integers >= 0; got {seeds!r}")
    prepare = tree.get("prepare") or []
    if not isinstance(prepare, list) or not all(isinstance(p, dict) and set(p) == {"archive", "into"} for p in prepare):
        raise ConfigError(f"suite file {path}: prepare must be a list of {{archive, into}} mappings; got {prepare!r}")
    inspect = tree.get("inspect") or {}
    true_elbo = tree.get("true_elbo") or {}
    sweep = None
    if tree.get("sweep"):
        s = tree["sweep"]
        if not isinstance(s, dict) or set(s) - {"dataset", "method", "overrides", "grid"}:
            raise ConfigError(f"suite file {path}: sweep takes dataset, method, overrides, grid; got {s!r}")
        grid = s.get("grid") or {}
        if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise ConfigError(f"suite file {path}: sweep.grid must map config keys to non-empty lists; got {grid!r}")
        for key in grid:
            _check_override_key(str(key))
        sweep = Sweep(str(s.get("dataset")), str(s.get("method")), _string_list(s.get("overrides"), "sweep.overrides"),
                      {str(k): list(v) for k, v in grid.items()})
    spec = SuiteSpec(
        path=path,
        out_dir=Path(out_dir if out_dir is not None else tree.get("out_dir") or f"runs/suites/{path.stem}"),
        base=base_path,
        overrides=_string_list(tree.get("overrides"), "overrides"),
        datasets=_named_overrides(tree.get("datasets"), "datasets"),
        methods=_named_overrides(tree.get("methods"), "methods"),
        seeds=list(seeds),
        prepare=[{k: str(v) for k, v in p.items()} for p in prepare],
        inspect_draws=int(inspect.get("draws", 100)),
        inspect_seeds=list(inspect.get("seeds", [seeds[0]])),
        true_elbo_samples=int(true_elbo.get("samples", 64)),
        true_elbo_seed=int(true_elbo.get("seed", 0)),
        sweep=sweep,
    )
    if sweep is not None and (sweep.dataset not in spec.datasets or sweep.method not in spec.methods):
        raise ConfigError(f"suite file {path}: sweep.dataset={sweep.dataset!r} and sweep.method={sweep.method!r} "
                          f"must name a dataset ({', '.join(spec.datasets)}) and a method ({', '.join(spec.methods)})")
    return spec


def plan(spec: SuiteSpec) -> list[Job]:
    """Every run of the suite: datasets × methods × seeds, then the sweep points."""
    jobs = []
    for (dataset, data_over), (method, method_over), seed in itertools.product(
            spec.datasets.items(), spec.methods.items(), spec.seeds):
        directory = spec.out_dir / "runs" / dataset / method / f"seed{seed}"
        cfg = load_config(spec.base, [*spec.overrides, *data_over, *method_over, f"train.seed={seed}",
                                      f"train.out_dir={directory}"])
        jobs.append(Job(f"{dataset}/{method}/seed{seed}", directory, cfg, dataset, method, seed,
                        inspect=seed in spec.inspect_seeds and cfg.gate.prior != "none"))
    if spec.sweep is not None:
        sw = spec.sweep
        keys = list(sw.grid)
        for values in itertools.product(*sw.grid.values()):
            point = dict(zip(keys, values))
            label = "_".join(f"{k.rsplit('.', 1)[-1]}={_yaml_value(v)}" for k, v in point.items())
            directory = spec.out_dir / "sweep" / label
            cfg = load_config(spec.base, [*spec.overrides, *spec.datasets[sw.dataset], *spec.methods[sw.method],
                                          *sw.overrides, *[f"{k}={_yaml_value(v)}" for k, v in point.items()],
                                          f"train.seed={spec.seeds[0]}", f"train.out_dir={directory}"])
            jobs.append(Job(f"sweep/{label}", directory, cfg, sw.dataset, sw.method, spec.seeds[0], sweep_point=point))
    return jobs


# ----------------------------------------------------------------------------- running

def prepare_archives(spec: SuiteSpec) -> None:
    """Unpack each archive into its folder once (into a temporary sibling, then renamed)."""
    for item in spec.prepare:
        archive = (spec.path.parent / item["archive"]).resolve() if not Path(item["archive"]).is_absolute() else Path(item["archive"])
        into = Path(os.path.expanduser(item["into"]))
        if into.is_dir():
            continue
        if not archive.is_file():
            raise DataError(f"suite {spec.path}: archive {archive} does not exist (needed to fill {into})")
        partial = into.with_name(into.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in tqdm(members, desc=f"unpack {archive.name}", unit="file", leave=False):
                tar.extract(member, partial, filter="data")
        os.replace(partial, into)


def _done(path: Path) -> bool:
    return path.is_file()


def run_job(job: Job, spec: SuiteSpec, progress: bool = False) -> None:
    """Train (or resume), evaluate at init and after training, true ELBO, inspect; each step once."""
    from . import run_dir
    from .ablation import cell_true_elbo
    from .evaluate import evaluate_run
    from .inspect import inspect_run
    from .train import train_unless_finished

    directory = job.directory
    run_dir.check_same_config(directory, job.cfg)
    train_unless_finished(job.cfg, progress=progress)
    if not _done(directory / "eval_init.json"):
        evaluate_run(directory, init=True, progress=False)
    if not _done(directory / "eval.json"):
        evaluate_run(directory, progress=False)
    if job.gated and not _done(directory / "true_elbo.json"):
        atomic_write_json(directory / "true_elbo.json", cell_true_elbo(job.cfg, spec.true_elbo_samples, spec.true_elbo_seed))
    if job.inspect and not _done(directory / "gates.nc"):
        inspect_run(directory, draws=spec.inspect_draws, progress=False)


def run_suite(spec: SuiteSpec, progress: bool = True, only: Callable[[Job], bool] | None = None) -> dict[str, Any]:
    """Run every unfinished job, one progress bar over the suite (weighted by training images),
    then write ``results.md``, ``results.json`` and the figures into ``spec.out_dir``."""
    prepare_archives(spec)
    jobs = [job for job in plan(spec) if only is None or only(job)]
    started = time.perf_counter()
    bar = tqdm(total=sum(j.cost for j in jobs), disable=not progress, desc=f"suite {spec.path.stem}",
               unit="img", unit_scale=True, dynamic_ncols=True)
    try:
        for job in jobs:
            bar.set_postfix_str(job.name)
            run_job(job, spec, progress=False)
            bar.update(job.cost)
    finally:
        bar.close()
    results = collect(spec, jobs)
    results["suite_seconds_this_call"] = time.perf_counter() - started
    write_results(spec, results)
    return results


# ----------------------------------------------------------------------------- results

def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _kl_share(directory: Path) -> float | None:
    """Mean of kl / loss over the last tenth of the logged steps."""
    from .run_dir import read_metrics

    records = [r for r in read_metrics(directory) if "kl" in r and r.get("loss")]
    if not records:
        return None
    tail = records[-max(1, len(records) // 10):]
    return sum(r["kl"] / r["loss"] for r in tail) / len(tail)


def job_row(job: Job) -> dict[str, Any]:
    """The numbers of one run that the tables show."""
    d = job.directory
    trained, init = _read(d / "eval.json") or {}, _read(d / "eval_init.json") or {}
    summary, elbo = _read(d / "summary.json") or {}, _read(d / "true_elbo.json") or {}

    def gated(result: dict, key: str) -> float | None:
        return ((result.get("metrics") or {}).get("gated") or {}).get(key)

    row: dict[str, Any] = {
        "name": job.name, "dataset": job.dataset, "method": job.method, "seed": job.seed,
        "sc_init": gated(init, "semantic_consistency"),
        "sc": gated(trained, "semantic_consistency"),
        "entropy_freq": gated(trained, "semantic_entropy_frequency"),
        "entropy_sum": gated(trained, "semantic_entropy_sum"),
        "entropy_mean": gated(trained, "semantic_entropy_mean"),
        "sparsity": gated(trained, "sparsity"),
        "active_dims": gated(trained, "active_dims"),
        "open_rate": (trained.get("gates") or {}).get("open_rate"),
        "linear_top1": (trained.get("linear_probe") or {}).get("top1"),
        "linear_top1_init": (init.get("linear_probe") or {}).get("top1"),
        "knn_top1": ((trained.get("metrics") or {}).get("h") or {}).get("knn_top1"),
        "true_neg_elbo": elbo.get("negative_elbo"),
        "surrogate_neg_elbo": elbo.get("surrogate"),
        "kl_share": _kl_share(d) if job.gated else None,
        "train_seconds": summary.get("train_seconds"),
        "final_loss": summary.get("final_loss"),
    }
    fc = trained.get("factor_check") or {}
    row["background_closed"] = fc.get("background_closed_share")
    row["object_open"] = fc.get("object_open_share")
    if row["sc"] is not None and row["sc_init"] is not None:
        row["sc_gain"] = row["sc"] - row["sc_init"]
    if job.sweep_point is not None:
        row.update({f"sweep:{k}": v for k, v in job.sweep_point.items()})
    return row


def collect(spec: SuiteSpec, jobs: Sequence[Job] | None = None) -> dict[str, Any]:
    jobs = plan(spec) if jobs is None else jobs
    return {"rows": [job_row(j) for j in jobs], "machine": machine_description()}


def machine_description() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}"


COLUMNS = [
    ("sc_init", "SC init"), ("sc", "SC"), ("sc_gain", "SC gain"), ("entropy_freq", "entropy (freq)"),
    ("sparsity", "sparsity"), ("active_dims", "active dims"), ("open_rate", "gates open"),
    ("linear_top1", "linear top-1"), ("knn_top1", "k-NN top-1"), ("surrogate_neg_elbo", "surrogate −ELBO"),
    ("true_neg_elbo", "true −ELBO"),
    ("kl_share", "KL share"), ("train_seconds", "train s"),
]


def mean_sd(values: Sequence[float | None]) -> tuple[float, float, int]:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not clean:
        return math.nan, math.nan, 0
    mean = sum(clean) / len(clean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (len(clean) - 1)) if len(clean) > 1 else 0.0
    return mean, sd, len(clean)


def _cell(values: Sequence[float | None], key: str) -> str:
    mean, sd, n = mean_sd(values)
    if n == 0:
        return "–"
    scale = 100.0 if key in ("sparsity", "open_rate", "kl_share") else 1.0
    digits = 4 if key == "kl_share" else 2
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {sd * scale:.{digits}f}" if n > 1 else "")


def _is_sweep(row: dict[str, Any]) -> bool:
    return any(key.startswith("sweep:") for key in row)


def method_tables(spec: SuiteSpec, rows: list[dict[str, Any]]) -> str:
    """One Markdown table per dataset: a row per method, mean ± sd over seeds."""
    parts = []
    for dataset in spec.datasets:
        head = "| method | " + " | ".join(label for _, label in COLUMNS) + " |"
        lines = [f"### {dataset}", "", head, "|" + "---|" * (len(COLUMNS) + 1)]
        for method in spec.methods:
            group = [r for r in rows if r["dataset"] == dataset and r["method"] == method and not _is_sweep(r)]
            if group:
                lines.append(f"| {method} | " + " | ".join(_cell([r.get(k) for r in group], k) for k, _ in COLUMNS) + " |")
        parts.append("\n".join(lines))
    note = ("SC, entropy and sparsity are on the gated features of the test split (normalize(z) for "
            "ungated methods); SC init is the same network at its seeded initialisation; sparsity, gates "
            "open and KL share (KL term / loss, last tenth of training) in %; linear top-1 on frozen h; "
            "surrogate −ELBO = the loss the estimator trains on and true −ELBO = Monte-Carlo "
            "E_q[InfoNCE] + KL (exact gate draws), both on the same fixed held-out batch.")
    return "\n\n".join(parts) + "\n\n" + note + "\n"


def sweep_table(spec: SuiteSpec, rows: list[dict[str, Any]]) -> str:
    if spec.sweep is None:
        return ""
    keys = list(spec.sweep.grid)
    cols = [("sc", "SC"), ("sc_gain", "SC gain"), ("open_rate", "gates open"), ("background_closed", "bg dims closed"),
            ("object_open", "object dims open"), ("linear_top1", "linear top-1")]
    lines = ["| " + " | ".join(keys) + " | " + " | ".join(c for _, c in cols) + " |",
             "|" + "---|" * (len(keys) + len(cols))]
    for r in rows:
        if _is_sweep(r):
            lines.append("| " + " | ".join(str(r[f"sweep:{k}"]) for k in keys) + " | "
                         + " | ".join(_cell([r.get(k)], k if k != "background_closed" and k != "object_open" else "open_rate")
                                      for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def write_results(spec: SuiteSpec, results: dict[str, Any]) -> None:
    from .suite_figures import sc_gain_figure, sweep_heatmaps

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
