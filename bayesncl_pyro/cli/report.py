"""``bayesncl-report``: one self-contained HTML page for one run or several side by side."""
from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, guarded, run_path, user_path


REPORT_MARK = b"<title>BayesNCL report: "
"""What the head of every page :func:`~bayesncl_pyro.evaluation.report.render_report` writes holds:
a file with it may be replaced by a new report, any other file is the user's."""
HEAD_BYTES = 4096


def is_report(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a link, FIFO or device) that an earlier report wrote."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return REPORT_MARK in os.read(fd, HEAD_BYTES)
    finally:
        os.close(fd)


def check_replaceable(out: Path) -> None:
    """Raise ConfigError unless ``out`` is missing or an earlier report: a mistyped ``--out`` must
    never overwrite a user's file."""
    from bayesncl_pyro.config.errors import ConfigError

    if os.path.lexists(out) and not is_report(out):
        raise ConfigError(f"--out {out}: exists and is not a report of bayesncl-report (no "
                          f"{REPORT_MARK.decode()!r} in its head); choose a new file, or an earlier report")


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
    from bayesncl_pyro.evaluation.report import REPORT_FILE, load_runs, save_report, text_summary

    out = Path(args.out) if args.out else (Path(args.run_dirs[0]) if len(args.run_dirs) == 1 else Path.cwd()) / \
        REPORT_FILE
    check_replaceable(out)
    runs = load_runs(args.run_dirs)
    path = save_report(runs, out)
    print(text_summary(runs))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    main()
