"""Checkpoints that hold everything an exact resume needs: weights, optimizer, schedule, RNG, step."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesncl_pyro.config import Config, flatten
from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.storage.atomic import atomic_torch_save
from bayesncl_pyro.storage.environment import git_commit

FORMAT_VERSION = 1
# Keys a resumed run may change: where and how long it runs, not what it computes. Any other
# difference between the checkpoint's config and the resuming one is refused.
MAY_CHANGE_ON_RESUME = frozenset({
    "train.steps", "train.epochs", "train.device", "train.log_every", "train.out_dir", "train.keep",
    "train.checkpoint_every", "train.max_bad_steps", "train.distributed", "train.compile", "train.eval_every",
    "data.root", "data.eval_batch_size", "data.download", "data.cache_dir", "data.skip_corrupt",
})


def config_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved value, current value`` for every key that differs and may not change on resume.

    A key the saved config lacks (added to the code after the checkpoint was written) counts as
    its default, the behaviour the code that wrote the checkpoint had."""
    old, new = flatten(saved), flatten(current)
    old = {**{k: v for k, v in flatten(Config().to_dict()).items() if k not in old}, **old}
    return [f"{key}: checkpoint {old.get(key)!r}, config {new.get(key)!r}"
            for key in sorted(set(old) | set(new))
            if key not in MAY_CHANGE_ON_RESUME and old.get(key) != new.get(key)]


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The global RNG states (torch, numpy, python, this process's CUDA device) and those of the
    run's own ``generators`` (e.g. the augmentation generator), by name."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    state["generators"] = {name: g.get_state() for name, g in (generators or {}).items()}
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    saved = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if name in saved:
            generator.set_state(saved[name])


def save(path: Path, *, modules: dict[str, torch.nn.Module], optimizer, scheduler, scaler,
         step: int, epoch: int, config: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> Path:
    state = {
        "format_version": FORMAT_VERSION,
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(generators),
        "step": step,
        "epoch": epoch,
        "config": config,
        "code": {"git_commit": git_commit()},
    }
    return atomic_torch_save(path, state)


def load(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to a run of this config."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        found = state.get("format_version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} has format version {found!r}; this code reads version {FORMAT_VERSION}"
        )
    mismatches = config_mismatches(state.get("config") or {}, config)
    if mismatches:
        raise CheckpointError(f"checkpoint {path} was written for another configuration: " + "; ".join(mismatches))
    return state


def restore_modules(state: dict[str, Any], modules: dict[str, torch.nn.Module], path: Path) -> None:
    """Load each module's weights, turning a checkpoint that does not fit this code (renamed or
    reshaped parameters) into a CheckpointError that names what is missing or extra."""
    for name, module in modules.items():
        try:
            module.load_state_dict(state["modules"][name])
        except KeyError:
            raise CheckpointError(f"checkpoint {path} holds no weights for {name!r}; it has: "
                                  f"{', '.join(state['modules'])}") from None
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise CheckpointError(f"checkpoint {path} does not fit this code's {name!r} ({detail})") from None
