"""One clear line and an exit code for every failure a user can act on."""
from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from bayesncl_pyro.config.errors import BayesNCLError, RunWarning, TrainingInterrupted, clip, one_line, shown
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


TRACEBACK_VARIABLE = "BAYESNCL_TRACEBACK"
"""Set (to anything non-empty) to get the full traceback of an unexpected error instead of its one line."""


def unexpected(exc: BaseException) -> str:
    """The line for an error no check foresaw: its type and message (never longer than a line),
    where it was raised, and how to see the whole traceback."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (in {Path(frames[-1].filename).name}, {frames[-1].name})" if frames else ""
    return (f"{type(exc).__name__}: {clip(exc, 300)}{where}; this is not a message of bayesncl-pyro's own checks: "
            f"{TRACEBACK_VARIABLE}=1 shows the traceback")


def guarded(main: Main) -> Main:
    """Wrap a command's ``main(argv) -> exit code``: a :class:`BayesNCLError` (or an operating
    system error: a full disk, a read-only or missing path; memory running out; input nested
    too deeply) becomes one ``error: ...`` line and exit code 2; an interrupted training run (or
    Ctrl-C, SIGTERM) exit code 130. Any other exception is one ``error:`` line too, naming its
    type and where it was raised, with exit code 1 (the environment variable
    :data:`TRACEBACK_VARIABLE` shows its traceback instead). Called without
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
            except MemoryError:
                print("error: out of memory: the command needs more memory than this machine gives it; "
                      "smaller values (batch sizes, data.image_size, widths, --draws) need less", file=sys.stderr)
                code = 2
            except RecursionError:
                print("error: the input is nested too deeply to be read", file=sys.stderr)
                code = 2
            except Exception as exc:  # a failure nobody foresaw: one line, the traceback on request
                if os.environ.get(TRACEBACK_VARIABLE):
                    raise
                print(f"error: {one_line(unexpected(exc))}", file=sys.stderr)
                code = 1
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


OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")
"""How a ``key=value`` config override begins: a key of names and dots, then ``=``."""


class Parser(argparse.ArgumentParser):
    """argparse, with a command-line mistake as one ``error:`` line (exit code 2) instead of a
    usage block: the usage is one ``--help`` away."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        """Options and positional arguments in any order: ``key=value`` overrides (the positional
        ``overrides``) may come before, between and after options (``--config X a=1 --no-progress
        b=2``), after an option of several values (``--splits train a=1``) and before another
        positional argument (``a=1 grid.yaml``). They are taken out of the command line first,
        so no option or positional argument can swallow one; only the value of an option that
        takes one value is left as it is (``--config a=b.yaml``)."""
        words = sys.argv[1:] if args is None else list(args)
        if not any(action.dest == "overrides" for action in self._actions):
            return self.parse_intermixed_args(words, namespace)
        overrides, rest = self._take_overrides(words)
        parsed = self.parse_intermixed_args(rest, namespace)
        for word in parsed.overrides:  # what is left there is no override: say what it may be instead
            if not OVERRIDE.match(word):
                raise UsageError(self._not_an_override(word, parsed))
        parsed.overrides = [*overrides, *parsed.overrides]
        return parsed

    def _take_overrides(self, words: list[str]) -> tuple[list[str], list[str]]:
        """``words`` split into the overrides, in their order, and everything else."""
        one_value = [option for action in self._actions if action.option_strings and action.nargs is None
                     for option in action.option_strings]

        def takes_one_value(word: str | None) -> bool:
            return (word is not None and word.startswith("-") and "=" not in word
                    and any(option == word or (word.startswith("--") and option.startswith(word))
                            for option in one_value))

        overrides, rest, previous = [], [], None
        for index, word in enumerate(words):
            if word == "--":
                rest.extend(words[index:])
                break
            (overrides if OVERRIDE.match(word) and not takes_one_value(previous) else rest).append(word)
            previous = word
        return overrides, rest

    def _not_an_override(self, word: str, parsed: argparse.Namespace) -> str:
        text = f"{self.prog}: {shown(word)} is not a key=value override (e.g. optim.lr=0.4)"
        if (word.endswith((".yaml", ".yml")) and any("--config" in a.option_strings for a in self._actions)
                and not getattr(parsed, "resume", None)):
            text += f"; to read it as the config file, give --config {word}"
        return text


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


def bounded_int(low: int, high: int, what: str = "") -> Callable[[str], int]:
    """argparse type: an integer from ``low`` to ``high`` (``what`` says why the bound, if not obvious)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer; allowed: an integer from {low} "
                                             f"to {high}{what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not allowed; allowed: an integer from {low} to {high}{what}")
        return value

    parse.__name__ = f"integer from {low} to {high}"
    return parse


def user_path(text: str) -> str:
    """argparse type: a path, with ``~`` expanded to the home directory."""
    return os.path.expanduser(text)


def run_path(text: str) -> str:
    """argparse type: a run directory that exists (``~`` expanded), checked before the command
    imports anything heavy, so that a mistyped path is named at once."""
    path = user_path(text)
    if not os.path.exists(path):
        raise UsageError(f"run directory {path} does not exist; give a directory written by bayesncl-train")
    if not os.path.isdir(path):
        raise UsageError(f"run directory {path} is not a directory; give a directory written by bayesncl-train")
    return path


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every command on one trained run takes: RUN_DIR, ``--device``, ``--no-progress``."""
    p.add_argument("run_dir", metavar="RUN_DIR", type=run_path, help="a run directory written by bayesncl-train")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the run's train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
