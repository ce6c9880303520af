"""``bayesncl-train``: train BayesNCL (or NCL/SimCLR) by SVI into a run directory."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, guarded, user_path
from bayesncl_pyro.config.errors import BayesNCLError


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="bayesncl-train", description="Train BayesNCL (or NCL/SimCLR) by SVI.")
    p.add_argument("--config", type=user_path, help="YAML config file (default: built-in defaults)")
    p.add_argument("--resume", metavar="RUN_DIR", type=user_path,
                   help="continue the run in RUN_DIR from its last intact checkpoint (with its own config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. gate.prior_prob=0.8")
    return p


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-train --config FILE [key=value ...] [--resume RUN_DIR]"""
    args = parser().parse_args(argv)
    from bayesncl_pyro.config import load_config
    from bayesncl_pyro.storage.run_directory import CONFIG_FILE
    from bayesncl_pyro.training.loop import train
    from bayesncl_pyro.training.summary import format_summary

    if args.resume and args.config:
        raise BayesNCLError(f"--config cannot be combined with --resume: a resumed run keeps the config it was "
                            f"started with ({Path(args.resume) / 'config.yaml'}); give what may change (train.steps, "
                            "train.epochs, train.device, ...) as key=value")
    if args.resume:
        run = Path(args.resume)
        config_file = run / CONFIG_FILE
        if not config_file.is_file():
            raise BayesNCLError(f"--resume {run}: the directory does not hold a run (no {CONFIG_FILE})")
        cfg = load_config(config_file, [*args.overrides, f"train.out_dir={run}"])
    else:
        cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=bool(args.resume), progress=not args.no_progress)
    if summary:  # ranks other than 0 of a distributed run have nothing to say
        print(format_summary(summary))
        print(f"run directory: {cfg.train.out_dir}")
    return 0


if __name__ == "__main__":
    main()
