"""A finished (or checkpointed) run, loaded back for evaluation and inspection."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, run_dir
from .config import Config
from .data.augment import EvalTransform
from .data.dataset import ImageDataset
from .data.sources import load_split, normalization
from .device import resolve_device
from .network import BayesNCL


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


def load_trained(path: str | Path, device: str | None = None, checkpoint_name: str = run_dir.LAST_CHECKPOINT,
                 untrained: bool = False) -> TrainedRun:
    """Rebuild the network of the run in ``path`` and load its checkpoint, in eval mode.

    ``untrained=True`` skips the checkpoint: the same network at its seeded initialisation
    (what the metrics "at initialisation" are measured on).
    """
    path = Path(path)
    cfg = run_dir.read_config(path)
    dev = resolve_device(device or cfg.train.device)
    train_set = load_split(cfg.data, "train")
    test_set = load_split(cfg.data, "test")
    mean, std = normalization(cfg.data, train_set)
    torch.manual_seed(cfg.train.seed)
    net = BayesNCL(cfg)
    classifier = nn.Linear(net.feature_dim, train_set.num_classes)
    step = 0
    if not untrained:
        state = checkpoint.load(path / checkpoint_name, cfg.to_dict())
        checkpoint.restore_modules(state, {"net": net, "classifier": classifier}, path / checkpoint_name)
        step = int(state["step"])
    net.to(dev).eval()
    classifier.to(dev).eval()
    return TrainedRun(path, cfg, dev, net, classifier, EvalTransform(cfg.data.image_size, mean, std).to(dev),
                      train_set, test_set, step)
