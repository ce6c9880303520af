"""The run's metrics log ``metrics.jsonl``: append-only JSON lines, one per logged step."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.storage.atomic import atomic_write_text

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Append-only JSON lines, one per logged step; on resume, lines past the checkpoint are cut
    so the log has no gap or duplicate step."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            kept = [record for record in _parse_lines(path.read_text()) if record.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        self.handle = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """One whole line, flushed and fsynced: a kill leaves at most a torn last line, which
        readers and the next resume drop."""
        self.handle.write(json.dumps(record, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _parse_lines(text: str) -> list[dict[str, Any]]:
    """The records of a metrics log; a torn last line (a run killed mid-write) is dropped."""
    records = []
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise CheckpointError(f"{METRICS_FILE} line {i + 1} is not JSON: {line[:80]!r}") from None
    return records


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run) / METRICS_FILE
    if not path.exists():
        return []
    return _parse_lines(path.read_text())
