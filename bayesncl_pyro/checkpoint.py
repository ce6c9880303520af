"""Checkpoints that hold everything an exact resume needs: weights, optimizer, schedule, RNG, step."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .io import atomic_torch_save

FORMAT_VERSION = 1
# Sections whose change makes a checkpoint meaningless for the network it would be loaded into.
ARCHITECTURE_KEYS = ("model", "gate")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, *, modules: dict[str, torch.nn.Module], optimizer, scheduler, scaler,
         step: int, epoch: int, batch_in_epoch: int, config: dict[str, Any]) -> Path:
    state = {
        "format_version": FORMAT_VERSION,
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "config": config,
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
    mismatches = [
        f"{section}.{key}: checkpoint {state['config'][section].get(key)!r}, config {value!r}"
        for section in ARCHITECTURE_KEYS
        for key, value in config[section].items()
        if state["config"][section].get(key) != value
    ]
    if mismatches:
        raise CheckpointError(f"checkpoint {path} was written for another configuration: " + "; ".join(mismatches))
    return state
