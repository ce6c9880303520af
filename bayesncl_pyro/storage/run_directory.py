"""The run directory: resolved config, environment, metrics log and checkpoints in one place."""
from __future__ import annotations

from pathlib import Path

import yaml

from bayesncl_pyro.config import Config, config_from_dict, flatten, read_yaml_mapping
from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text
from bayesncl_pyro.storage.environment import environment

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
LAST_CHECKPOINT = "last.pt"
BROWSER_DIR = "browser"
"""Where ``bayesncl-browse RUN_DIR`` writes the run's feature browser (``index.html`` and its data)."""


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


