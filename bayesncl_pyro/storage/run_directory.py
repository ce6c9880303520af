"""The run directory: resolved config, environment, evaluation transform, metrics log and
checkpoints in one place, written by one process at a time.

A process that trains into a run directory holds an exclusive ``flock`` on ``RUN/.lock`` (which
names it: PID, host, command) from before its first write until it ends; the kernel releases
the lock when the process dies, however it dies. A second writer is refused, naming the holder.

No file of a run directory is written through a symbolic link: the lock is opened with
``O_NOFOLLOW``, the metrics log too, atomic writes refuse a link in the target's place, and
opening a run refuses one where a run file belongs (naming it), before anything is written.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import math
import os
import socket
import sys
import warnings
from pathlib import Path

import yaml

from bayesncl_pyro.config import Config, config_from_dict, flatten, read_yaml_mapping
from bayesncl_pyro.config.errors import CheckpointError, RunWarning, StorageError, shown
from bayesncl_pyro.storage.atomic import (
    atomic_write_json,
    atomic_write_text,
    link_error,
    make_directory,
    open_own_file,
    remove_stale_temporaries,
    storage_error,
)
from bayesncl_pyro.storage.environment import environment
from bayesncl_pyro.storage.metrics_log import METRICS_FILE

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
LAST_CHECKPOINT = "last.pt"
SUMMARY_FILE = "summary.json"
PREPROCESSING_FILE = "preprocessing.json"
LOCK_FILE = ".lock"
EPOCH_CHECKPOINTS = "epoch_*.pt"
UNSUPPORTED = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP}
"""``flock`` errors of a file system without locks (e.g. Lustre mounted without ``-o flock``)."""
BROWSER_DIR = "browser"
"""Where ``bayesncl-browse RUN_DIR`` writes the run's feature browser (``index.html`` and its data)."""


def epoch_checkpoint(run: Path, epoch: int) -> Path:
    return run / f"epoch_{epoch:04d}.pt"


def epoch_checkpoints(run: Path) -> list[Path]:
    """The run's ``epoch_NNNN.pt`` files, newest first (by epoch number, past 9999 too)."""
    numbered = [(int(p.stem[len("epoch_"):]), p) for p in Path(run).glob(EPOCH_CHECKPOINTS)
                if p.stem[len("epoch_"):].isdigit()]
    return [p for _, p in sorted(numbered, reverse=True)]


def run_files(run: Path) -> list[str]:
    """The names of the files a training run writes that ``run`` holds."""
    fixed = [name for name in (CONFIG_FILE, ENV_FILE, PREPROCESSING_FILE, METRICS_FILE, LAST_CHECKPOINT, SUMMARY_FILE)
             if os.path.lexists(run / name)]  # a dangling link counts: writing there would follow it
    return fixed + [p.name for p in reversed(epoch_checkpoints(run))]


class RunLock:
    """The exclusive lock of one run directory, held from :func:`lock_run` to :meth:`release`
    (or the death of the process)."""

    def __init__(self, run: Path, fd: int, held: bool = True):
        self.run, self.path, self.fd, self.held = run, run / LOCK_FILE, fd, held

    def release(self) -> None:
        if self.fd < 0:
            return
        if self.held:  # remove the file while still holding it; a process that opened it meanwhile retries
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return (f"process {info['pid']} on host {info['host']} ({shown(info['command'], 120)}, "
                f"since {info['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its name yet)"


def lock_run(run: Path) -> RunLock:
    """Create ``run`` if needed and take its lock, or raise StorageError naming the process that
    holds it."""
    make_directory(run)
    path = run / LOCK_FILE
    while True:
        # never through a link: a planted .lock -> FILE would be truncated and overwritten
        fd = open_own_file(path, os.O_RDWR | os.O_CREAT, 0o644, action="use the lock file",
                           doing="create the lock file", harm="writing the lock would overwrite that file",
                           refusal="cannot use the lock file {path}: {what}; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in UNSUPPORTED:
                warnings.warn(f"the file system of {run} does not support locks ({error.strerror}); a second "
                              "process training into this directory would not be refused", RunWarning, stacklevel=2)
                return RunLock(run, fd, held=False)
            holder = _holder(fd) if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
            os.close(fd)
            if holder is None:
                raise storage_error(error, path, "lock") from None
            raise StorageError(
                f"run directory {run} is in use: {holder} writes into it; one process at a time may "
                f"train into a run directory: wait for it to end, or stop it and continue with --resume {run}"
            ) from None
        try:  # the file locked may have been removed by its last holder in the meantime
            current = os.stat(path)
            locked = os.fstat(fd)
            if (current.st_dev, current.st_ino) == (locked.st_dev, locked.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
            "since": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError as error:
        os.close(fd)
        raise storage_error(error, path) from None
    return RunLock(run, fd)


def open_run(cfg: Config, resume: bool) -> RunLock:
    """Take the lock of ``cfg.train.out_dir`` and get it ready: a new run directory gets its
    config and environment (a directory holding files of a run is refused, never appended to);
    a resumed one must hold a run. Temporary files of interrupted writes are removed. Returns
    the lock, to be released when the run ends."""
    run = Path(cfg.train.out_dir)
    if resume and not (run / CONFIG_FILE).is_file():
        raise CheckpointError(f"--resume {run}: the directory does not hold a run (no {CONFIG_FILE})")
    lock = lock_run(run)
    try:
        links = [name for name in run_files(run) if os.path.islink(run / name)]
        if links:
            raise link_error(run / links[0], "open the run file")
        if not resume:
            found = run_files(run)
            if CONFIG_FILE in found:
                raise CheckpointError(f"train.out_dir={str(run)!r} already holds a run; pass --resume {run} "
                                      "to continue it, or choose another train.out_dir")
            if found:
                raise CheckpointError(f"train.out_dir={str(run)!r} holds files of another run "
                                      f"({', '.join(found[:4])}) but no {CONFIG_FILE}; a new run is never "
                                      "written over them: move them away or choose another train.out_dir")
        removed = remove_stale_temporaries(run)
        if removed:
            warnings.warn(f"removed {len(removed)} temporary file(s) of an interrupted write from {run}: "
                          f"{', '.join(p.name for p in removed[:3])}", RunWarning, stacklevel=2)
        if not resume:
            write_config(run, cfg)
            write_environment(run)
    except BaseException:
        lock.release()
        raise
    return lock


def write_config(run: Path, cfg: Config) -> None:
    """The resolved config of the run (rewritten on resume, where a few keys may change)."""
    atomic_write_text(run / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def write_environment(run: Path) -> None:
    atomic_write_json(run / ENV_FILE, environment())


NOT_RESULTS = frozenset({"train.out_dir", "train.keep", "train.log", "data.download", "data.cache_dir"})
"""Config keys that change nothing a run computes or reports: where it lives, how many old epoch
checkpoints it keeps, whether TensorBoard files sit beside its metrics log, whether a missing
dataset may be fetched and where a cache lives. Every
other key (``train.log_every`` too: the metrics log and what is read from it) must match for a
recorded run to stand for a planned one."""


def config_differences(run: Path, cfg: Config) -> list[str]:
    """``key: value there, value now`` for each key (outside :data:`NOT_RESULTS`) where the run
    recorded in ``run`` differs from ``cfg``; empty when ``run`` holds no run. A key the recorded
    config lacks (added to the code later) counts as its default, as on resume."""
    if not (run / CONFIG_FILE).is_file():
        return []
    old, new = flatten(read_config(run).to_dict()), flatten(cfg.to_dict())
    old = {**flatten(Config().to_dict()), **old}
    return [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
            if k not in NOT_RESULTS and old.get(k) != new.get(k)]


def check_same_config(run: Path, cfg: Config) -> None:
    """Refuse to reuse a run directory whose run was made with another config (a suite or grid
    whose file changed would otherwise report old runs under new settings)."""
    diffs = config_differences(run, cfg)
    if diffs:
        raise CheckpointError(f"{run} holds a run of another config ({'; '.join(diffs[:5])}); "
                              "delete that directory or choose another out_dir")


def read_config(run: str | Path) -> Config:
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run} does not hold a run (no {CONFIG_FILE})")
    tree = read_yaml_mapping(path, "run config", CheckpointError)
    return config_from_dict(tree)


def write_preprocessing(run: Path, image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                        store_size: int = 0) -> None:
    """Record the run's evaluation transform (timm's names: ``input_size``, ``interpolation``,
    ``mean``, ``std``): with ``store_size`` (``data.store_size``), an image not that size square
    first has its short side resized to it and the centre square kept, as the run's image store
    holds its images; then images not ``image_size`` square are resized to it (bilinear,
    antialiased), scaled to [0, 1] and normalised per channel. The statistics may have been
    measured on the training set; recorded here, a trained network loads without its dataset."""
    atomic_write_json(Path(run) / PREPROCESSING_FILE, {
        "input_size": [3, image_size, image_size], "interpolation": "bilinear", "antialias": True,
        "mean": [float(m) for m in mean], "std": [float(s) for s in std], "store_size": int(store_size),
    })


def read_preprocessing(run: str | Path) -> tuple[int, tuple[float, ...], tuple[float, ...], int | None] | None:
    """``(image_size, mean, std, store_size)`` as :func:`write_preprocessing` recorded them
    (``store_size`` None in a record written before it was recorded: the run's config says), or
    None for a run trained before they were recorded."""
    path = Path(run) / PREPROCESSING_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        _, height, width = record["input_size"]
        mean, std = tuple(float(m) for m in record["mean"]), tuple(float(s) for s in record["std"])
        store_size = record.get("store_size")
        valid = (height == width and int(height) >= 1 and len(mean) == len(std) == 3
                 and all(math.isfinite(m) for m in mean) and all(math.isfinite(s) and s > 0 for s in std)
                 and (store_size is None or (type(store_size) is int and (store_size == 0 or store_size >= height))))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a preprocessing record ({type(exc).__name__}: {exc}); "
                              "delete it and run bayesncl-eval on the run to write it again") from None
    if not valid:
        raise CheckpointError(f"{path} records an impossible transform ({record}); delete it and run "
                              "bayesncl-eval on the run to write it again")
    return int(height), mean, std, store_size
