"""``bayesncl-inspect``: the variational gate posterior of a run as ArviZ data, a summary and figures."""
from __future__ import annotations

import argparse
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, add_run_arguments, bounded_int, guarded, seed


MAX_DRAWS = 4000
MAX_CHAINS = 8
"""Bounds of ``--draws`` and ``--chains``: the draws are held in memory as [chains, draws, classes,
dims] (4000 × 8 draws of 10 classes × 256 dims take about 330 MB)."""
MAX_SHOWN = 100
"""The most dimensions or images per dimension in the image grid."""


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bayesncl-inspect",
        description="Draw from the variational gate posterior and the prior of a run into an ArviZ "
                    "InferenceData (gates.nc), summarise it (gates_summary.csv/.md) and plot it (gates_*.png); "
                    "rank the dimensions by class specificity (dims.json, dims_best_worst.png). All in the "
                    "run directory; an ungated run gets the ranking only.")
    add_run_arguments(p)
    p.add_argument("--draws", type=bounded_int(1, MAX_DRAWS), default=200, help="draws per chain (default 200)")
    p.add_argument("--chains", type=bounded_int(1, MAX_CHAINS), default=2,
                   help="groups of independent draws (default 2); the draws are not a Markov chain, "
                        "so the summary reports no r-hat or ESS")
    p.add_argument("--seed", type=seed, default=0, help="seed of the draws (default 0)")
    p.add_argument("--top-dims", type=bounded_int(1, MAX_SHOWN), default=8, help="dimensions in the image grid (default 8)")
    p.add_argument("--top-images", type=bounded_int(1, MAX_SHOWN), default=8, help="images per dimension (default 8)")
    return p


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-inspect RUN_DIR [--draws N] [--chains N] [--seed N] [--device DEVICE] [--no-progress]"""
    args = parser().parse_args(argv)
    from bayesncl_pyro.evaluation.gate_posterior import inspect_run

    result = inspect_run(args.run_dir, draws=args.draws, chains=args.chains, device=args.device, seed=args.seed,
                         top_dims=args.top_dims, top_images=args.top_images, progress=not args.no_progress)
    if result.idata is None:
        print(f"no gates in {args.run_dir} (gate.prior=none): wrote only what needs no gates")
    else:
        print(f"wrote {result.netcdf} (groups: {', '.join(result.idata.groups())})")
        print(f"wrote {result.summary_csv} and {result.summary_md} (az.summary kind=stats: the draws are "
              "independent, so r-hat and ESS do not apply and are left out)")
    print(f"wrote {result.dims_json}")
    for path in result.figures.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    main()
