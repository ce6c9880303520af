"""The run's metrics log ``metrics.jsonl``: append-only JSON lines, one per logged step, and
the logs that mirror it (``train.log``: TensorBoard event files, :mod:`.tensorboard_log`).

The log is opened for appending with ``O_NOFOLLOW`` (a link in its place is refused, never
followed) and read only when it is a regular file of at most :data:`LOG_LIMIT` bytes whose lines
are at most :data:`LINE_LIMIT` characters: a log that is a FIFO or ``/dev/zero`` is one error
line, not a hang or a full memory."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from bayesncl_pyro.config.errors import CheckpointError, RunWarning, shown
from bayesncl_pyro.storage.atomic import atomic_write_text, open_own_file, read_regular, storage_error
from bayesncl_pyro.storage.tensorboard_log import TensorBoardLog

METRICS_FILE = "metrics.jsonl"
LOG_LIMIT = 1 << 30
"""Largest metrics log read (1 GiB: millions of logged steps)."""
LINE_LIMIT = 1 << 20
"""Longest line of a metrics log (1 MiB; a logged step is a few hundred bytes)."""
MIRRORS: dict[str, tuple[type, ...]] = {"jsonl": (), "tensorboard": (TensorBoardLog,)}
"""``train.log`` -> the logs that get every record besides ``metrics.jsonl``; each is built as
``Mirror(run, resume_step)``, has ``write(record)``, ``close()`` and a static ``check()`` that
raises before a run starts when it cannot work."""


def _open_for_append(path: Path):
    fd = open_own_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666, action="write", doing="write",
                       harm="appending would write into that file",
                       refusal="cannot write {path}: {what}; move it out of the run directory")
    return os.fdopen(fd, "a", encoding="utf-8")


def check_log(log: str) -> None:
    """Raise what a mirror of ``train.log`` would raise on opening (a missing package)."""
    for mirror in MIRRORS[log]:
        mirror.check()


def open_metrics_log(run: Path, log: str = "jsonl", resume_step: int | None = None) -> MetricsLog:
    """The metrics log of the run directory ``run``, with the mirrors ``train.log`` names."""
    metrics = MetricsLog(run / METRICS_FILE, resume_step)
    try:
        metrics.mirrors = [mirror(run, resume_step) for mirror in MIRRORS[log]]
    except BaseException:
        metrics.close()
        raise
    return metrics


class MetricsLog:
    """Append-only JSON lines, one per logged step; on resume, lines past the checkpoint are cut
    so the log has no gap or duplicate step. Each record goes to its ``mirrors`` too
    (:func:`open_metrics_log` adds those ``train.log`` names)."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        self.mirrors: list[Any] = []
        if resume_step is not None and os.path.lexists(path):
            records, _ = _parse(path)
            kept = [record for record in records if record.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        self.handle = _open_for_append(path)

    def write(self, record: dict[str, Any]) -> None:
        """One whole line, flushed and fsynced: a kill leaves at most a torn last line, which
        readers and the next resume drop."""
        try:
            self.handle.write(json.dumps(record, sort_keys=True) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as error:
            raise storage_error(error, self.path) from None
        for mirror in self.mirrors:
            mirror.write(record)

    def close(self) -> None:
        for mirror in self.mirrors:
            mirror.close()
        try:
            self.handle.close()
        except OSError:  # the failed write was reported already
            pass


def _parse(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of a metrics log and whether its last line was torn (a run killed mid-write;
    that line is dropped). Any other damage is one CheckpointError naming the file and line."""
    try:
        text = read_regular(path, "the metrics log", LOG_LIMIT).decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path} is damaged: not UTF-8 text (offset {error.start})") from None
    records = []
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if len(line) > LINE_LIMIT:
            raise CheckpointError(f"{path} is damaged: line {i + 1} is {len(line):,} characters long, more than "
                                  f"the {LINE_LIMIT:,} a logged step may be")
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                return records, True
            raise CheckpointError(f"{path} is damaged: line {i + 1} is not JSON: {shown(line)}") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"{path} is damaged: line {i + 1} is not a JSON object: {shown(line)}")
        records.append(record)
    return records, False


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The records of ``run``'s metrics log ([] when it has none); a torn last line is left out
    with a warning naming the file."""
    path = Path(run) / METRICS_FILE
    if not os.path.lexists(path):
        return []
    records, torn = _parse(path)
    if torn:
        warnings.warn(f"{path}: its last line is cut off (the run stopped while writing it, or the file "
                      "is an incomplete copy); it is left out", RunWarning, stacklevel=2)
    return records
