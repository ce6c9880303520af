"""The run's metrics log ``metrics.jsonl``: append-only JSON lines, one per logged step."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from bayesncl_pyro.config.errors import CheckpointError, RunWarning, shown
from bayesncl_pyro.storage.atomic import atomic_write_text, storage_error

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Append-only JSON lines, one per logged step; on resume, lines past the checkpoint are cut
    so the log has no gap or duplicate step."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            records, _ = _parse(path)
            kept = [record for record in records if record.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        try:
            self.handle = open(path, "a", encoding="utf-8")
        except OSError as error:
            raise storage_error(error, path) from None

    def write(self, record: dict[str, Any]) -> None:
        """One whole line, flushed and fsynced: a kill leaves at most a torn last line, which
        readers and the next resume drop."""
        try:
            self.handle.write(json.dumps(record, sort_keys=True) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as error:
            raise storage_error(error, self.path) from None

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError:  # the failed write was reported already
            pass


def _parse(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of a metrics log and whether its last line was torn (a run killed mid-write;
    that line is dropped). Any other damage is one CheckpointError naming the file and line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path} is damaged: not UTF-8 text (offset {error.start})") from None
    except OSError as error:
        raise storage_error(error, path, "read") from None
    records = []
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
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
    if not path.exists():
        return []
    records, torn = _parse(path)
    if torn:
        warnings.warn(f"{path}: its last line is cut off (the run stopped while writing it, or the file "
                      "is an incomplete copy); it is left out", RunWarning, stacklevel=2)
    return records
