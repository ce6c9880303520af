"""``bayesncl-reproduce``: run a named result suite end to end (resumable)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, guarded, user_path
from bayesncl_pyro.config.errors import ConfigError

SHIPPED_SUITES = Path(__file__).resolve().parents[2] / "configs" / "suites"
"""The suites of this repository (``configs/suites/*.yaml``), found by name."""


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="bayesncl-reproduce",
                                description="Run a result suite end to end (resumable): train, evaluate, inspect, tables, figures.")
    p.add_argument("suite", help="a suite name in configs/suites (e.g. cpu) or a suite YAML file")
    p.add_argument("--out-dir", type=user_path, help="where the suite's runs and results go (default: the file's out_dir)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the tables and figures from the runs there are, without running anything")
    p.add_argument("--procedures", metavar="NAMES",
                   help="instead of running the suite, measure its finished runs under these evaluation procedures "
                        "(comma-separated: running, batch_shuffled, batch_class_blocks) and write procedure.md")
    p.add_argument("--only", metavar="PATTERNS",
                   help="run only the runs whose name (DATASET/METHOD/seedN or sweep/LABEL, as --dry-run lists them) "
                        "matches one of these comma-separated shell patterns, e.g. '*/ncl/*' in one process and "
                        "'*/bayesncl_ste/*' in another; the tables are still written from every finished run of the suite")
    p.add_argument("--no-progress", action="store_true")
    return p


def select_runs(jobs: Sequence, patterns: str) -> list:
    """The jobs whose name matches one of the comma-separated shell ``patterns``; a pattern that
    matches no run is an error naming the runs there are."""
    from fnmatch import fnmatchcase

    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    if not wanted:
        raise ConfigError(f"--only {patterns!r} names no pattern; allowed: comma-separated shell patterns over run "
                          "names such as cifar10/ncl/seed0 or '*/seed1'")
    names = [job.name for job in jobs]
    for pattern in wanted:
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ConfigError(f"--only pattern {pattern!r} matches no run of this suite; its runs: {', '.join(names)}")
    return [job for job in jobs if any(fnmatchcase(job.name, p) for p in wanted)]


def suite_file(name: str) -> Path:
    """A suite YAML file given as a path, or by the name of a shipped suite."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    path = SHIPPED_SUITES / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in SHIPPED_SUITES.glob("*.yaml")))
        raise ConfigError(f"suite {name!r} does not exist: neither a file nor a suite in {SHIPPED_SUITES}; "
                          f"allowed: a suite YAML file or one of {names}")
    return path


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-reproduce SUITE [--out-dir DIR] [--dry-run] [--report-only] [--procedures NAMES] [--only PATTERNS]"""
    args = parser().parse_args(argv)
    from bayesncl_pyro.experiments.suite import load_suite, plan, run_suite, write_tables

    spec = load_suite(suite_file(args.suite), args.out_dir)
    jobs = plan(spec)
    if args.only is not None:
        if args.procedures is not None:
            raise ConfigError("--only cannot be combined with --procedures: the procedure study measures every "
                              "finished run of the suite (entries already measured are kept)")
        jobs = select_runs(jobs, args.only)
    if args.dry_run:
        for job in jobs:
            print(f"{job.name:50s} {job.directory}")
        print(f"{len(jobs)} runs")
        return 0
    if args.procedures is not None:
        from bayesncl_pyro.evaluation.procedure import named_procedure
        from bayesncl_pyro.experiments.procedure_study import write_study

        names = [n.strip() for n in args.procedures.split(",") if n.strip()]
        if not names:
            raise ConfigError("--procedures names no procedure; allowed: a comma-separated list of running, "
                              "batch_shuffled, batch_class_blocks")
        for name in names:
            named_procedure(name)
        print(f"procedures: {write_study(spec, names, progress=not args.no_progress)}")
        return 0
    if args.report_only:  # the tables of the whole suite, whatever --only selects
        write_tables(spec)
    else:
        chosen = {job.name for job in jobs}
        run_suite(spec, progress=not args.no_progress,
                  only=None if args.only is None else (lambda job: job.name in chosen))
    print(f"results: {spec.out_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    main()
