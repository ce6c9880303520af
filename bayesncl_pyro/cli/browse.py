"""``bayesncl-browse``: the feature browser of a run (or two runs side by side) as a static site."""
from __future__ import annotations

import argparse
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, bounded_int, guarded, seed, user_path


MAX_IMAGES = 1000
"""The most images per dimension (``--top-k``) or neighbours per image a page shows."""


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="bayesncl-browse",
        description="Write a static website (open index.html in a browser, no server or network needed) with a "
                    "sortable table of every output dimension, a page per dimension and a page per test image. "
                    "Two run directories on the same data are shown side by side, each dimension linked to its "
                    "best-matching dimension of the other run. Runs bayesncl-inspect first when gates.nc is "
                    "missing or stale.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=user_path, help="one run directory, or two on the same dataset")
    p.add_argument("--out", type=user_path, help="output directory (default: RUN_DIR/browser for one run, ./browser for two)")
    p.add_argument("--top-k", type=bounded_int(1, MAX_IMAGES), default=16, help="most activating images per dimension (default 16)")
    p.add_argument("--neighbours", type=bounded_int(1, MAX_IMAGES), default=8, help="nearest images per image (default 8)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random samples of activating images (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-browse RUN_DIR [RUN_DIR] [--out DIR] [--top-k N] [--neighbours N] [--seed N] [--device D]"""
    args = parser().parse_args(argv)
    from bayesncl_pyro.browser.site_builder import browse
    from bayesncl_pyro.browser.site_data import BrowserOptions

    options = BrowserOptions(top_k=args.top_k, sample_k=args.top_k, neighbours=args.neighbours, seed=args.seed)
    out = browse(args.run_dirs, out=args.out, device=args.device, options=options, progress=not args.no_progress)
    print(f"wrote {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    main()
