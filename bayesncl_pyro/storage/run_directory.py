"""The run directory: resolved config, environment, evaluation transform, metrics log and
checkpoints in one place."""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from bayesncl_pyro.config import Config, config_from_dict, flatten, read_yaml_mapping
from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text
from bayesncl_pyro.storage.environment import environment

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
LAST_CHECKPOINT = "last.pt"
PREPROCESSING_FILE = "preprocessing.json"


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




def write_preprocessing(run: Path, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Record the run's evaluation transform (timm's names: ``input_size``, ``interpolation``,
    ``mean``, ``std``): images not ``image_size`` square are resized to it (bilinear,
    antialiased), scaled to [0, 1] and normalised per channel. The statistics may have been
    measured on the training set; recorded here, a trained network loads without its dataset."""
    atomic_write_json(Path(run) / PREPROCESSING_FILE, {
        "input_size": [3, image_size, image_size], "interpolation": "bilinear", "antialias": True,
        "mean": [float(m) for m in mean], "std": [float(s) for s in std],
    })


def read_preprocessing(run: str | Path) -> tuple[int, tuple[float, ...], tuple[float, ...]] | None:
    """``(image_size, mean, std)`` as :func:`write_preprocessing` recorded them, or None for a
    run trained before they were recorded."""
    path = Path(run) / PREPROCESSING_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        _, height, width = record["input_size"]
        mean, std = tuple(float(m) for m in record["mean"]), tuple(float(s) for s in record["std"])
        valid = (height == width and int(height) >= 1 and len(mean) == len(std) == 3
                 and all(math.isfinite(m) for m in mean) and all(s > 0 for s in std))
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a preprocessing record ({type(exc).__name__}: {exc}); "
                              "delete it and run bayesncl-eval on the run to write it again") from None
    if not valid:
        raise CheckpointError(f"{path} records an impossible transform ({record}); delete it and run "
                              "bayesncl-eval on the run to write it again")
    return int(height), mean, std
