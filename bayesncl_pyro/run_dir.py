"""The run directory: resolved config, environment, metrics log and checkpoints in one place."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .config import Config, config_from_dict, read_yaml_mapping
from .errors import CheckpointError
from .io import atomic_write_json, atomic_write_text

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
ENV_FILE = "env.json"
LAST_CHECKPOINT = "last.pt"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    versions = {}
    for name in ("torch", "torchvision", "pyro-ppl", "numpy", "arviz", "bayesncl-pyro"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "git_commit": git_commit(), "argv": sys.argv}


def prepare(cfg: Config, resume: bool) -> Path:
    """Create a new run directory, or check that ``resume`` points at one of the same config."""
    run = Path(cfg.train.out_dir)
    has_run = (run / CONFIG_FILE).exists()
    if resume:
        if not has_run:
            raise CheckpointError(f"--resume {run}: the directory does not hold a run (no {CONFIG_FILE})")
        return run
    if has_run:
        raise CheckpointError(
            f"train.out_dir={str(run)!r} already holds a run; pass --resume {run} to continue it, or choose another train.out_dir"
        )
    run.mkdir(parents=True, exist_ok=True)
    write_config(run, cfg)
    atomic_write_json(run / ENV_FILE, environment())
    return run


def write_config(run: Path, cfg: Config) -> None:
    """The resolved config of the run (rewritten on resume, where a few keys may change)."""
    atomic_write_text(run / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def check_same_config(run: Path, cfg: Config) -> None:
    """Refuse to reuse a run directory whose run was made with another config (a suite or grid
    whose file changed would otherwise report old runs under new settings)."""
    if not (run / CONFIG_FILE).is_file():
        return
    from .checkpoint import flatten

    old, new = flatten(read_config(run).to_dict()), flatten(cfg.to_dict())
    diffs = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
             if k != "train.out_dir" and old.get(k) != new.get(k)]
    if diffs:
        raise CheckpointError(f"{run} holds a run of another config ({'; '.join(diffs[:5])}); "
                              "delete that directory or choose another out_dir")


def read_config(run: str | Path) -> Config:
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run} does not hold a run (no {CONFIG_FILE})")
    tree = read_yaml_mapping(path, "run config", CheckpointError)
    return config_from_dict(tree)


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
