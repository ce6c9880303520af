"""A finished (or checkpointed) run, loaded back for evaluation and inspection."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.device import resolve_device
from bayesncl_pyro.config.errors import CheckpointError
from bayesncl_pyro.data.augment import EvalTransform
from bayesncl_pyro.data.dataset import ImageDataset
from bayesncl_pyro.data.sources import load_split, normalization
from bayesncl_pyro.inference.bayesncl import BayesNCL
from bayesncl_pyro.networks.classifier import online_classifier
from bayesncl_pyro.storage import checkpoints, run_directory


@dataclass
class TrainedRun:
    path: Path
    cfg: Config
    device: torch.device
    net: BayesNCL
    classifier: nn.Linear
    eval_transform: EvalTransform
    train_set: ImageDataset
    test_set: ImageDataset
    step: int


@dataclass(frozen=True)
class RunCheckpoint:
    """A checkpoint of a run as read from disk and checked against the run's ``config.yaml``:
    what ``load_trained(checkpoint=...)`` restores without reading the file again."""

    file: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def read_checkpoint(path: str | Path, checkpoint_name: str = run_directory.LAST_CHECKPOINT,
                    cfg: Config | None = None) -> RunCheckpoint:
    """Read checkpoint ``checkpoint_name`` of the run in ``path`` and refuse it (CheckpointError)
    when it is damaged (naming the newest intact one) or written for another configuration than
    the run's ``config.yaml`` (``cfg``, when the caller has read it). Builds no network and reads
    no data, so a stored measurement can be checked against it cheaply."""
    path = Path(path).expanduser()
    cfg = cfg if cfg is not None else run_directory.read_config(path)
    file, state = checkpoints.read_for_evaluation(path, checkpoint_name)
    checkpoints.check_config(state, cfg.to_dict(), file)
    return RunCheckpoint(file, state)


def load_trained(path: str | Path, device: str | None = None, checkpoint_name: str = run_directory.LAST_CHECKPOINT,
                 untrained: bool = False, like: TrainedRun | None = None,
                 checkpoint: RunCheckpoint | None = None) -> TrainedRun:
    """Rebuild the network of the run in ``path`` and load its checkpoint, in eval mode. A
    damaged checkpoint (the error names the newest intact one) or one holding a non-finite
    weight or buffer is refused with a CheckpointError.

    ``untrained=True`` skips the checkpoint: the same network at its seeded initialisation
    (what the metrics "at initialisation" are measured on; with ``model.weights``, the loaded
    backbone). A run trained before its evaluation transform was recorded gets the record here,
    from the dataset this reads anyway, so ``BayesNCL.from_run`` can load it without data.

    ``like``: this run, already loaded (another checkpoint of it, or its initialisation); its
    splits and evaluation transform are taken over instead of read again, so that measuring many
    checkpoints of one run reads its data once.

    ``checkpoint``: checkpoint ``checkpoint_name`` as :func:`read_checkpoint` returned it (to
    decide whether to measure it), restored instead of read again.
    """
    path = Path(path).expanduser()
    if checkpoint is not None and untrained:
        raise ValueError("checkpoint= and untrained=True exclude each other: the initialisation restores no checkpoint")
    if checkpoint is not None and checkpoint.file.resolve() != (path / checkpoint_name).resolve():
        raise ValueError(f"checkpoint= must be {path / checkpoint_name} as read; got {checkpoint.file}")
    cfg = run_directory.read_config(path)
    dev = resolve_device(device or cfg.train.device)
    if like is not None:
        if like.path.resolve() != path.resolve() or like.cfg.to_dict() != cfg.to_dict():
            raise ValueError(f"like= must be a loaded copy of the run in {path}; got the run in {like.path}")
        train_set, test_set, eval_transform = like.train_set, like.test_set, like.eval_transform
    else:
        train_set = load_split(cfg.data, "train")
        test_set = load_split(cfg.data, "test")
        mean, std = normalization(cfg.data, train_set)
        if run_directory.read_preprocessing(path) is None:
            with contextlib.suppress(OSError):  # a read-only run directory stays as it is
                run_directory.write_preprocessing(path, cfg.data.image_size, mean, std, cfg.data.store_size)
        eval_transform = EvalTransform(cfg.data.image_size, mean, std).to(dev)
    torch.manual_seed(cfg.train.seed)
    net = BayesNCL(cfg, load_weights=untrained)
    classifier = online_classifier(net.feature_dim, train_set.num_classes, cfg.train.seed)
    step = 0
    if not untrained:
        if checkpoint is None:
            checkpoint = read_checkpoint(path, checkpoint_name, cfg)
        file, state = checkpoint.file, checkpoint.state
        modules = {"net": net, "classifier": classifier}
        checkpoints.restore_modules(state, modules, file)
        bad = checkpoints.modules_non_finite(modules)
        if bad is not None:
            raise CheckpointError(f"checkpoint {file} holds NaN or infinite values ({bad}); a network with "
                                  "non-finite weights or buffers is not evaluated")
        step = int(state["step"])
    net.to(dev).eval()
    classifier.to(dev).eval()
    return TrainedRun(path, cfg, dev, net, classifier, eval_transform, train_set, test_set, step)
