"""Shared fixtures: small configs that train in seconds on two CPU cores."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bayesncl_pyro.config import load_config

from .browser import browser  # noqa: F401  (the headless-Chromium fixture)

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


def pytest_collection_modifyitems(config, items):
    """Mark ``cuda`` every test that needs a CUDA device, so that ``pytest -m cuda`` selects them
    (scripts/gpu_check.sh): tests skipped without one, the ``cuda`` cases of tests parametrised
    by device, and tests/test_cuda.py."""
    for item in items:
        skipped_without = any(mark.name == "skipif" and "CUDA" in str(mark.kwargs.get("reason", ""))
                              for mark in item.iter_markers())
        params = getattr(getattr(item, "callspec", None), "params", {})
        if skipped_without or any(isinstance(v, str) and v == "cuda" for v in params.values()) \
                or item.path.name == "test_cuda.py":
            item.add_marker(pytest.mark.cuda)


# Tiny networks gain nothing from a second thread, and on a loaded machine thread hand-offs make
# small ops many times slower; the whole suite runs on one.
torch.set_num_threads(1)

_TRAINED: dict[tuple[str, ...], Path] = {}


def tiny_run(tmp_path_factory, name: str, *overrides: str) -> Path:
    """A fresh copy, in a directory called ``name``, of a tiny run trained for 4 steps; each set of
    overrides is trained once per test session (the test modules share it)."""
    from bayesncl_pyro.training.loop import train

    if overrides not in _TRAINED:
        cfg = load_config(ROOT / "configs" / "scenes_quick.yaml",
                          [*TINY, f"train.out_dir={tmp_path_factory.mktemp('trained') / 'run'}",
                           "train.steps=4", *overrides])
        train(cfg, progress=False)
        _TRAINED[overrides] = Path(cfg.train.out_dir)
    copy = tmp_path_factory.mktemp("copy") / name
    shutil.copytree(_TRAINED[overrides], copy)
    return copy


@pytest.fixture
def tiny_config(tmp_path):
    """A factory: tiny_config(*overrides) -> Config writing into a fresh directory under tmp_path."""
    counter = iter(range(10_000))

    def make(*overrides: str):
        return load_config(ROOT / "configs" / "scenes_quick.yaml",
                           [*TINY, f"train.out_dir={tmp_path / f'run{next(counter)}'}", *overrides])

    return make
