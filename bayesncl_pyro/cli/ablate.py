"""``bayesncl-ablate``: run a grid of training runs (priors × estimators × seeds ...) and tabulate it."""
from __future__ import annotations

import argparse
import math
import traceback
from pathlib import Path
from typing import Any, Sequence

from bayesncl_pyro.cli.guard import Parser, bounded_int, guarded, user_path
from bayesncl_pyro.config import check_override_key, parse_override
from bayesncl_pyro.config.errors import BayesNCLError, ConfigError


MAX_JOBS = 64
"""The most cells run at a time (each is a training process)."""


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bayesncl-ablate",
        description="Run a grid of training runs (priors × estimators × seeds ...) and tabulate them.")
    p.add_argument("spec", nargs="?", type=user_path, help="ablation YAML file (base config, overrides, grid)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides applied to every cell after the file's own, e.g. train.epochs=1")
    p.add_argument("--jobs", type=bounded_int(1, MAX_JOBS), default=1, help="cells run at a time as subprocesses (default 1: in this process)")
    p.add_argument("--out-dir", type=user_path, help="write the cells and reports here instead of the file's out_dir")
    p.add_argument("--dry-run", action="store_true", help="list the cells, their directories and what would happen; run nothing")
    p.add_argument("--run-cell", metavar="DIR", type=user_path, help=argparse.SUPPRESS)
    return p


def _number(row: dict[str, Any], key: str, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    """``row[key]`` with its unit; "–" when not measured, ``not defined: <reason>`` when nan."""
    from bayesncl_pyro.evaluation.glossary import is_undefined, not_defined

    value = row.get(key)
    if is_undefined(value):
        return not_defined(key)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value * scale:.{digits}f}{unit}"


def cell_line(row: dict[str, Any], seconds: float) -> str:
    """One line per finished cell: name, status, time and the main numbers with units, named as
    the tables name them."""
    if row["status"] != "done":
        return f"{row['cell']}: {row['status']} after {seconds:.0f} s ({row['note']})"
    return (f"{row['cell']}: done in {seconds:.0f} s; loss {_number(row, 'final_loss', 3)}, "
            f"true −ELBO {_number(row, 'true_negative_elbo', 3)}, "
            f"hard-gate open share {_number(row, 'open_rate', 1, 100.0, ' %')}, "
            f"SC {_number(row, 'semantic_consistency', 2, unit=' %')}, "
            f"online probe {_number(row, 'probe_top1', 1, unit=' %')}")


def check_some_cell_valid(spec: Any, cells: list[Any]) -> None:
    """Refuse a grid none of whose cells validates: a bad value among the overrides every cell
    shares (``train.steps=-1`` on the command line) is the user's mistake to fix, not a grid of
    skipped cells. A grid where only some cells do not validate (an estimator a prior has no use
    for) runs the others, as before."""
    from bayesncl_pyro.config import load_config

    if not cells or any(cell.skip_reason is None for cell in cells):
        return
    try:
        load_config(spec.base, spec.overrides)
    except ConfigError as exc:
        raise ConfigError(f"no cell can run: the overrides every cell shares do not validate: {exc}") from None
    raise ConfigError(f"no cell of the grid validates ({len(cells)} cells); the first: {cells[0].name}: "
                      f"{cells[0].skip_reason}")


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-ablate SPEC.yaml [key=value ...] [--jobs N] [--out-dir DIR] [--dry-run]"""
    p = parser()
    args = p.parse_args(argv)
    for text in args.overrides:  # a mistyped key is named before torch is imported
        check_override_key(parse_override(text)[0])
    if args.run_cell:
        from bayesncl_pyro.experiments.ablation import record_failure, run_cell

        try:
            run_cell(args.run_cell)
        except Exception as exc:
            record_failure(Path(args.run_cell), exc)
            if not isinstance(exc, BayesNCLError):  # a bug: the cell's log keeps its traceback
                traceback.print_exc()
            raise
        return 0
    if not args.spec:
        p.error("the ablation YAML file is required")
    from bayesncl_pyro.experiments.ablation_plan import load_spec, plan_cells

    spec = load_spec(args.spec, args.out_dir, args.overrides)  # a bad file or value is named before torch loads
    cells = plan_cells(spec)
    check_some_cell_valid(spec, cells)
    from bayesncl_pyro.experiments.ablation import is_finished, recorded_differences, run_ablation

    if args.dry_run:
        for cell in cells:
            diffs = recorded_differences(cell)
            state = ("skip: " + cell.skip_reason if cell.skip_reason else
                     "holds a run of another config: " + "; ".join(diffs[:5]) if diffs else
                     "finished" if is_finished(cell) else "to run")
            print(f"{cell.name}: {state} -> {cell.directory}")
        return 0
    to_run = sum(cell.skip_reason is None and not is_finished(cell) for cell in cells)
    done = iter(range(1, to_run + 1))
    result = run_ablation(spec, jobs=args.jobs, finished=lambda row, seconds: print(
        f"[{next(done, to_run)}/{to_run} cells] {cell_line(row, seconds)}", flush=True))
    failed = [r["cell"] for r in result.rows if r["status"] == "failed"]
    print(f"ran {len(result.ran)} cell(s), {len(result.skipped_finished)} already finished, "
          f"{sum(r['status'] == 'skipped' for r in result.rows)} skipped, {len(failed)} failed")
    print(f"reports: {result.csv_path}, {result.md_path}, {result.png_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    main()
