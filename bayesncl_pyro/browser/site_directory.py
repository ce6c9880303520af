"""Writing a whole site at once: into a temporary sibling directory, then renamed into place, so a
reader sees the old site or the new one, never a half-written one."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from bayesncl_pyro.config.errors import ConfigError

MARKER = Path("data") / "site.js"
"""A file every browser site has; a directory holding it may be replaced by a new site."""


def is_site(path: Path) -> bool:
    return (path / MARKER).is_file()


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


def replace_directory(out: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Let ``fill`` write the site into an empty temporary directory beside ``out``, then put it at
    ``out`` (see :func:`check_replaceable`); an earlier site there is removed after the swap."""
    out = Path(out)
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the directory the usual permissions
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "site")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists() and (old / "site").exists():
            os.replace(old / "site", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out
