"""Encoders f(x) -> h: the CIFAR ResNet-18 of the paper and a small convnet for CPU runs.

A registered backbone is a callable ``make(cfg) -> Backbone`` that takes the run's whole
:class:`~bayesncl_pyro.config.Config` (plugins register theirs the same way); ``torchvision:<name>``
is :mod:`.torchvision_backbones`. All of them start randomly initialised; ``model.weights`` loads a
local state dict afterwards (:mod:`.pretrained_weights`).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from bayesncl_pyro.config.choices import BACKBONES


class Backbone(nn.Module):
    """An encoder x [N, 3, S, S] -> h [N, out_dim] with a known feature width ``out_dim``."""

    out_dim: int


class CifarResNet18(Backbone):
    """torchvision's ResNet-18 with a 3x3 stride-1 first conv, no max-pool, no fc: h is 512-d."""

    def __init__(self, width: int = 64):
        super().__init__()
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ImageNetResNet18(Backbone):
    """torchvision's ResNet-18 with its ImageNet stem (7x7 stride-2 conv, max-pool), fc removed:
    for 224-pixel images such as ImageNet-100. h is 512-d."""

    def __init__(self, width: int = 64):
        super().__init__()
        net = resnet18(weights=None)
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ConvNet(Backbone):
    """Four conv-BN-ReLU blocks (width w, 2w, 4w, 4w), pooling between, global average pool.

    Fast on two CPU cores (~0.5-1k images/s at 32x32), so demos and tests can train for real.
    h is 4w-d (256 with the default width 64).
    """

    def __init__(self, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            _conv_block(3, w), nn.MaxPool2d(2),
            _conv_block(w, 2 * w), nn.MaxPool2d(2),
            _conv_block(2 * w, 4 * w), nn.MaxPool2d(2),
            _conv_block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_dim = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BACKBONES.register("resnet18", lambda cfg: CifarResNet18(cfg.model.convnet_width))
BACKBONES.register("resnet18_imagenet", lambda cfg: ImageNetResNet18(cfg.model.convnet_width))
BACKBONES.register("convnet", lambda cfg: ConvNet(cfg.model.convnet_width))
