"""Shared fixtures: small configs that train in seconds on two CPU cores."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bayesncl_pyro.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY = [
    "data.batch_size=32",
    "data.eval_batch_size=128",
    "data.scenes.num_train=256",
    "data.scenes.num_test=128",
    "model.backbone=convnet",
    "model.convnet_width=8",
    "model.proj_hidden=32",
    "model.proj_dim=16",
    "gate.hidden=16",
    "train.epochs=2",
    "train.log_every=1",
    "train.device=cpu",
    "optim.warmup_epochs=1",
]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny networks gain nothing from more, and a loaded machine loses a lot
    yield


@pytest.fixture
def tiny_config(tmp_path):
    """A factory: tiny_config(*overrides) -> Config writing into a fresh directory under tmp_path."""
    counter = iter(range(10_000))

    def make(*overrides: str):
        return load_config(ROOT / "configs" / "scenes_quick.yaml",
                           [*TINY, f"train.out_dir={tmp_path / f'run{next(counter)}'}", *overrides])

    return make
