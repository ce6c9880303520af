"""Writing a whole site at once: into a temporary sibling directory, then renamed into place, so a
reader sees the old site or the new one, never a half-written one.

The builder holds an ``flock`` on its temporary directory while it fills it; a temporary
directory nobody holds (its builder was killed, even with SIGKILL) is removed by the next build
beside it. A failure to write (a full disk) is one line naming the file and the free space."""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import time
import tempfile
from pathlib import Path
from typing import Callable

from bayesncl_pyro.config.errors import ConfigError, StorageError
from bayesncl_pyro.storage.atomic import storage_error

MARKER = Path("data") / "site.js"
"""A file every browser site has; a directory holding it may be replaced by a new site."""


def is_site(path: Path) -> bool:
    """Whether ``path`` holds the marker as a regular file reached through no link below ``path``."""
    try:
        return not (path / MARKER.parent).is_symlink() and stat.S_ISREG(os.lstat(path / MARKER).st_mode)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_replaceable(out: Path) -> None:
    """Raise ConfigError unless ``out`` is missing, an empty directory or an earlier site: a
    mistyped ``--out`` must never delete a user's files."""
    if out.exists() and not (out.is_dir() and (is_site(out) or not any(out.iterdir()))):
        raise ConfigError(f"--out {out}: exists and is not a feature browser site (no {MARKER}); "
                          "choose a new or empty directory, or an earlier output of bayesncl-browse")


STALE_AGE = 60.0
"""Seconds a temporary directory must be left untouched before another build may remove it."""


def _hold(directory: Path) -> int:
    """An open descriptor of ``directory`` holding its exclusive lock (-1 where locks are unsupported)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1
    return fd


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove the temporary directories (``.<name>.*.tmp`` / ``.old``) that killed builds of the
    site ``out`` left beside it: those untouched for :data:`STALE_AGE` seconds whose lock nobody
    holds. Returns them."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.[A-Za-z0-9_]{{8}}\.(tmp|old)")
    removed = []
    if not out.parent.is_dir():
        return removed
    for entry in out.parent.iterdir():
        if not pattern.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if time.time() - entry.stat().st_mtime < STALE_AGE:
                continue
            fd = _hold(entry)
        except OSError:
            continue
        if fd < 0:  # a build still running holds it
            continue
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


def replace_directory(out: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Let ``fill`` write the site into an empty temporary directory beside ``out``, then put it at
    ``out`` (see :func:`check_replaceable`); an earlier site there is removed after the swap.
    Temporary directories of killed earlier builds are removed first."""
    out = Path(out)
    check_replaceable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as error:
        raise storage_error(error, error.filename or out.parent, "create the site beside") from None
    held = _hold(tmp)
    old = None
    try:
        fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the directory the usual permissions
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "site")
        os.replace(tmp, out)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / "site").exists():
            os.replace(old / "site", out)
        if isinstance(error, OSError) and not isinstance(error, StorageError):
            where = error.filename or out
            if error.errno in (errno.ENOSPC, errno.EDQUOT) and not error.filename:
                where = out  # a failed write names no file; the site is what could not be written
            raise storage_error(error, where, "write the feature browser") from None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if held >= 0:
            os.close(held)
    return out
