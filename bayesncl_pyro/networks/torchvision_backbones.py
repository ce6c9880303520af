"""Any classification model of ``torchvision.models`` as a backbone: ``model.backbone=torchvision:<name>``.

The model is made by torchvision's own builder (``torchvision.models.get_model_builder(name)``
with ``weights=None``: randomly initialised; pretrained weights come from a local file,
``model.weights``, never a download). Its classifier, the last ``nn.Linear`` it registers (``fc``, ``classifier[-1]``,
``heads.head``, ``head``), becomes the identity, so h is what that layer would have read; the
auxiliary heads of GoogLeNet and Inception v3 are dropped as torchvision itself does; a vision
transformer is built for the run's image size. The feature width is measured by one forward pass at
``data.image_size``, which also refuses, by name, a model that cannot take images that small.
``model.small_stem=true`` gives a ResNet-family model (ResNet, ResNeXt, Wide ResNet) the 3x3
stride-1 first convolution without max-pool of 32x32 recipes, as the built-in ``resnet18`` has.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from bayesncl_pyro.config.choices import BACKBONES
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.networks.backbones import Backbone

AUX_HEADS = ("AuxLogits", "aux1", "aux2")
"""The auxiliary classifiers of Inception v3 and GoogLeNet, which only their training losses read."""


def classification_models() -> list[str]:
    """The names ``torchvision:<name>`` accepts: torchvision's classification models."""
    return torchvision.models.list_models(module=torchvision.models)


def _last_linear(model: nn.Module) -> str | None:
    """The qualified name of the last ``nn.Linear`` among the model's modules, in registration order."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else None


class TorchvisionBackbone(Backbone):
    """A torchvision classification model without its classifier: x [N, 3, S, S] -> h [N, out_dim].

    ``model`` is changed in place (classifier, auxiliary heads, stem) and kept as ``self.net``, so
    the backbone's state-dict keys are torchvision's with a ``net.`` in front.
    """

    def __init__(self, model: nn.Module, image_size: int, small_stem: bool = False, name: str = "model"):
        super().__init__()
        if small_stem:
            _small_stem(model, name)
        if getattr(model, "aux_logits", False):
            model.aux_logits = False
            for head in AUX_HEADS:
                if hasattr(model, head):
                    setattr(model, head, None)
        classifier = _last_linear(model)
        if classifier is None:
            raise ConfigError(f"model.backbone=torchvision:{name} has no linear classifier to remove "
                              f"(it ends in {type(model).__name__}'s own head); allowed: a torchvision model "
                              "whose classifier is an nn.Linear (every one but SqueezeNet)")
        parent, _, attribute = classifier.rpartition(".")
        setattr(model.get_submodule(parent), attribute, nn.Identity())
        self.net = model
        self.out_dim = _feature_width(model, image_size, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _small_stem(model: nn.Module, name: str) -> None:
    conv1, maxpool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if not isinstance(conv1, nn.Conv2d) or maxpool is None:
        raise ConfigError(f"model.small_stem=true does not apply to model.backbone=torchvision:{name} "
                          "(no conv1 and maxpool); allowed: a ResNet-family model (resnet*, resnext*, "
                          "wide_resnet*), or model.small_stem=false")
    model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def _feature_width(model: nn.Module, image_size: int, name: str) -> int:
    """The width of h, from one forward pass of two blank images in eval mode (no random numbers
    drawn, no statistics updated)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            h = model(torch.zeros(2, 3, image_size, image_size))
    except Exception as exc:  # whatever the model raises on a size it cannot take
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"model.backbone=torchvision:{name} cannot encode {image_size}x{image_size} images "
                          f"({type(exc).__name__}: {detail}); allowed: a larger data.image_size") from None
    finally:
        model.train(was_training)
    if not isinstance(h, torch.Tensor) or h.dim() != 2:
        shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ConfigError(f"model.backbone=torchvision:{name} without its classifier gives {shape}, not one "
                          "feature vector per image; allowed: a model whose classifier reads a flat vector")
    return int(h.shape[1])


def torchvision_model(name: str, image_size: int) -> nn.Module:
    """torchvision's randomly initialised ``name``; a vision transformer is built for ``image_size``
    (its position embedding is sized for one image size)."""
    builder = torchvision.models.get_model_builder(name)
    kwargs = {"image_size": image_size} if builder.__module__.endswith(".vision_transformer") else {}
    return builder(weights=None, **kwargs)


def _make(name: str):
    def make(cfg) -> TorchvisionBackbone:
        model = torchvision_model(name, cfg.data.image_size)
        return TorchvisionBackbone(model, cfg.data.image_size, cfg.model.small_stem, name)

    make.__name__ = f"torchvision_{name}"
    return make


BACKBONES.register_family("torchvision", _make, classification_models)
