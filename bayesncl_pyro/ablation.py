"""Ablation grids: priors × estimators × seeds (× any other config key) from one YAML file.

The file names a base config, overrides for every cell, and the grid axes::

    base: scenes_quick.yaml          # relative to this file (or absolute); omit for the defaults
    out_dir: runs/ablation_quick     # one sub-directory per cell
    overrides: [train.epochs=1]      # applied to every cell
    grid:                            # dotted config key -> list of values; cells = the product
      gate.prior: [bernoulli, beta_bernoulli, hard_concrete]
      gate.estimator: [ste, concrete, soft, score]
      train.seed: [0, 1, 2]
    true_elbo: {samples: 64, seed: 0}

Each cell is an ordinary training run (:func:`bayesncl_pyro.train.train`) in its own directory,
followed by the Monte-Carlo true negative ELBO (:func:`bayesncl_pyro.true_elbo.true_negative_elbo`)
on a fixed held-out batch: the first ``data.batch_size`` test images, two augmented views drawn
with the fixed seed. A cell whose config does not validate (e.g. ``gate.estimator=score`` with
``gate.prior=hard_concrete``: only Bernoulli gates have estimators) is skipped, and the report
says why. A cell with a ``summary.json`` is not trained again (re-running resumes the grid); a run
interrupted after a checkpoint resumes from it. Cells run in this process, or ``jobs`` at a time
as subprocesses.

The report: ``ablation.csv`` (one row per cell), ``ablation.md`` (the cells, then mean ± sd over
``train.seed`` for every other combination of axes, then the skipped cells) and ``ablation.png``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from .ablation_report import write_reports
from .config import _check_override_key, read_yaml_mapping
from .errors import ConfigError

CELL_FILE = "cell.json"
SUMMARY_FILE = "summary.json"
TRUE_ELBO_FILE = "true_elbo.json"
ERROR_FILE = "error.txt"
LOG_FILE = "log.txt"
MIN_TRUE_ELBO_SAMPLES = 64


@dataclass
class AblationSpec:
    """What the YAML file says, with paths resolved."""

    base: Path | None
    out_dir: Path
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    true_elbo_samples: int = MIN_TRUE_ELBO_SAMPLES
    true_elbo_seed: int = 0


@dataclass
class Cell:
    name: str
    axes: dict[str, Any]
    directory: Path
    overrides: list[str]
    skip_reason: str | None = None


def _yaml_value(value: Any) -> str:
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def load_spec(path: str | Path, out_dir: str | Path | None = None) -> AblationSpec:
    """Read and check an ablation YAML file; ``out_dir`` replaces the file's ``out_dir``."""
    path = Path(path)
    tree = read_yaml_mapping(path, "ablation file")
    allowed = {"base", "out_dir", "overrides", "grid", "true_elbo"}
    unknown = sorted(set(tree) - allowed)
    if unknown:
        raise ConfigError(f"ablation file {path}: unknown key {unknown[0]}; allowed: {', '.join(sorted(allowed))}")
    base = tree.get("base")
    base_path = None if base is None else (path.parent / base if not Path(base).is_absolute() else Path(base))
    if base_path is not None and not base_path.is_file():
        raise ConfigError(f"ablation file {path}: base={base!r} does not exist (looked for {base_path})")
    overrides = tree.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"ablation file {path}: overrides must be a list of key=value strings; got {overrides!r}")
    grid = tree.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"ablation file {path}: grid must map config keys to lists of values; got {grid!r}")
    for key, values in grid.items():
        try:
            _check_override_key(str(key))
        except ConfigError as exc:
            raise ConfigError(f"ablation file {path}: grid axis {key}: {exc}") from None
        if not isinstance(values, list) or not values:
            raise ConfigError(f"ablation file {path}: grid.{key} must be a non-empty list of values; got {values!r}")
    if "train.out_dir" in grid or any(o.split("=", 1)[0].strip() == "train.out_dir" for o in overrides):
        raise ConfigError(f"ablation file {path}: train.out_dir is set per cell; use out_dir instead")
    true_elbo = tree.get("true_elbo") or {}
    if not isinstance(true_elbo, dict) or set(true_elbo) - {"samples", "seed"}:
        raise ConfigError(f"ablation file {path}: true_elbo takes samples and seed; got {true_elbo!r}")
    samples = true_elbo.get("samples", MIN_TRUE_ELBO_SAMPLES)
    if not isinstance(samples, int) or samples < MIN_TRUE_ELBO_SAMPLES:
        raise ConfigError(f"ablation file {path}: true_elbo.samples={samples!r} is not allowed; "
                          f"allowed: an integer >= {MIN_TRUE_ELBO_SAMPLES}")
    seed = true_elbo.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"ablation file {path}: true_elbo.seed={seed!r} is not allowed; allowed: an integer >= 0")
    chosen_out = out_dir if out_dir is not None else tree.get("out_dir")
    if not chosen_out:
        raise ConfigError(f"ablation file {path}: out_dir is missing (set it in the file or pass --out-dir)")
    return AblationSpec(base_path, Path(chosen_out), list(overrides), dict(grid), samples, seed)


def _axis_labels(keys: Sequence[str]) -> dict[str, str]:
    """Short labels for directory names: the last part of a dotted key, unless two axes share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in text)


def plan_cells(spec: AblationSpec) -> list[Cell]:
    """Every cell of the grid, in grid order, with its overrides; invalid configs carry the reason."""
    from .config import load_config

    keys = list(spec.grid)
    labels = _axis_labels(keys)
    cells = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        axes = dict(zip(keys, values))
        name = "__".join(_safe(f"{labels[k]}={_yaml_value(v)}") for k, v in axes.items())
        directory = spec.out_dir / name
        overrides = [*spec.overrides, *(f"{k}={_yaml_value(v)}" for k, v in axes.items()),
                     f"train.out_dir={directory}"]
        cell = Cell(name, axes, directory, overrides)
        try:
            load_config(spec.base, overrides)
        except ConfigError as exc:
            cell.skip_reason = str(exc)
        cells.append(cell)
    return cells


def is_finished(directory: Path) -> bool:
    return (directory / SUMMARY_FILE).is_file() and (directory / TRUE_ELBO_FILE).is_file()


# ----------------------------------------------------------------------------- one cell

def held_out_views(run, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out batch of a loaded run: its first ``data.batch_size`` test images, two
    augmented views drawn with ``seed`` (the global random state is left untouched), on the CPU."""
    from .data.augment import BatchAugment
    from .data.sources import normalization

    cfg = run.cfg
    mean, std = normalization(cfg.data, run.train_set)
    augment = BatchAugment(cfg.data.augment, cfg.data.image_size, mean, std)
    images = run.test_set.images[: min(cfg.data.batch_size, len(run.test_set))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return augment(images), augment(images)


def cell_true_elbo(cfg, samples: int, seed: int) -> dict[str, float]:
    """The true negative ELBO of the trained network of the run in ``cfg.train.out_dir``."""
    from .trained import load_trained
    from .true_elbo import surrogate_negative_elbo, true_negative_elbo

    run = load_trained(cfg.train.out_dir, device=cfg.train.device)
    x1, x2 = (x.to(run.device) for x in held_out_views(run, seed))
    result = true_negative_elbo(run.net, x1, x2, samples=samples, seed=seed)
    result["surrogate"] = surrogate_negative_elbo(run.net, x1, x2, seed=seed)
    return result


def run_cell(directory: str | Path) -> None:
    """Train the cell in ``directory`` (unless it has a summary) and measure its true ELBO.

    An interrupted run resumes from its checkpoint; one interrupted before its first checkpoint
    starts again.
    """
    from . import run_dir
    from .config import load_config
    from .io import atomic_write_json
    from .train import train_unless_finished

    directory = Path(directory)
    cell = json.loads((directory / CELL_FILE).read_text())
    cfg = load_config(cell["base"], cell["overrides"])
    run_dir.check_same_config(directory, cfg)
    train_unless_finished(cfg)
    if not (directory / TRUE_ELBO_FILE).is_file():
        atomic_write_json(directory / TRUE_ELBO_FILE, cell_true_elbo(cfg, cell["true_elbo_samples"], cell["true_elbo_seed"]))


def _prepare_cell(spec: AblationSpec, cell: Cell) -> None:
    from .io import atomic_write_json

    cell.directory.mkdir(parents=True, exist_ok=True)
    (cell.directory / ERROR_FILE).unlink(missing_ok=True)
    atomic_write_json(cell.directory / CELL_FILE, {
        "base": None if spec.base is None else str(spec.base.resolve()),
        "overrides": cell.overrides, "axes": cell.axes,
        "true_elbo_samples": spec.true_elbo_samples, "true_elbo_seed": spec.true_elbo_seed,
    })


def _run_in_process(cell: Cell) -> None:
    try:
        run_cell(cell.directory)
    except Exception as exc:  # one failed cell must not stop the grid; the report names it
        (cell.directory / ERROR_FILE).write_text(f"{type(exc).__name__}: {exc}\n")


def _run_in_subprocesses(cells: list[Cell], jobs: int) -> None:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    pending, running = list(cells), []
    while pending or running:
        while pending and len(running) < jobs:
            cell = pending.pop(0)
            log = open(cell.directory / LOG_FILE, "w")
            command = [sys.executable, "-m", "bayesncl_pyro.ablation", "--run-cell", str(cell.directory)]
            running.append((cell, log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(0.2)
        still = []
        for cell, log, process in running:
            if process.poll() is None:
                still.append((cell, log, process))
                continue
            log.close()
            if process.returncode != 0 and not (cell.directory / ERROR_FILE).is_file():
                lines = (cell.directory / LOG_FILE).read_text().strip().splitlines()
                (cell.directory / ERROR_FILE).write_text((lines[-1] if lines else f"exit code {process.returncode}") + "\n")
        running = still


# ----------------------------------------------------------------------------- the grid

@dataclass
class AblationResult:
    rows: list[dict[str, Any]]
    ran: list[str]
    skipped_finished: list[str]
    csv_path: Path
    md_path: Path
    png_path: Path


def run_ablation(spec: AblationSpec, jobs: int = 1) -> AblationResult:
    """Run every unfinished valid cell (in this process, or ``jobs`` subprocesses at a time), then
    write the csv, markdown and png reports into ``spec.out_dir``."""
    if jobs < 1:
        raise ConfigError(f"--jobs={jobs!r} is not allowed; allowed: an integer >= 1")
    cells = plan_cells(spec)
    todo = [c for c in cells if c.skip_reason is None and not is_finished(c.directory)]
    finished_before = [c.name for c in cells if c.skip_reason is None and is_finished(c.directory)]
    for cell in todo:
        _prepare_cell(spec, cell)
    if jobs == 1:
        for cell in todo:
            _run_in_process(cell)
    else:
        _run_in_subprocesses(todo, jobs)
    rows = [cell_row(c) for c in cells]
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_reports(spec, rows)
    return AblationResult(rows, [c.name for c in todo], finished_before, *paths)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _last_logged_loss(directory: Path) -> float | None:
    """The loss of the last line of the run's metrics log (a run resumed at its last step ran no
    step, so its summary has no final loss)."""
    from .run_dir import read_metrics

    try:
        losses = [record["loss"] for record in read_metrics(directory) if "loss" in record]
    except (OSError, ValueError):
        return None
    return losses[-1] if losses else None


def cell_row(cell: Cell) -> dict[str, Any]:
    """One report row: the axes, status, note and metrics (None where missing)."""
    row: dict[str, Any] = {"cell": cell.name, **cell.axes}
    summary = _read_json(cell.directory / SUMMARY_FILE) or {}
    if summary and summary.get("final_loss") is None:
        summary["final_loss"] = _last_logged_loss(cell.directory)
    elbo = _read_json(cell.directory / TRUE_ELBO_FILE) or {}
    if cell.skip_reason is not None:
        row.update(status="skipped", note=cell.skip_reason)
    elif summary and elbo:
        row.update(status="done", note="")
    else:
        error = cell.directory / ERROR_FILE
        row.update(status="failed", note=error.read_text().strip() if error.is_file() else "did not finish")
    row.update({
        "final_loss": summary.get("final_loss"),
        "surrogate_negative_elbo": elbo.get("surrogate"),
        "true_negative_elbo": elbo.get("negative_elbo"),
        "true_negative_elbo_stderr": elbo.get("stderr"),
        "true_infonce": elbo.get("infonce"),
        "true_kl": elbo.get("kl"),
        "open_rate": summary.get("open_rate"),
        "semantic_consistency": summary.get("semantic_consistency"),
        "probe_top1": summary.get("probe_top1"),
        "sparsity": summary.get("sparsity"),
        "steps": summary.get("steps"),
    })
    return row


# ----------------------------------------------------------------------------- command line

def _main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-ablate SPEC.yaml [--jobs N] [--out-dir DIR] [--dry-run]"""
    parser = argparse.ArgumentParser(
        prog="bayesncl-ablate",
        description="Run a grid of training runs (priors × estimators × seeds ...) and tabulate them.")
    parser.add_argument("spec", nargs="?", help="ablation YAML file (base config, overrides, grid)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at a time as subprocesses (default 1: in this process)")
    parser.add_argument("--out-dir", help="write the cells and reports here instead of the file's out_dir")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and what would happen, run nothing")
    parser.add_argument("--run-cell", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_cell:
        try:
            run_cell(args.run_cell)
        except Exception as exc:
            (Path(args.run_cell) / ERROR_FILE).write_text(f"{type(exc).__name__}: {exc}\n")
            raise
        return 0
    if not args.spec:
        parser.error("the ablation YAML file is required")
    spec = load_spec(args.spec, args.out_dir)
    if args.dry_run:
        for cell in plan_cells(spec):
            state = ("skip: " + cell.skip_reason if cell.skip_reason else
                     "finished" if is_finished(cell.directory) else "to run")
            print(f"{cell.name}: {state}")
        return 0
    result = run_ablation(spec, jobs=args.jobs)
    failed = [r["cell"] for r in result.rows if r["status"] == "failed"]
    print(f"ran {len(result.ran)} cell(s), {len(result.skipped_finished)} already finished, "
          f"{sum(r['status'] == 'skipped' for r in result.rows)} skipped, {len(failed)} failed")
    print(f"reports: {result.csv_path}, {result.md_path}, {result.png_path}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import guarded

    return guarded(_main)(argv)


if __name__ == "__main__":
    main()
