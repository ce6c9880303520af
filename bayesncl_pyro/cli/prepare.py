"""``bayesncl-prepare``: decode a config's image data once, before training, with every core.

Training decodes what it needs on first use anyway; preparing first keeps that decode out of a
job's time — out of a ``torchrun`` job's collective timeouts above all — and lets it run on one
machine of a cluster whose file system the others share.
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, guarded, user_path
from bayesncl_pyro.config import load_config

SPLITS = ("train", "test")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="bayesncl-prepare",
               description="Decode the images a config trains and evaluates on into the form training reads: an "
                           "ImageFolder tree into its on-disk store (data.store=mmap or data.store_size; every "
                           "core, resuming an interrupted decode) or its in-memory cache (up to 8 threads). "
                           "Running it again checks what is there against the tree and decodes again only what "
                           "is missing or changed.")
    p.add_argument("--config", type=user_path, help="YAML config file (default: built-in defaults)")
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                   help="the splits to prepare (default: train test)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.store_size=256")
    return p


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-prepare --config FILE [key=value ...] [--splits train test]"""
    args = parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)  # a mistake in the config is named before torch is imported
    from bayesncl_pyro.data.sources import prepare_split

    for split in dict.fromkeys(args.splits):
        started = time.perf_counter()
        prepared = prepare_split(cfg.data, split)
        if prepared is None:
            print(f"{split}: data.name={cfg.data.name} is generated in memory by every run; nothing to prepare")
            continue
        shape = "×".join(map(str, prepared.shape))
        print(f"{split}: {prepared.images:,} images of {prepared.classes} classes, uint8 {shape}; {prepared.where} "
              f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    main()
