"""One clear line and an exit code for every failure a user can act on."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable, Sequence

from bayesncl_pyro.config.errors import BayesNCLError, RunWarning, TrainingInterrupted, one_line
from bayesncl_pyro.config.validation import MAX_SEED

Main = Callable[[Sequence[str] | None], int]


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """Warnings meant for the user (:class:`RunWarning`) as one ``warning:`` line; others as usual."""
    if issubclass(category, RunWarning):
        print(f"warning: {one_line(message)}", file=sys.stderr if file is None else file, flush=True)
    else:
        _default(message, category, filename, lineno, file, line)


def _os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot use{where}: {exc.strerror or exc}"


def guarded(main: Main) -> Main:
    """Wrap a command's ``main(argv) -> exit code``: a :class:`BayesNCLError` (or an operating
    system error: a full disk, a read-only or missing path) becomes one ``error: ...`` line and
    exit code 2; an interrupted training run (or Ctrl-C, SIGTERM) exit code 130. Called without
    ``argv`` (as a console script) it installs the process's signal handlers
    (:func:`~bayesncl_pyro.training.signals.install_process_handlers`) and exits the process
    with the code."""

    def wrapper(argv: Sequence[str] | None = None) -> int:
        if argv is None:
            from bayesncl_pyro.training.signals import install_process_handlers

            install_process_handlers()
        with warnings.catch_warnings():
            warnings.simplefilter("always", RunWarning)
            warnings.showwarning = _show_warning
            try:
                code = main(argv)
            except TrainingInterrupted as exc:
                print(f"stopped: {one_line(exc)}", file=sys.stderr)
                code = 130
            except BayesNCLError as exc:
                print(f"error: {one_line(exc)}", file=sys.stderr)
                code = 2
            except KeyboardInterrupt:
                print("interrupted", file=sys.stderr)
                code = 130
            except OSError as exc:
                print(f"error: {one_line(_os_error(exc))}", file=sys.stderr)
                code = 2
        if argv is None:
            from bayesncl_pyro.training.signals import ignore_signals_at_exit

            ignore_signals_at_exit()
            sys.stderr.flush()
            sys.exit(code)
        return code

    wrapper.__doc__ = main.__doc__
    return wrapper


class UsageError(BayesNCLError):
    """A command line that does not parse (an unknown option, a bad option value)."""


class Parser(argparse.ArgumentParser):
    """argparse, with a command-line mistake as one ``error:`` line (exit code 2) instead of a
    usage block: the usage is one ``--help`` away."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; allowed: an integer >= 1")
    return value


def seed(text: str) -> int:
    """argparse type: a seed every random generator accepts, 0 to 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; allowed: an integer from 0 to {MAX_SEED}")
    return value


def user_path(text: str) -> str:
    """argparse type: a path, with ``~`` expanded to the home directory."""
    return os.path.expanduser(text)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every command on one trained run takes: RUN_DIR, ``--device``, ``--no-progress``."""
    p.add_argument("run_dir", metavar="RUN_DIR", type=user_path, help="a run directory written by bayesncl-train")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
