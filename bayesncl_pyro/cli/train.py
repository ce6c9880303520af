"""``bayesncl-train``: train BayesNCL (or NCL/SimCLR) by SVI into a run directory."""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Sequence

from bayesncl_pyro.cli.guard import Parser, guarded, user_path
from bayesncl_pyro.config import Config, load_config
from bayesncl_pyro.config.errors import BayesNCLError, RunWarning


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
    cfg = _config(args)  # a mistake in a fresh run's config is named before torch is imported
    from bayesncl_pyro.training.loop import train
    from bayesncl_pyro.training.summary import format_summary

    finished_at = _finished_step(Path(args.resume)) if args.resume else None
    summary = train(cfg, resume=bool(args.resume), progress=not args.no_progress)
    if summary:  # ranks other than 0 of a distributed run have nothing to say
        if finished_at is not None and summary.get("steps") == finished_at:
            warnings.warn(_longer_hint(cfg), RunWarning, stacklevel=1)
        print(format_summary(summary))
        print(f"run directory: {cfg.train.out_dir}")
    return 0


def _config(args: argparse.Namespace) -> Config:
    """The validated config of a fresh run (``--config`` and overrides) or of the run to resume
    (its own ``config.yaml`` and overrides)."""
    if args.resume and args.config:
        raise BayesNCLError(f"--config cannot be combined with --resume: a resumed run keeps the config it was "
                            f"started with ({Path(args.resume) / 'config.yaml'}); give what may change (train.steps, "
                            "train.epochs, train.device, ...) as key=value")
    if not args.resume:
        return load_config(args.config, args.overrides)
    from bayesncl_pyro.storage.run_directory import CONFIG_FILE

    run = Path(args.resume)
    if not run.exists():
        raise BayesNCLError(f"--resume {run}: the run directory does not exist")
    config_file = run / CONFIG_FILE
    if not config_file.is_file():
        raise BayesNCLError(f"--resume {run}: the directory does not hold a run (no {CONFIG_FILE})")
    return load_config(config_file, [*args.overrides, f"train.out_dir={run}"])


def _finished_step(run: Path) -> int | None:
    """The step at which ``run`` finished (its summary says), or None when it has not."""
    from bayesncl_pyro.storage.run_directory import SUMMARY_FILE

    try:
        summary = json.loads((run / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    steps = summary.get("steps") if isinstance(summary, dict) else None
    return steps if isinstance(steps, int) else None


def _longer_hint(cfg: Config) -> str:
    """What to pass to train a finished run longer: more epochs, and no step cap if it has one."""
    t = cfg.train
    more = f"train.epochs={2 * t.epochs}"
    if t.steps:
        more += " train.steps=0"
    now = f"train.epochs={t.epochs}" + (f", train.steps={t.steps}" if t.steps else "")
    return f"to train {t.out_dir} longer, resume it with more: bayesncl-train --resume {t.out_dir} {more} (now {now})"

if __name__ == "__main__":
    main()
