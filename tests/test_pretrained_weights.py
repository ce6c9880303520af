"""``model.weights`` and ``model.freeze_backbone``: a local state dict (made here, nothing downloaded)
loads into the backbone whatever wrapper or prefixes it carries, and a frozen backbone leaves
training bit-identical — parameters and BatchNorm buffers — while projector and gates learn."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from bayesncl_pyro import BayesNCL
from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.evaluation.trained_run import load_trained
from bayesncl_pyro.networks.backbones import ConvNet
from bayesncl_pyro.storage import checkpoints
from bayesncl_pyro.training.loop import train
from bayesncl_pyro.training.session import build



@pytest.fixture
def resnet_file(tmp_path):
    """A torchvision ResNet-18 checkpoint as torchvision ships them: the whole model's state dict,
    classifier included, with BatchNorm statistics that differ from a fresh model's."""
    torch.manual_seed(123)
    model = torchvision.models.resnet18()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(7)
    path = tmp_path / "resnet18-local.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def resnet_config(path, *overrides):
    return load_config(None, ["data.name=cifar10", "model.backbone=torchvision:resnet18", f"model.weights={path}",
                              *overrides])


def test_a_torchvision_checkpoint_loads_and_the_classifier_is_reported(resnet_file):
    path, saved = resnet_file
    with pytest.warns(UserWarning, match=r"loaded 120 of the backbone's 120 tensors; missing \(left as initialised\): "
                                         r"none; unexpected \(ignored\): fc\.weight, fc\.bias"):
        net = BayesNCL(resnet_config(path))
    loaded = net.backbone.net.state_dict()
    assert loaded.keys() == saved.keys() - {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)


@pytest.mark.parametrize("wrap", [
    lambda s: {"state_dict": {f"module.backbone.{k}": v for k, v in s.items()}, "epoch": 3},
    lambda s: {"model": {f"backbone.net.{k}": v for k, v in s.items()}},
    lambda s: {f"_orig_mod.{k}": v for k, v in s.items()},
])
def test_wrappers_and_prefixes_of_training_code_are_seen_through(resnet_file, tmp_path, wrap):
    path, saved = resnet_file
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save(wrap(saved), wrapped)
    with pytest.warns(UserWarning, match="unexpected"):
        net = BayesNCL(resnet_config(wrapped))
    loaded = net.backbone.net.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)


def test_a_missing_tensor_is_reported_and_left_initialised(tmp_path):
    torch.manual_seed(0)
    source = ConvNet(width=8).state_dict()
    del source["net.0.1.running_mean"]
    path = tmp_path / "partial.pt"
    torch.save(source, path)
    torch.manual_seed(5)
    fresh = ConvNet(width=8).state_dict()
    torch.manual_seed(5)
    with pytest.warns(UserWarning, match=r"missing \(left as initialised\): net\.0\.1\.running_mean; unexpected "
                                         r"\(ignored\): none"):
        net = BayesNCL(load_config(None, ["model.convnet_width=8", f"model.weights={path}"]))
    loaded = net.backbone.state_dict()
    assert torch.equal(loaded["net.0.1.running_mean"], fresh["net.0.1.running_mean"])
    assert torch.equal(loaded["net.0.0.weight"], source["net.0.0.weight"])


def test_bad_weight_files_are_refused_in_one_line(resnet_file, tmp_path):
    path, saved = resnet_file
    cases = {
        tmp_path / "absent.pt": "does not exist",
        tmp_path / "text.pt": "cannot be read by torch.load",
        tmp_path / "module.pt": "cannot be read by torch.load",
        tmp_path / "strings.pt": "holds no tensors",
        tmp_path / "foreign.pt": "none of its 1 tensors fits the backbone",
    }
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module: weights_only refuses it
    torch.save({"note": "hello"}, tmp_path / "strings.pt")
    torch.save({"encoder_q.stem.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    for file, message in cases.items():
        with pytest.raises(ConfigError, match=message) as error:
            BayesNCL(resnet_config(file))
        assert "\n" not in str(error.value) and "model.weights=" in str(error.value)
    with pytest.raises(ConfigError, match=r"conv1\.weight has shape \[64, 3, 7, 7\] but the backbone's net\.conv1\.weight"):
        BayesNCL(resnet_config(path, "model.small_stem=true"))


def frozen_config(tiny_config, weights, *overrides):
    return tiny_config(f"model.weights={weights}", "model.freeze_backbone=true", "train.steps=6",
                       "optim.warmup_epochs=0", *overrides)


@pytest.fixture
def convnet_file(tmp_path):
    """A trained-looking ConvNet of the tiny width: random weights, BatchNorm statistics far from a fresh one's."""
    torch.manual_seed(42)
    net = ConvNet(width=8)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "convnet.pt"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_a_frozen_backbone_stays_bit_identical_while_projector_and_gates_learn(tiny_config, convnet_file):
    path, saved = convnet_file
    cfg = frozen_config(tiny_config, path)
    session = build(cfg)
    in_optimizer = {id(p) for group in session.optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in session.net.backbone.parameters()}
    assert {id(p) for p in session.net.projector.parameters()} <= in_optimizer
    start = {k: v.clone() for k, v in session.net.state_dict().items()}

    train(cfg, progress=False)
    state = checkpoints.load(Path(cfg.train.out_dir) / "last.pt", cfg.to_dict())
    trained = state["modules"]["net"]
    assert state["step"] == 6
    for key, value in saved.items():  # parameters and buffers, num_batches_tracked included
        assert torch.equal(trained[f"backbone.{key}"], value), key
    for part in ("projector.", "guide."):
        moved = [k for k in trained if k.startswith(part) and not torch.equal(trained[k], start[k])]
        assert moved, f"nothing of the {part[:-1]} moved"


def test_the_frozen_backbone_stays_in_eval_mode_and_gets_no_gradient(tiny_config, convnet_file):
    path, _ = convnet_file
    net = BayesNCL(frozen_config(tiny_config, path)).train()
    assert net.training and net.projector.training and not net.backbone.training
    assert not any(m.training for m in net.backbone.modules())
    x1, x2 = torch.randn(2, 8, 3, 32, 32)
    net.loss(x1, x2).backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.guide.parameters())


def test_a_frozen_run_resumes_exactly_and_loads_without_its_weight_file(tiny_config, convnet_file, tmp_path):
    path, _ = convnet_file
    straight = frozen_config(tiny_config, path)
    train(straight, progress=False)
    halted = frozen_config(tiny_config, path, "train.steps=3")
    train(halted, progress=False)
    resumed = load_config(Path(halted.train.out_dir) / "config.yaml", ["train.steps=6"])
    path.rename(tmp_path / "moved.pt")  # neither resuming nor loading a trained run reads the file again
    train(resumed, resume=True, progress=False)
    a = checkpoints.load(Path(straight.train.out_dir) / "last.pt", straight.to_dict())["modules"]["net"]
    b = checkpoints.load(Path(resumed.train.out_dir) / "last.pt", resumed.to_dict())["modules"]["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    net = BayesNCL.from_run(straight.train.out_dir)
    assert all(torch.equal(net.state_dict()[k], a[k]) for k in a)


def test_the_network_at_initialisation_is_the_loaded_encoder(tiny_config, convnet_file):
    """``bayesncl-eval --init`` measures the network training started from: with model.weights,
    the loaded backbone (and the seeded projector and gates)."""
    path, saved = convnet_file
    cfg = tiny_config(f"model.weights={path}", "train.steps=1")
    train(cfg, progress=False)
    initial = load_trained(cfg.train.out_dir, untrained=True).net.backbone.state_dict()
    assert all(torch.equal(initial[k], saved[k]) for k in saved)
