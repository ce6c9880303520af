"""A trained run in Python: ``BayesNCL.from_run`` gives the trained network in eval mode without
reading the dataset, ``preprocess`` applies exactly the evaluation transform training used to
every kind of input a user holds, and bad input is refused in one line."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from bayesncl_pyro import BayesNCL
from bayesncl_pyro.config.errors import CheckpointError, DataError
from bayesncl_pyro.data import sources
from bayesncl_pyro.data.vision import NORMALIZATION
from bayesncl_pyro.evaluation.trained_run import load_trained
from bayesncl_pyro.inference.trained_network import run_eval_transform
from bayesncl_pyro.storage import run_directory

from .conftest import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory, "gated")


@pytest.fixture(scope="module")
def reference(run):
    """The run loaded the way evaluation loads it: dataset rebuilt, statistics recomputed from it."""
    return load_trained(run, device="cpu")


@pytest.fixture
def no_dataset(monkeypatch):
    """Any attempt to build or read a dataset fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was read")

    monkeypatch.setattr(sources, "_scenes", refuse)
    monkeypatch.setattr(sources, "load_split", refuse)


def test_from_run_loads_the_trained_network_without_its_dataset(run, reference, no_dataset):
    net = BayesNCL.from_run(run)
    assert isinstance(net, BayesNCL) and not net.training
    assert not any(module.training for module in net.modules())
    assert net.cfg == run_directory.read_config(run)
    expected = reference.net.state_dict()
    loaded = net.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    untrained = BayesNCL(net.cfg).state_dict()
    assert any(not torch.equal(untrained[k], expected[k]) for k in expected)


def test_preprocess_is_the_evaluation_transform_of_training(run, reference, no_dataset):
    net = BayesNCL.from_run(run)
    images = reference.test_set.images[:6]
    x = net.preprocess(images)
    assert x.dtype == torch.float32 and x.shape == (6, 3, 32, 32)
    assert torch.equal(x, reference.eval_transform(images))
    assert torch.allclose(net.preprocess(images.float() / 255), x, atol=1e-6)
    features = net.features(x)
    assert set(features) == {"h", "z", "gate", "gate_probs", "gated"}
    expected = reference.net.features(reference.eval_transform(images))
    assert all(torch.equal(features[k], expected[k]) for k in expected)
    assert features["gate_probs"].shape == features["gate"].shape == (6, net.cfg.model.proj_dim)
    assert set(features["gate"].unique().tolist()) <= {0.0, 1.0}


def test_preprocess_takes_pil_images_single_and_batched(run, no_dataset):
    net = BayesNCL.from_run(run)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, 40, 48), dtype=torch.uint8, generator=generator)
    pil = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]
    single = net.preprocess(pil[0])
    assert single.shape == (1, 3, 32, 32)
    assert torch.equal(single, net.preprocess(pixels[0]))
    assert torch.equal(net.preprocess(pil), net.preprocess(pixels))
    grey = Image.fromarray(pixels[0, 0].numpy())
    assert torch.equal(net.preprocess(grey), net.preprocess(pixels[0, :1]))
    mixed = net.preprocess([pil[0], Image.new("RGB", (20, 30))])
    assert mixed.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("images, message", [
    (torch.rand(2, 3, 32, 32) * 255, "[0, 1]"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "uint8"),
    (torch.zeros(2, 4, 32, 32), "shape"),
    ([], "empty list"),
    ("cat.png", "str"),
])
def test_preprocess_refuses_what_it_cannot_read(run, images, message):
    net = BayesNCL.from_run(run)
    with pytest.raises(DataError, match=message.replace("[", r"\[")):
        net.preprocess(images)


def test_raw_images_straight_into_the_network_are_refused(run):
    net = BayesNCL.from_run(run)
    with pytest.raises(DataError, match="net.preprocess"):
        net.features(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError, match="from_run"):
        BayesNCL(net.cfg).preprocess(torch.zeros(1, 3, 32, 32))


def test_a_named_checkpoint_or_path_and_a_missing_one(run, tmp_path):
    other = tmp_path / "elsewhere.pt"
    shutil.copy(run / "last.pt", other)
    by_path = BayesNCL.from_run(run, checkpoint=other).state_dict()
    by_name = BayesNCL.from_run(run, checkpoint="last.pt").state_dict()
    assert all(torch.equal(by_path[k], by_name[k]) for k in by_name)
    with pytest.raises(CheckpointError, match=r"epoch_0009\.pt.*allowed: last\.pt"):
        BayesNCL.from_run(run, checkpoint="epoch_0009.pt")
    with pytest.raises(CheckpointError, match="does not hold a run"):
        BayesNCL.from_run(tmp_path)


def test_an_older_run_without_the_record_is_named_then_recorded(tmp_path_factory):
    run = tiny_run(tmp_path_factory, "older")
    recorded = run_directory.read_preprocessing(run)
    (run / run_directory.PREPROCESSING_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"data\.name=scenes.*bayesncl-eval"):
        BayesNCL.from_run(run)
    load_trained(run, device="cpu")  # reads the dataset, as bayesncl-eval does, and records the transform
    assert run_directory.read_preprocessing(run) == recorded
    assert BayesNCL.from_run(run).eval_transform is not None


def test_older_runs_of_a_standard_dataset_use_its_constants(run):
    cfg = run_directory.read_config(run)
    cfg.data.name = "cifar10"
    transform = run_eval_transform(run.parent, cfg)  # a directory without a record
    mean, std = NORMALIZATION["cifar10"]
    assert transform.size == cfg.data.image_size
    assert torch.equal(transform.mean, torch.tensor(mean)) and torch.equal(transform.std, torch.tensor(std))
