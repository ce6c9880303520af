"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A write goes to a temporary file ``.<name>.<random>.tmp`` beside the target, is fsynced and
renamed over it. A process killed mid-write can leave such a temporary file behind (never a half
target); :func:`remove_stale_temporaries` clears them when a run directory is opened again.
Every OS failure becomes one :class:`StorageError` line naming the path: a full disk (with the
free space), a file size limit, a read-only file system, no permission, a file in the way.

Files are never written through symbolic links: a target that is a link is refused (naming it
and where it points), so a planted ``RUN/metrics.jsonl -> ~/.bashrc`` cannot redirect a write.
Reads go through :func:`read_regular`, which refuses FIFOs, devices and oversized files instead
of hanging on them or filling the memory.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from bayesncl_pyro.config.errors import StorageError

TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")
"""Names of the temporary files of :func:`atomic_write_file` (``tempfile.mkstemp``'s 8 characters)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _file_in_the_way(path: Path) -> Path | None:
    """The first component of ``path`` that exists and is not a directory."""
    for candidate in reversed((path, *path.parents)):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def free_space(path: str | os.PathLike) -> str:
    """The free space of the file system holding ``path`` (or its nearest existing parent)."""
    where = _existing_ancestor(Path(path).absolute())
    try:
        return f"{_size(shutil.disk_usage(where).free)} free on {where}"
    except OSError:
        return "free space unknown"


def storage_error(error: OSError, path: str | os.PathLike, doing: str = "write") -> StorageError:
    """One line for an OS failure to ``doing`` (write, create, ...) ``path``."""
    path = Path(path)
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if code == errno.ENOSPC else "the disk quota is used up"
        reason = f"{what} ({free_space(path.parent)})"
    elif code == errno.EFBIG:
        reason = "the file would exceed the file size limit of this process (ulimit -f)"
    elif code == errno.EROFS:
        reason = "the file system is read-only"
    elif code in (errno.EACCES, errno.EPERM):
        reason = "permission denied (the directory is not writable)"
    elif code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(path)
        reason = (f"{blocker} is a file, not a directory" if blocker is not None
                  else error.strerror or type(error).__name__)
    elif code == errno.EISDIR:
        reason = f"{error.filename or path} is a directory"
    else:
        reason = error.strerror or str(error) or type(error).__name__
    return StorageError(f"cannot {doing} {path}: {reason}")


def make_directory(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; an OS failure is one StorageError line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise storage_error(error, path, "create the directory") from None
    return path


def link_error(path: str | os.PathLike, what: str = "write") -> StorageError:
    """The one line refusing to ``what`` the symbolic link ``path``."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return StorageError(f"cannot {what} {path}: it is a symbolic link (to {target}); files of a run are never "
                        "written through links: remove the link (or copy the file it points to in its place)")


def open_own_file(path: str | os.PathLike, flags: int, mode: int, *, action: str, doing: str, harm: str,
                  refusal: str) -> int:
    """A descriptor of the run file ``path`` opened with ``flags`` that never reaches another file:
    a symbolic link in its place is refused (``O_NOFOLLOW``; "cannot ``action`` …"), a FIFO or device
    neither blocks nor is used (``O_NONBLOCK``, then it must be a regular file), and a hard link,
    which ``harm`` describes, is refused. ``doing`` names the operation in an OS error's line;
    ``refusal`` is the line for a file that is not a regular single-link file, with ``{path}`` and
    ``{what}`` filled in."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP or os.path.islink(path):
            raise link_error(path, action) from None
        raise storage_error(error, path, doing) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "it is not a regular file" if not stat.S_ISREG(info.st_mode) else (
            f"it is a hard link to a file elsewhere ({harm})")
        raise StorageError(refusal.format(path=path, what=what))
    return fd


def refuse_link(path: str | os.PathLike, what: str = "write") -> None:
    """Raise StorageError when ``path`` itself (not a parent directory) is a symbolic link."""
    if os.path.islink(path):
        raise link_error(path, what)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


READ_LIMIT = 1 << 30
"""Largest file :func:`read_regular` reads by default (1 GiB)."""


def read_regular(path: str | os.PathLike, what: str = "file", limit: int = READ_LIMIT) -> bytes:
    """The bytes of the regular file ``path``, or one StorageError line naming it when it is a
    FIFO, a device or a directory (opened without blocking, so a FIFO never hangs the reader)
    or larger than ``limit`` bytes (a runaway file never fills the memory)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise storage_error(error, path, "read") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"cannot read {what} {path}: it is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise StorageError(f"cannot read {what} {path}: it is {_size(info.st_size)}, more than the "
                               f"{_size(limit)} such a file may be; it is not read")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise StorageError(f"cannot read {what} {path}: it grew past {_size(limit)} while being read")
        return data
    except OSError as error:
        if isinstance(error, StorageError):
            raise
        raise storage_error(error, path, "read") from None
    finally:
        os.close(fd)


def atomic_write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Let ``write`` fill a temporary file (given by name) beside ``path``, fsync it, rename it
    over ``path``; for writers that want a file name (NetCDF, ...). A ``path`` that is a symbolic
    link is refused (never written through, never silently replaced)."""
    path = Path(path)
    make_directory(path.parent)
    refuse_link(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise storage_error(error, path) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and not isinstance(error, StorageError):
            raise storage_error(error, path) from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files interrupted atomic writes left in ``folder``; returns them.
    Only for a folder this process alone writes (a run directory it holds the lock of)."""
    removed = []
    for entry in Path(folder).iterdir():
        if TEMPORARY.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink()
            removed.append(entry)
    return removed


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    return atomic_write_file(path, fill)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch  # here, so that the file helpers (and the commands' config errors) do not load torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


JSON_LIMIT = 256 << 20
"""Largest JSON file :func:`read_json` reads (256 MiB): result files are kilobytes."""


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The JSON value in ``path`` (None when there is no such file), or one StorageError line
    naming the file when it is truncated, damaged or not UTF-8."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    try:
        return json.loads(read_regular(path, what, JSON_LIMIT).decode("utf-8"))
    except UnicodeDecodeError:
        raise StorageError(f"{what} {path} is damaged: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise StorageError(f"{what} {path} is truncated or damaged: not valid JSON "
                           f"({error.msg} at line {error.lineno}, column {error.colno})") from None
    except OSError as error:
        raise storage_error(error, path, "read") from None
