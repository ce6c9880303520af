"""``bayesncl-report``: one self-contained HTML page for one run or several side by side."""
from __future__ import annotations

import argparse
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, guarded, run_path, user_path


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bayesncl-report",
        description="Gather training curves, evaluation tables and gate-posterior figures of one or several "
                    "runs into one self-contained HTML page, runs side by side, and print the main numbers "
                    "of each run.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=run_path, help="run directories")
    p.add_argument("--out", metavar="FILE", type=user_path,
                   help="output file (default: report.html in the run directory, or in the current "
                        "directory when several runs are given)")
    return p


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-report RUN_DIR [RUN_DIR ...] [--out FILE]"""
    args = parser().parse_args(argv)
    from bayesncl_pyro.evaluation.report import load_runs, save_report, text_summary

    runs = load_runs(args.run_dirs)
    path = save_report(runs, args.out)
    print(text_summary(runs))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    main()
