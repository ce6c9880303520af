"""A scale ladder read from several suites (each a rung) of the same two methods on one dataset
(:mod:`bayesncl_pyro.experiments.ladder`):

    python scripts/ladder.py cpu_head cpu_ladder_e40 [--dataset cifar10] [--out runs/ladder]
                             [--method bayesncl_ste] [--baseline ncl] [--no-trace]
                             [--trace-every 10 | --trace-images 80000] [--pool RUNG RUNG ...]

Only finished, evaluated runs are read; runs that kept epoch checkpoints are measured at every
10th (``--trace-every``) or about every ``--trace-images`` training images
(``sc_over_training.json`` in the run, reused) unless ``--no-trace``. Writes ``ladder.md``,
``ladder.json``, ``ladder_gain.png`` and ``ladder_sc_knn.png`` into ``--out``. ``--pool`` adds a
row of differences over the seed pairs of the named rungs together.
"""
from __future__ import annotations

import argparse

from bayesncl_pyro.cli.guard import guarded, positive_int, user_path
from bayesncl_pyro.cli.reproduce import suite_file


def parse(argv=None):
    parser = argparse.ArgumentParser(prog="ladder.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="+", metavar="SUITE", help="suite names in configs/suites or suite files")
    parser.add_argument("--dataset", default="cifar10", help="the suites' dataset name to read (default cifar10)")
    parser.add_argument("--out", type=user_path, default="runs/ladder", help="where the tables and figures go")
    parser.add_argument("--method", default="bayesncl_ste")
    parser.add_argument("--baseline", default="ncl")
    spacing = parser.add_mutually_exclusive_group()
    spacing.add_argument("--no-trace", action="store_true",
                         help="do not measure epoch checkpoints (show the measurements stored, at any spacing)")
    spacing.add_argument("--trace-every", type=positive_int, default=10,
                         help="measure the epoch checkpoints whose epoch is a multiple of this (default 10)")
    spacing.add_argument("--trace-images", type=positive_int,
                         help="instead, measure about every this many training images in every rung (the nearest "
                              "whole number of epochs), so that rungs with more images per epoch are traced alike")
    parser.add_argument("--pool", nargs="+", metavar="RUNG", default=[],
                        help="also pair the seeds of these rungs (two or more of SUITE) together, each (rung, seed) "
                             "one pair: a difference across rungs that each have too few pairs alone")
    return parser.parse_args(argv)


@guarded
def main(argv=None) -> int:
    args = parse(argv)
    from bayesncl_pyro.experiments.ladder import write_ladder
    from bayesncl_pyro.experiments.suite import load_suite

    specs = [load_suite(suite_file(name)) for name in args.suites]
    path = write_ladder(specs, args.dataset, args.out, args.method, args.baseline, not args.no_trace, args.trace_every,
                        args.trace_images, args.pool)
    print(f"ladder: {path}")
    return 0


if __name__ == "__main__":
    main()
