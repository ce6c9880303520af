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

Each cell is an ordinary training run in its own directory, followed by the Monte-Carlo true
negative ELBO on a fixed held-out batch (:mod:`.cells`). A cell whose config does not validate
(e.g. ``gate.estimator=score`` with ``gate.prior=hard_concrete``: only Bernoulli gates have
estimators) is skipped, and the report says why. A finished cell is not trained again
(re-running resumes the grid); a run interrupted after a checkpoint resumes from it.

A cell's directory stands for the cell only while the config it recorded (``config.yaml``)
equals the one the grid now asks for, all keys but those that change nothing a run computes
(:data:`~bayesncl_pyro.storage.run_directory.NOT_RESULTS`). A grid whose file or overrides
changed under cells already run is refused before any cell starts, with the first difference
(old results must not be reported under new settings, and are not deleted for the user): delete
those cell directories, or give another ``out_dir``. A changed ``train.epochs`` or
``train.steps`` is refused as well: the learning-rate schedule and warm-up are laid out over the
whole run, so a finished run extended by resuming is not the longer run the grid asks for. Cells run
in this process, or ``jobs`` at a time as subprocesses. The reports are :mod:`.ablation_report`.

The cell subprocesses stop with the grid: when the grid is stopped (SIGTERM, Ctrl-C, an error)
each running cell gets SIGTERM, which saves its checkpoint at the next step boundary, and is
waited for (killed after :data:`STOP_GRACE` seconds); on Linux a cell also gets SIGTERM when
the grid process dies without a chance to forward it (SIGKILL).
"""
from __future__ import annotations

import json
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import CheckpointError, ConfigError
from bayesncl_pyro.experiments.ablation_report import write_reports
from bayesncl_pyro.experiments.cells import (
    TRUE_ELBO_FILE,
    ensure_trained,
    ensure_true_elbo,
    has_true_elbo,
)
from bayesncl_pyro.experiments.ablation_plan import ALLOWED_KEYS as ALLOWED_KEYS
from bayesncl_pyro.experiments.ablation_plan import AblationSpec as AblationSpec
from bayesncl_pyro.experiments.ablation_plan import Cell as Cell
from bayesncl_pyro.experiments.ablation_plan import load_spec as load_spec
from bayesncl_pyro.experiments.ablation_plan import plan_cells as plan_cells
from bayesncl_pyro.experiments.run_results import final_loss, read_json
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text, open_own_file, storage_error
from bayesncl_pyro.storage.run_directory import config_differences
from bayesncl_pyro.training.loop import SUMMARY_FILE

CELL_FILE = "cell.json"
ERROR_FILE = "error.txt"
LOG_FILE = "log.txt"
EVAL_FILE = "eval.json"
def recorded_differences(cell: Cell) -> list[str]:
    """How the run recorded in the cell's directory differs from the cell's config (empty when
    they agree, the directory holds no run, or the cell is skipped)."""
    return [] if cell.cfg is None else config_differences(cell.directory, cell.cfg)


def is_finished(cell: Cell) -> bool:
    """Trained and measured, by the config and the true-ELBO settings the grid now asks for."""
    return ((cell.directory / SUMMARY_FILE).is_file()
            and has_true_elbo(cell.directory, cell.true_elbo.samples, cell.true_elbo.seed)
            and not recorded_differences(cell))


def check_recorded_configs(cells: list[Cell]) -> None:
    """Refuse, in one line naming the first cell and its differences, a grid some of whose cell
    directories hold a run of another config."""
    stale = [(cell, diffs) for cell in cells if (diffs := recorded_differences(cell))]
    if not stale:
        return
    cell, diffs = stale[0]
    more = f" ({len(stale)} cells differ)" if len(stale) > 1 else ""
    raise CheckpointError(f"{cell.directory} holds a run of another config than the grid asks for "
                          f"({'; '.join(diffs[:5])}){more}; delete the cell directories that differ "
                          "to run them again, or give another out_dir")


# ----------------------------------------------------------------------------- one cell

def run_cell(directory: str | Path) -> None:
    """Train the cell in ``directory`` (unless it has a summary) and measure its true ELBO; the
    cell's overrides are in its ``cell.json``."""
    directory = Path(directory)
    cell = json.loads((directory / CELL_FILE).read_text())
    cfg = load_config(cell["base"], cell["overrides"])
    ensure_trained(cfg)
    ensure_true_elbo(cfg, cell["true_elbo_samples"], cell["true_elbo_seed"])


def _prepare_cell(spec: AblationSpec, cell: Cell) -> None:
    cell.directory.mkdir(parents=True, exist_ok=True)
    (cell.directory / ERROR_FILE).unlink(missing_ok=True)
    atomic_write_json(cell.directory / CELL_FILE, {
        "base": None if spec.base is None else str(spec.base),
        "overrides": cell.overrides, "axes": cell.axes,
        "true_elbo_samples": spec.true_elbo.samples, "true_elbo_seed": spec.true_elbo.seed,
    })


def record_failure(directory: Path, exc: BaseException) -> None:
    """The one line a failed cell leaves for the report."""
    atomic_write_text(directory / ERROR_FILE, f"{type(exc).__name__}: {exc}\n")


def _run_in_process(cells: list[Cell], finished: Callable[[Cell, float], None]) -> None:
    for cell in cells:
        started = time.perf_counter()
        try:
            run_cell(cell.directory)
        except Exception as exc:  # one failed cell must not stop the grid; the report names it
            record_failure(cell.directory, exc)
        finished(cell, time.perf_counter() - started)


STOP_GRACE = 60.0
"""Seconds a stopped grid waits for its cells to save their checkpoints before killing them."""
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a cell subprocess before it starts (Linux): SIGTERM when the grid process dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the grid's own handler still forwards signals
        pass


def _open_log(path: Path):
    """The cell's log, emptied; never written through a link (symbolic or hard) or into a FIFO.
    Emptied after the checks, so that a hard link's other file is not truncated on the way."""
    fd = open_own_file(path, os.O_WRONLY | os.O_CREAT, 0o666, action="write", doing="write",
                       harm="emptying the cell log would empty that file",
                       refusal="cannot write {path}: {what}; move it out of the grid directory")
    try:
        os.ftruncate(fd, 0)
    except OSError as error:
        os.close(fd)
        raise storage_error(error, path, "write") from None
    return os.fdopen(fd, "w")


def stop_cells(processes: list[subprocess.Popen], grace: float = STOP_GRACE) -> None:
    """SIGTERM to every running cell process, then wait for each (SIGKILL after ``grace`` seconds)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _run_in_subprocesses(cells: list[Cell], jobs: int, finished: Callable[[Cell, float], None]) -> None:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    pending, running = list(cells), []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                cell = pending.pop(0)
                log = _open_log(cell.directory / LOG_FILE)
                command = [sys.executable, "-m", "bayesncl_pyro.cli.ablate", "--run-cell", str(cell.directory)]
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           preexec_fn=_die_with_parent)
                running.append((cell, log, process, time.perf_counter()))
            time.sleep(0.2)
            still = []
            for cell, log, process, started in running:
                if process.poll() is None:
                    still.append((cell, log, process, started))
                    continue
                log.close()
                if process.returncode != 0 and not (cell.directory / ERROR_FILE).is_file():
                    lines = (cell.directory / LOG_FILE).read_text().strip().splitlines()
                    atomic_write_text(cell.directory / ERROR_FILE,
                                      (lines[-1] if lines else f"exit code {process.returncode}") + "\n")
                finished(cell, time.perf_counter() - started)
            running = still
    finally:  # stopped (a signal, an error): the cells stop too, each with its checkpoint
        stop_cells([process for _, _, process, _ in running])
        for _, log, _, _ in running:
            log.close()


# ----------------------------------------------------------------------------- the grid

@dataclass
class AblationResult:
    rows: list[dict[str, Any]]
    ran: list[str]
    skipped_finished: list[str]
    csv_path: Path
    md_path: Path
    png_path: Path


def run_ablation(spec: AblationSpec, jobs: int = 1,
                 finished: Callable[[dict[str, Any], float], None] | None = None) -> AblationResult:
    """Run every unfinished valid cell (in this process, or ``jobs`` subprocesses at a time), then
    write the csv, markdown and png reports into ``spec.out_dir``. ``finished(row, seconds)`` is
    called as each cell ends, with its report row."""
    if jobs < 1:
        raise ConfigError(f"--jobs={jobs!r} is not allowed; allowed: an integer >= 1")
    cells = plan_cells(spec)
    check_recorded_configs(cells)
    todo = [c for c in cells if c.skip_reason is None and not is_finished(c)]
    finished_before = [c.name for c in cells if c.skip_reason is None and is_finished(c)]
    for cell in todo:
        _prepare_cell(spec, cell)

    def done(cell: Cell, seconds: float) -> None:
        if finished is not None:
            finished(cell_row(cell), seconds)

    if jobs == 1:
        _run_in_process(todo, done)
    else:
        _run_in_subprocesses(todo, jobs, done)
    rows = [cell_row(c) for c in cells]
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_reports(spec, rows)
    return AblationResult(rows, [c.name for c in todo], finished_before, *paths)


def cell_row(cell: Cell) -> dict[str, Any]:
    """One report row: the axes, status, note and metrics (None where missing)."""
    row: dict[str, Any] = {"cell": cell.name, **cell.axes}
    summary = read_json(cell.directory / SUMMARY_FILE) or {}
    elbo = read_json(cell.directory / TRUE_ELBO_FILE) or {}
    evaluation = read_json(cell.directory / EVAL_FILE) or {}  # when someone ran bayesncl-eval on the cell
    if cell.skip_reason is not None:
        row.update(status="skipped", note=cell.skip_reason)
    elif summary and elbo:
        row.update(status="done", note="")
    else:
        error = cell.directory / ERROR_FILE
        row.update(status="failed", note=error.read_text().strip() if error.is_file() else "did not finish")
    row.update({
        "final_loss": final_loss(cell.directory, summary) if summary else None,
        "surrogate_negative_elbo": elbo.get("surrogate"),
        "true_negative_elbo": elbo.get("negative_elbo"),
        "true_negative_elbo_stderr": elbo.get("stderr"),
        "true_infonce": elbo.get("infonce"),
        "true_kl": elbo.get("kl"),
        "open_rate": summary.get("open_rate"),
        "semantic_consistency": summary.get("semantic_consistency"),
        "probe_top1": summary.get("probe_top1"),
        "linear_top1": (evaluation.get("linear_probe") or {}).get("top1"),
        "linear_converged": (evaluation.get("linear_probe") or {}).get("converged"),
        "sparsity": summary.get("sparsity"),
        "steps": summary.get("steps"),
    })
    return row
