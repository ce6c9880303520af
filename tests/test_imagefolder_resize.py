"""ImageFolder trees of any and mixed image sizes: ``data.image_size`` resizes every image as it is
decoded (antialiased), the result is cached per size, and without a size the mixed-size error
names the option. Long data phases say what they do on a terminal."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torchvision.io import decode_image, write_png

from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import DataError
from bayesncl_pyro.data import sources, status
from bayesncl_pyro.data.vision import load_imagefolder

from .test_vision_data import counting_decoder, forbid_decoding, random_image, write_tree

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)


def mixed_tree(root):
    """Two classes of PNG images in three sizes; returns the files in ImageFolder order."""
    generator = torch.Generator().manual_seed(0)
    sizes = {"a": [(8, 6), (20, 30)], "b": [(10, 6), (32, 32), (5, 9)]}
    files = []
    for name, shapes in sizes.items():
        (root / "train" / name).mkdir(parents=True)
        for k, (height, width) in enumerate(shapes):
            path = root / "train" / name / f"{k:03d}.png"
            write_png(random_image(generator, height=height, width=width), str(path))
            files.append(path)
    return files


def reference_resize(path, size: int) -> torch.Tensor:
    """Bilinear antialiased resize by torch itself on floats, rounded: an independent reference for
    torchvision's uint8 kernel (they may differ by one grey level)."""
    image = decode_image(str(path)).float()[None]
    if image.shape[-2:] == (size, size):
        return image[0]
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].round()


def test_images_of_any_size_are_resized_as_they_are_decoded(tmp_path):
    files = mixed_tree(tmp_path)
    data = load_imagefolder(str(tmp_path), "train", image_size=12)
    assert data.images.dtype == torch.uint8 and data.images.shape == (5, 3, 12, 12)
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    for row, path in enumerate(files):
        difference = (data.images[row].float() - reference_resize(path, 12)).abs()
        assert difference.max() <= 1, path


def test_each_size_is_cached_once(tmp_path, monkeypatch):
    mixed_tree(tmp_path)
    first = load_imagefolder(str(tmp_path), "train", image_size=12)
    with monkeypatch.context() as patch:
        forbid_decoding(patch)
        assert torch.equal(load_imagefolder(str(tmp_path), "train", image_size=12).images, first.images)
    calls = counting_decoder(monkeypatch)
    assert load_imagefolder(str(tmp_path), "train", image_size=16).images.shape == (5, 3, 16, 16)
    assert len(calls) == 5


def test_a_tree_cached_at_its_own_size_serves_that_size(tmp_path, monkeypatch):
    write_tree(tmp_path, "train", {"a": 2, "b": 2}, height=8, width=8)
    native = load_imagefolder(str(tmp_path), "train")
    forbid_decoding(monkeypatch)
    assert torch.equal(load_imagefolder(str(tmp_path), "train", image_size=8).images, native.images)


def test_without_a_size_mixed_sizes_name_the_option(tmp_path):
    mixed_tree(tmp_path)
    with pytest.raises(DataError, match=r"must share one size .*set data\.image_size=N"):
        load_imagefolder(str(tmp_path), "train")


def test_the_config_passes_data_image_size(tmp_path):
    mixed_tree(tmp_path)
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path}", "data.image_size=16"])
    assert sources.load_split(cfg.data, "train").images.shape == (5, 3, 16, 16)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_data_phases_say_what_they_do_on_a_terminal(tmp_path, monkeypatch):
    mixed_tree(tmp_path)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    load_imagefolder(str(tmp_path), "train", image_size=12)
    sources._scenes.cache_clear()
    sources._scenes(40, 20, 10, 0.7, False, 7, 32, 0.0)
    lines = terminal.getvalue().splitlines()
    assert lines[0].startswith("decoding 5 images of ") and "resized to 12x12 (data.image_size)" in lines[0]
    assert lines[-1].startswith("generating scenes: 40 train and 20 test images of 32x32")

    captured = io.StringIO()  # not a terminal: nothing, so logs keep only results and errors
    monkeypatch.setattr("sys.stderr", captured)
    status.status("decoding")
    assert captured.getvalue() == ""
