"""Large files given their blocks before they are written through a memory map.

A write to a mapped page of a sparse file that the disk has no room for is not an error a
program can catch: the kernel kills it with SIGBUS (exit 135, nothing printed). So a file that
is to be mapped and filled is checked against the free space first and then allocated for real
(``posix_fallocate``): a full disk is one :class:`StorageError` line naming the file and the
space it needs, before any pixel is decoded.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from bayesncl_pyro.config.errors import StorageError
from bayesncl_pyro.storage.atomic import _existing_ancestor, _size, storage_error

UNSUPPORTED = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
"""``posix_fallocate`` errors of file systems that cannot allocate ahead (the size is set instead)."""


def check_free_space(path: str | os.PathLike, needed: int, what: str = "file") -> None:
    """Raise StorageError unless the file system that will hold ``path`` has ``needed`` bytes free."""
    path = Path(path)
    where = _existing_ancestor(path.absolute().parent)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return
    if free < needed:
        raise StorageError(f"cannot create the {what} {path}: it needs {_size(needed)} and only {_size(free)} are "
                           f"free on {where}; free some space there, or choose another place (data.cache_dir)")


def allocate(fd: int, path: str | os.PathLike, size: int, what: str = "file") -> None:
    """Give the open file ``fd`` (named ``path``) ``size`` bytes of real blocks (zeros)."""
    check_free_space(path, size, what)
    try:
        if size > 0 and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        os.ftruncate(fd, size)
    except OSError as error:
        if error.errno in UNSUPPORTED:
            try:
                os.ftruncate(fd, size)
                return
            except OSError as again:
                error = again
        raise storage_error(error, path, f"allocate {_size(size)} for") from None
