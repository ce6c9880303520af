"""One clear line and an exit code for every failure a user can act on."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from bayesncl_pyro.config.errors import BayesNCLError, TrainingInterrupted

Main = Callable[[Sequence[str] | None], int]


def guarded(main: Main) -> Main:
    """Wrap a command's ``main(argv) -> exit code``: a :class:`BayesNCLError` becomes ``error: ...``
    and exit code 2; an interrupted training run (or Ctrl-C) exit code 130. Called without
    ``argv`` (as a console script) it exits the process with the code."""

    def wrapper(argv: Sequence[str] | None = None) -> int:
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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; allowed: an integer >= 1")
    return value


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every command on one trained run takes: RUN_DIR, ``--device``, ``--no-progress``."""
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by bayesncl-train")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
