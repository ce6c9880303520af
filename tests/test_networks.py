"""Networks and small pieces: backbones, projector, non-negativity maps, the metrics log."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from bayesncl_pyro.config.choices import NONNEG
from bayesncl_pyro.config.errors import RunWarning
from bayesncl_pyro.networks.backbones import CifarResNet18, ConvNet, ImageNetResNet18
from bayesncl_pyro.networks.projector import projector
from bayesncl_pyro.storage.metrics_log import MetricsLog, read_metrics


def test_cifar_resnet18_is_the_cifar_variant():
    net = CifarResNet18()
    assert net.net.conv1.kernel_size == (3, 3) and net.net.conv1.stride == (1, 1)
    assert isinstance(net.net.maxpool, torch.nn.Identity) and isinstance(net.net.fc, torch.nn.Identity)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert net.out_dim == 512


def test_imagenet_resnet18_keeps_its_stem():
    net = ImageNetResNet18().eval()
    assert net.net.conv1.kernel_size == (7, 7) and net.net.conv1.stride == (2, 2)
    assert isinstance(net.net.maxpool, torch.nn.MaxPool2d)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_convnet_width_sets_feature_size():
    net = ConvNet(width=8).eval()
    with torch.no_grad():
        assert net(torch.randn(3, 3, 32, 32)).shape == (3, 32) == (3, net.out_dim)


def test_projector_dims():
    head = projector(32, 64, 16).eval()
    assert head(torch.randn(4, 32)).shape == (4, 16)


@pytest.mark.parametrize("name, reference", [
    ("relu", F.relu), ("gelu", F.gelu), ("softplus", F.softplus), ("sigmoid", torch.sigmoid),
    ("exp", torch.exp), ("none", lambda z: z),
])
def test_nonneg_maps(name, reference):
    z = torch.linspace(-3, 3, 13)
    assert torch.allclose(NONNEG.get(name)(z), reference(z))


def test_rep_relu_has_relu_value_and_gelu_gradient():
    z = torch.linspace(-3, 3, 13, requires_grad=True)
    out = NONNEG.get("rep_relu")(z)
    assert torch.equal(out.detach(), F.relu(z.detach()))
    out.sum().backward()
    reference = torch.linspace(-3, 3, 13, requires_grad=True)
    F.gelu(reference).sum().backward()
    assert torch.allclose(z.grad, reference.grad)
    assert (z.grad[z.detach() < 0] != 0).all()  # no dead units


def test_metrics_log_drops_a_torn_last_line_and_cuts_on_resume(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 4, "lo')
    with pytest.warns(RunWarning, match="its last line is cut off"):
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    MetricsLog(tmp_path / "metrics.jsonl", resume_step=2).close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from bayesncl_pyro.storage.atomic import atomic_write_text

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(mask)
    assert path.read_text() == "hello"
    assert path.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".a.txt.*"))
