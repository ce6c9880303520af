"""One point of a grid: the steps every grid point runs — train the run unless it is finished,
then measure its true negative ELBO on a fixed held-out batch. Its name and overrides are
:mod:`.grid_points`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.errors import StorageError
from bayesncl_pyro.data.augment import BatchAugment
from bayesncl_pyro.data.sources import normalization
from bayesncl_pyro.evaluation.trained_run import load_trained
from bayesncl_pyro.inference.true_elbo import surrogate_negative_elbo, true_negative_elbo
from bayesncl_pyro.storage import run_directory
from bayesncl_pyro.storage.atomic import atomic_write_json, read_json
from bayesncl_pyro.training.loop import train_unless_finished

TRUE_ELBO_FILE = "true_elbo.json"


def ensure_trained(cfg: Config, progress: bool = False) -> None:
    """Train the run of ``cfg`` unless its directory holds a finished one; a directory holding a
    run of another config is refused (a changed grid file must not relabel old runs)."""
    run_directory.check_same_config(Path(cfg.train.out_dir), cfg)
    train_unless_finished(cfg, progress=progress)


def held_out_views(run, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed held-out batch of a loaded run: its first ``data.batch_size`` test images, two
    augmented views drawn with ``seed`` (the global random state is left untouched), on the CPU."""
    cfg = run.cfg
    mean, std = normalization(cfg.data, run.train_set)
    augment = BatchAugment(cfg.data.augment, cfg.data.image_size, mean, std)
    images = run.test_set.images[: min(cfg.data.batch_size, len(run.test_set))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return augment(images), augment(images)


def measure_true_elbo(cfg: Config, samples: int, seed: int) -> dict[str, float]:
    """The Monte-Carlo true negative ELBO of the trained network of the run in
    ``cfg.train.out_dir`` and, beside it, the surrogate its estimator trains on, both on the
    fixed held-out batch."""
    run = load_trained(cfg.train.out_dir, device=cfg.train.device)
    x1, x2 = (x.to(run.device) for x in held_out_views(run, seed))
    result = true_negative_elbo(run.net, x1, x2, samples=samples, seed=seed)
    result["surrogate"] = surrogate_negative_elbo(run.net, x1, x2, seed=seed)
    result["seed"] = seed
    return result


def has_true_elbo(directory: str | Path, samples: int, seed: int) -> bool:
    """Whether ``true_elbo.json`` in ``directory`` was measured with these ``samples`` and ``seed``:
    a grid whose ``true_elbo`` settings changed must not show the old number as current. A file
    without them (written before they were recorded) or one that cannot be read does not count."""
    try:
        stored = read_json(Path(directory) / TRUE_ELBO_FILE, "true ELBO")
    except StorageError:
        return False
    return isinstance(stored, dict) and stored.get("samples") == samples and stored.get("seed") == seed


def ensure_true_elbo(cfg: Config, samples: int, seed: int) -> None:
    """Write ``true_elbo.json`` into the run directory unless it holds a measurement with these
    ``samples`` and ``seed``."""
    if not has_true_elbo(cfg.train.out_dir, samples, seed):
        atomic_write_json(Path(cfg.train.out_dir) / TRUE_ELBO_FILE, measure_true_elbo(cfg, samples, seed))
