"""An exclusive ``flock`` that processes sharing one output (two ``bayesncl-reproduce --only``
processes of one suite) take around a step that must not interleave: unpacking a dataset
archive, or collecting a suite's results and writing its tables. A waiting process says what it
waits for; a file system without locks is used unlocked, as run directories are."""
from __future__ import annotations

import errno
import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bayesncl_pyro.storage.atomic import make_directory, open_own_file
from bayesncl_pyro.storage.run_directory import UNSUPPORTED


@contextmanager
def exclusive(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing, never a link, FIFO or
    device) for the body; ``what`` names the guarded step in the waiting message."""
    path = Path(path)
    make_directory(path.parent)
    fd = open_own_file(path, os.O_RDWR | os.O_CREAT, 0o666, action="lock", doing="create the lock file",
                       harm="writing it would change that file", refusal="cannot use the lock file {path}: {what}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in UNSUPPORTED:
                yield
                return
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            print(f"waiting for the lock {path}: another process is {what}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
