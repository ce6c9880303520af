"""Console commands. Each turns a user's mistake into one clear line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import BayesNCLError


def guarded(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    def wrapper(argv: Sequence[str] | None = None) -> int:
        from .train import TrainingInterrupted

        try:
            code = main(argv)
        except TrainingInterrupted as exc:
            print(f"stopped: {exc}", file=sys.stderr)
            code = 130
        except BayesNCLError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            code = 130
        if argv is None:
            sys.exit(code)
        return code

    wrapper.__doc__ = main.__doc__
    return wrapper


@guarded
def train_main(argv: Sequence[str] | None = None) -> int:
    """bayesncl-train --config FILE [key=value ...] [--resume RUN_DIR]"""
    from .config import load_config
    from .run_dir import CONFIG_FILE
    from .summary import format_summary
    from .train import train

    parser = argparse.ArgumentParser(prog="bayesncl-train", description="Train BayesNCL (or NCL/SimCLR) by SVI.")
    parser.add_argument("--config", help="YAML config file (default: built-in defaults)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. gate.prior_prob=0.8")
    args = parser.parse_args(argv)
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
