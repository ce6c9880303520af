"""What :meth:`BayesNCL.from_run <bayesncl_pyro.inference.bayesncl.BayesNCL.from_run>` reads from a
run directory: the run's config, one checkpoint, and the evaluation transform the run was trained
with. Never the dataset: the transform's statistics were recorded at training time
(``preprocessing.json``); for a run older than that record, the standard constants of its dataset
stand in, and a dataset without such constants is refused with the command that records them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.errors import CheckpointError, shown
from bayesncl_pyro.config.validation import MAX_IMAGE_SIZE
from bayesncl_pyro.data.augment import EvalTransform
from bayesncl_pyro.data.vision import NORMALIZATION
from bayesncl_pyro.storage import checkpoints, run_directory


@dataclass
class SavedNetwork:
    """A run's config, the checkpoint ``state`` read from ``checkpoint``, and its evaluation transform."""

    cfg: Config
    checkpoint: Path
    state: dict[str, Any]
    eval_transform: EvalTransform


def checkpoint_path(run: Path, checkpoint: str | Path | None) -> Path:
    """``last.pt`` of ``run`` by default; a name (``epoch_0002.pt``) inside ``run``; or a path."""
    if checkpoint is None:
        return run / run_directory.LAST_CHECKPOINT
    for path in (run / checkpoint, Path(checkpoint)):
        if path.is_file():
            return path
    there = ", ".join(sorted(p.name for p in run.glob("*.pt"))) or "none"
    raise CheckpointError(f"checkpoint={str(checkpoint)!r} is not a file in {run} nor a path; allowed: {there}")


def run_eval_transform(run: Path, cfg: Config) -> EvalTransform:
    """The evaluation transform recorded in ``run``, or the dataset's standard one for older runs
    (with the store's crop of ``data.store_size`` where the record does not say)."""
    recorded = run_directory.read_preprocessing(run)
    if recorded is not None:
        size, mean, std, store_size = recorded
        if not (all(math.isfinite(v) for v in (*mean, *std)) and all(v > 0 for v in std)
                and 1 <= size <= MAX_IMAGE_SIZE):
            raise CheckpointError(
                f"{run / run_directory.PREPROCESSING_FILE} records an impossible transform (size {size}, mean "
                f"{shown(mean)}, std {shown(std)}); allowed: a size from 1 to {MAX_IMAGE_SIZE}, finite means and "
                "finite positive standard deviations: delete it and run bayesncl-eval on the run to write it again")
        return EvalTransform(size, mean, std, cfg.data.store_size if store_size is None else store_size)
    if cfg.data.name in NORMALIZATION:
        mean, std = NORMALIZATION[cfg.data.name]
        return EvalTransform(cfg.data.image_size, mean, std, cfg.data.store_size)
    raise CheckpointError(
        f"{run} has no {run_directory.PREPROCESSING_FILE} (it was trained before the evaluation transform was "
        f"recorded) and data.name={cfg.data.name} has no standard normalisation; `bayesncl-eval {run}` reads "
        "its dataset once and records it")


def read_saved_network(run: str | Path, checkpoint: str | Path | None = None) -> SavedNetwork:
    """Config, checkpoint and evaluation transform of the run in ``run``. A damaged ``last.pt``
    is refused naming the newest intact checkpoint (never silently taken instead)."""
    run = Path(run).expanduser()
    cfg = run_directory.read_config(run)
    if checkpoint is None:
        path, state = checkpoints.read_for_evaluation(run)
        checkpoints.check_config(state, cfg.to_dict(), path)
    else:
        path = checkpoint_path(run, checkpoint)
        state = checkpoints.load(path, cfg.to_dict())
    return SavedNetwork(cfg, path, state, run_eval_transform(run, cfg))
