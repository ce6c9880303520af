"""Console commands of the evaluation suite: ``bayesncl-eval``, ``bayesncl-inspect``, ``bayesncl-report``.

Each is wrapped by ``cli.guarded``: a user's mistake (no such run, an ungated run to inspect)
becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from .cli import guarded
from .errors import ConfigError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; allowed: an integer >= 1")
    return value


@guarded
def eval_main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-eval RUN_DIR [--init] [--device DEVICE] [--no-progress]"""
    from .evaluate import evaluate_run

    parser = argparse.ArgumentParser(
        prog="bayesncl-eval",
        description="Evaluate a run on its test split: linear probe and k-NN, the SPEC §6 metrics on h, z and "
                    "gated z, and (on scenes) the ground-truth gate check. Writes eval.json and eval.md.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by bayesncl-train")
    parser.add_argument("--init", action="store_true",
                        help="evaluate the network at its seeded initialisation instead (eval_init.json/.md)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    result, json_path, md_path = evaluate_run(args.run_dir, device=args.device, init=args.init,
                                              progress=not args.no_progress)
    probe = result["linear_probe"]
    line = f"linear probe top-1 {probe['top1']:.2f} %, top-5 {probe['top5']:.2f} %"
    sc = result["metrics"]["gated"]["semantic_consistency"]
    if sc is not None:
        line += f"; semantic consistency (gated) {sc:.2f} %"
    print(line)
    print(f"wrote {json_path} and {md_path}")
    return 0


@guarded
def inspect_main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-inspect RUN_DIR [--draws N] [--chains N] [--seed N] [--device DEVICE] [--no-progress]"""
    from .inspect import inspect_run

    parser = argparse.ArgumentParser(
        prog="bayesncl-inspect",
        description="Draw from the variational gate posterior of a run into an ArviZ InferenceData (gates.nc), "
                    "summarise it (gates_summary.csv/.md) and plot it (gates_*.png), all in the run directory.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by bayesncl-train")
    parser.add_argument("--draws", type=_positive_int, default=200, help="draws per chain (default 200)")
    parser.add_argument("--chains", type=_positive_int, default=2,
                        help="groups of independent draws (default 2); the draws are not a Markov chain, "
                             "so the summary reports no r-hat or ESS")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--top-dims", type=_positive_int, default=8, help="dimensions in the image grid (default 8)")
    parser.add_argument("--top-images", type=_positive_int, default=8, help="images per dimension (default 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    result = inspect_run(args.run_dir, draws=args.draws, chains=args.chains, device=args.device, seed=args.seed,
                         top_dims=args.top_dims, top_images=args.top_images, progress=not args.no_progress)
    print(f"wrote {result.netcdf}, {result.summary_csv}, {result.summary_md}")
    for path in result.figures.values():
        print(f"wrote {path}")
    return 0


@guarded
def report_main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-report RUN_DIR [RUN_DIR ...] [--out FILE]"""
    from .report import write_report

    parser = argparse.ArgumentParser(
        prog="bayesncl-report",
        description="Gather training curves, evaluation tables and gate-posterior figures of one or several "
                    "runs into one self-contained HTML page, runs side by side.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("--out", metavar="FILE",
                        help="output file (default: report.html in the run directory, or in the current "
                             "directory when several runs are given)")
    args = parser.parse_args(argv)
    print(f"wrote {write_report(args.run_dirs, args.out)}")
    return 0


@guarded
def reproduce_main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-reproduce SUITE [--out-dir DIR] [--dry-run]"""
    from pathlib import Path as _Path

    from .suite import collect, load_suite, plan, run_suite, write_results

    parser = argparse.ArgumentParser(prog="bayesncl-reproduce",
                                     description="Run a result suite end to end (resumable): train, evaluate, inspect, tables, figures.")
    parser.add_argument("suite", help="a suite name in configs/suites (e.g. cpu) or a suite YAML file")
    parser.add_argument("--out-dir", help="where the suite's runs and results go (default: the file's out_dir)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the tables and figures from the runs there are, without running anything")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    path = _Path(args.suite)
    if not path.is_file():
        shipped = _Path(__file__).resolve().parents[1] / "configs" / "suites"
        path = shipped / f"{args.suite}.yaml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
            raise ConfigError(f"suite {args.suite!r} does not exist: neither a file nor a suite in {shipped}; "
                              f"allowed: a suite YAML file or one of {names}")
    spec = load_suite(path, args.out_dir)
    jobs = plan(spec)
    if args.dry_run:
        for job in jobs:
            print(f"{job.name:50s} {job.directory}")
        print(f"{len(jobs)} runs")
        return 0
    if args.report_only:
        write_results(spec, collect(spec, jobs))
    else:
        run_suite(spec, progress=not args.no_progress)
    print(f"results: {spec.out_dir / 'results.md'}")
    return 0
