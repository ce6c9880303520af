"""``model.backbone=torchvision:<name>``: any classification model of torchvision, classifier removed,
feature width measured, small-image stem on request; unknown or unusable models refused by name.
Small models only, randomly initialised (nothing is downloaded)."""
from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.feature_extraction import create_feature_extractor

from bayesncl_pyro import BayesNCL
from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.choices import BACKBONES
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.networks.backbones import CifarResNet18
from bayesncl_pyro.networks.torchvision_backbones import TorchvisionBackbone, torchvision_model


def backbone(name: str, *overrides: str):
    cfg = load_config(None, [f"model.backbone=torchvision:{name}", "data.name=cifar10", *overrides])
    return BACKBONES.get(cfg.model.backbone)(cfg)


def test_resnet18_with_the_small_stem_is_the_built_in_cifar_resnet18():
    torch.manual_seed(0)
    ours = backbone("resnet18", "model.small_stem=true")
    torch.manual_seed(0)
    built_in = CifarResNet18()
    assert ours.out_dim == built_in.out_dim == 512
    ours_state, reference = ours.state_dict(), built_in.state_dict()
    assert ours_state.keys() == reference.keys()
    assert all(torch.equal(ours_state[k], reference[k]) for k in reference)


def test_features_are_what_torchvision_s_classifier_reads():
    """h of ``torchvision:resnet18`` equals the input of its fc layer, taken from the untouched model
    by torchvision's own feature extractor."""
    torch.manual_seed(1)
    ours = backbone("resnet18").eval()
    reference = torchvision.models.resnet18()
    reference.load_state_dict(ours.net.state_dict(), strict=False)
    extractor = create_feature_extractor(reference.eval(), return_nodes={"flatten": "h"})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), extractor(x)["h"], atol=1e-5)


@pytest.mark.parametrize("name, classifier", [
    ("mobilenet_v3_small", lambda m: m.classifier[-1]),
    ("regnet_x_400mf", lambda m: m.fc),
    ("googlenet", lambda m: m.fc),
])
def test_the_classifier_goes_and_the_width_is_its_input(name, classifier):
    reference = torchvision.models.get_model(name, weights=None)
    ours = backbone(name)
    assert ours.out_dim == classifier(reference).in_features
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in ours.modules())
    assert ours(torch.rand(2, 3, 32, 32)).shape == (2, ours.out_dim)
    if name == "googlenet":  # the auxiliary heads go as torchvision drops them
        assert ours.net.aux1 is None and ours.net.aux2 is None and not ours.net.aux_logits


def test_vision_transformer_and_convnext_heads():
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                               hidden_dim=16, mlp_dim=32)
    assert TorchvisionBackbone(vit, 32).out_dim == 16
    convnext = torchvision.models.ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)])
    encoder = TorchvisionBackbone(convnext, 32)
    assert encoder.out_dim == 16 and isinstance(encoder.net.classifier[-1], nn.Identity)
    assert encoder(torch.rand(3, 3, 32, 32)).shape == (3, 16)


def test_a_vision_transformer_is_built_for_the_run_s_image_size():
    model = torchvision_model("vit_b_32", 64)
    assert model.image_size == 64
    assert model.encoder.pos_embedding.shape[1] == (64 // 32) ** 2 + 1


@pytest.mark.parametrize("overrides, message", [
    (["model.backbone=torchvision:resnet5"], "torchvision:<name> with <name> one of alexnet, convnext_base"),
    (["model.backbone=torchvision:resnet5"], "closest: torchvision:resnet50"),
    (["model.backbone=torch:resnet18"], r"^model.backbone='torch:resnet18' is not allowed \(closest: torchvision:resnet18"
                                        r"\).*torchvision:<name> for any of \d+ names, e.g. torchvision:alexnet"),
    (["model.backbone=convnet", "model.small_stem=true"], "model.small_stem=True is not allowed"),
])
def test_unknown_names_and_misplaced_stems_are_refused_by_validation(overrides, message):
    with pytest.raises(ConfigError, match=message if "\\" in message else re.escape(message)):
        load_config(None, overrides)


@pytest.mark.parametrize("name, overrides, message", [
    ("squeezenet1_0", [], "no linear classifier"),
    ("alexnet", ["data.image_size=16"], "cannot encode 16x16 images"),
    ("mobilenet_v3_small", ["model.small_stem=true"], "does not apply"),
])
def test_models_that_cannot_serve_are_refused_by_name(name, overrides, message):
    with pytest.raises(ConfigError, match=rf"torchvision:{name}.*{message}|{message}.*torchvision:{name}"):
        backbone(name, *overrides)


def test_a_torchvision_backbone_trains(tiny_config):
    from bayesncl_pyro.training.loop import train

    cfg = tiny_config("model.backbone=torchvision:mobilenet_v3_small", "train.steps=2")
    summary = train(cfg, progress=False)
    assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["final_loss"]))
    net = BayesNCL.from_run(cfg.train.out_dir)
    assert net.feature_dim == 1024
