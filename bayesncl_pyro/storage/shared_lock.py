"""An exclusive ``flock`` that processes sharing one output take around a step that must not
interleave: unpacking a dataset archive, collecting a suite's results and writing its tables (two
``bayesncl-reproduce --only`` processes of one suite), or checking and decoding an image store
(the ranks of a ``torchrun`` job). A waiting process says what it waits for; a file system without
locks is used unlocked, as run directories are, unless the caller refuses that."""
from __future__ import annotations

import errno
import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from bayesncl_pyro.storage.atomic import make_directory, open_own_file
from bayesncl_pyro.storage.run_directory import UNSUPPORTED

WOULD_BLOCK = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


@contextmanager
def exclusive(path: str | os.PathLike, what: str, *, record_holder: bool = False,
              refuse_unlocked: Callable[[str], Exception] | None = None) -> Iterator[int]:
    """Hold an exclusive lock on the file ``path`` (created if missing, never a link, FIFO or
    device) for the body and yield its descriptor; ``what`` names the guarded step in the waiting
    message ("another process is <what>").

    ``record_holder`` writes the holder's process id into the file, and a waiting process names
    it. Where the file system has no locks the body runs unlocked with the descriptor -1, or,
    given ``refuse_unlocked``, that factory's exception (from a message naming the path) is raised.
    """
    path = Path(path)
    make_directory(path.parent)
    fd = open_own_file(path, os.O_RDWR | os.O_CREAT, 0o666, action="lock", doing="create the lock file",
                       harm="writing it would change that file", refusal="cannot use the lock file {path}: {what}")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in UNSUPPORTED:
                if refuse_unlocked is not None:
                    raise refuse_unlocked(f"the file system of {path} does not support locks ({error.strerror}): "
                                          f"processes {what} at once could not be kept apart") from None
                yield -1
                return
            if error.errno not in WOULD_BLOCK:
                raise
            holder = ""
            if record_holder:
                holder = f" (pid {os.pread(fd, 32, 0).decode('ascii', 'replace').strip() or 'unknown'})"
            print(f"waiting for the lock {path}: another process{holder} is {what}; this one goes on when it is "
                  "done", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        if record_holder:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
