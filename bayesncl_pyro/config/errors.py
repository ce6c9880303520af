"""Errors a user can act on: each names the bad key, value or file and what is allowed."""
from __future__ import annotations

MESSAGE_LIMIT = 600
"""Longest error message printed, in characters; longer ones are cut, saying so."""


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line and at most about ``limit`` characters, saying so when cut."""
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    if len(line) <= limit:
        return line
    return f"{line[:limit]}… (cut; {len(line)} characters in all)"


def clip(text: object, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters for a message, saying so."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else f"{text[:limit]}… (cut; {len(text)} characters in all)"


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, shortened for a message: a value typed by a user may be any length."""
    return clip(repr(value), limit)


class BayesNCLError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(BayesNCLError, ValueError):
    """A configuration key or value is not allowed."""


class DataError(BayesNCLError, ValueError):
    """A dataset, image file or batch of images is not usable."""


class CheckpointError(BayesNCLError):
    """A checkpoint or run directory does not match what was asked for."""


class StorageError(BayesNCLError, OSError):
    """A file or directory cannot be written (full disk, read-only, a file in the way) or is
    in use by another process; the message names the path. An OSError too, so that code that
    falls back on an operating-system failure (a read-only data tree) still does."""


class NonFiniteStep(BayesNCLError, FloatingPointError):
    """A training step's loss or gradient is NaN or infinite; the optimizer did not move."""


class TrainingInterrupted(BayesNCLError):
    """SIGTERM or SIGINT arrived; the run saved a checkpoint at the last finished step."""


class PeerLost(BayesNCLError):
    """Another process of a distributed run died or stopped answering in a collective; the run
    keeps its last checkpoint and can be resumed."""


class RunWarning(UserWarning):
    """Something a user should know while the command goes on (a skipped step, a fallback to an
    older checkpoint); console commands print it as one ``warning:`` line."""
