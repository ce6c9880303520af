"""Vision loaders: ImageFolder decoding and caching, error messages, and the real data at hand."""
from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.io import encode_jpeg, write_png

import bayesncl_pyro.data.vision as vision
from bayesncl_pyro.config.errors import DataError
from bayesncl_pyro.data.vision import (
    NORMALIZATION,
    VISION_DATASETS,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_imagefolder,
    load_stl10,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg.tar.gz"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
SAFE_EXTRACT = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)


def random_image(generator: torch.Generator, height: int = 8, width: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def write_tree(
    root: Path, split: str, per_class: dict[str, int], seed: int = 0, **size
) -> dict[str, list[torch.Tensor]]:
    """PNG files root/split/<class>/<k>.png; returns the pixels written per class, in file order."""
    generator = torch.Generator().manual_seed(seed)
    written: dict[str, list[torch.Tensor]] = {}
    for name, count in per_class.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = []
        for k in range(count):
            image = random_image(generator, **size)
            write_png(image, str(folder / f"{k:03d}.png"))
            written[name].append(image)
    return written


def counting_decoder(monkeypatch) -> list[Path]:
    """Record every file the loader decodes."""
    calls: list[Path] = []
    original = vision._decode_file

    def decode(path: Path, reduce_to: int | None = None) -> torch.Tensor:
        calls.append(path)
        return original(path, reduce_to)

    monkeypatch.setattr(vision, "_decode_file", decode)
    return calls


def forbid_decoding(monkeypatch) -> None:
    def fail(path: Path, reduce_to: int | None = None) -> torch.Tensor:
        raise AssertionError(f"decoded {path} although a valid cache exists")

    monkeypatch.setattr(vision, "_decode_file", fail)


# --- ImageFolder: pixels, labels, classes ---------------------------------------------------


def test_png_tree_round_trips_pixels_labels_and_classes(tmp_path):
    written = write_tree(tmp_path, "train", {"dog": 2, "cat": 3})
    data = load_imagefolder(str(tmp_path), "train")
    assert data.classes == ["cat", "dog"]
    assert data.images.dtype == torch.uint8 and data.images.shape == (5, 3, 8, 6)
    assert data.labels.dtype == torch.int64 and data.labels.tolist() == [0, 0, 0, 1, 1]
    expected = torch.stack(written["cat"] + written["dog"])
    assert torch.equal(data.images, expected)


def test_grey_rgba_and_pil_only_formats_become_rgb(tmp_path):
    generator = torch.Generator().manual_seed(1)
    grey = torch.randint(0, 256, (1, 5, 7), dtype=torch.uint8, generator=generator)
    rgba = torch.randint(0, 256, (5, 7, 4), dtype=torch.uint8, generator=generator)
    rgb = torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8, generator=generator)
    (tmp_path / "test" / "a").mkdir(parents=True)
    (tmp_path / "test" / "b").mkdir(parents=True)
    write_png(grey, str(tmp_path / "test" / "a" / "0.png"))
    Image.fromarray(rgba.numpy(), "RGBA").save(tmp_path / "test" / "a" / "1.png")
    Image.fromarray(rgb.numpy(), "RGB").save(tmp_path / "test" / "b" / "0.bmp")

    data = load_imagefolder(str(tmp_path), "test")

    assert data.images.shape == (3, 3, 5, 7)
    assert torch.equal(data.images[0], grey.expand(3, -1, -1))
    assert torch.equal(data.images[1], rgba[..., :3].permute(2, 0, 1))
    assert torch.equal(data.images[2], rgb.permute(2, 0, 1))
    assert data.labels.tolist() == [0, 0, 1]


def test_jpeg_tree_matches_an_independent_decoder(tmp_path):
    """JPEG is lossy: compare with PIL's decoding of the same files (2 levels mean difference)."""
    ramp = torch.linspace(0, 255, 16).round().to(torch.uint8)
    smooth = torch.stack(
        [ramp[None, :].expand(16, -1), ramp[:, None].expand(-1, 16), ramp.flip(0)[None, :].expand(16, -1)]
    )
    for name, image in {"x": smooth, "y": smooth.flip(2)}.items():
        (tmp_path / "train" / name).mkdir(parents=True)
        jpeg = encode_jpeg(image, quality=95).numpy().tobytes()
        (tmp_path / "train" / name / "0.jpg").write_bytes(jpeg)

    data = load_imagefolder(str(tmp_path), "train")

    for row, name in enumerate(["x", "y"]):
        pil_pixels = np.asarray(Image.open(tmp_path / "train" / name / "0.jpg").convert("RGB"))
        reference = torch.from_numpy(pil_pixels.copy())
        difference = (data.images[row].int() - reference.permute(2, 0, 1).int()).abs().float()
        assert difference.mean() < 2.0
    assert (data.images[0].int() - smooth.int()).abs().float().mean() < 4.0


def test_hidden_files_and_folders_are_not_data(tmp_path):
    """Notebook checkpoints, macOS metadata (``._x.png`` is not an image) and hidden class
    folders are left out; the labels are those of the visible folders."""
    write_tree(tmp_path, "train", {"cat": 2, "dog": 2})
    (tmp_path / "train" / "cat" / ".ipynb_checkpoints").mkdir()
    write_tree(tmp_path / "train" / "cat", ".ipynb_checkpoints", {"stale": 1})
    (tmp_path / "train" / "dog" / "._000.png").write_bytes(b"AppleDouble metadata, not a PNG")
    (tmp_path / "train" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_tree(tmp_path, "train", {".trash": 3})
    data = load_imagefolder(str(tmp_path), "train")
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1, 1]


def test_links_are_followed_but_never_into_a_loop_or_twice(tmp_path):
    """A class folder linked from elsewhere is read; a link to a folder above (a loop), to the
    folder itself, and a second name of a file (a hard link) add nothing."""
    outside = tmp_path / "elsewhere"
    write_tree(outside, "pool", {"bird": 2})
    write_tree(tmp_path, "train", {"cat": 2})
    os.symlink(outside / "pool" / "bird", tmp_path / "train" / "bird")
    os.symlink(tmp_path / "train", tmp_path / "train" / "cat" / "up")
    os.symlink(tmp_path / "train" / "cat", tmp_path / "train" / "cat" / "again")
    os.link(tmp_path / "train" / "cat" / "000.png", tmp_path / "train" / "cat" / "copy.png")
    data = load_imagefolder(str(tmp_path), "train")
    assert data.classes == ["bird", "cat"] and data.labels.tolist() == [0, 0, 1, 1]


def test_train_and_test_must_hold_the_same_class_folders(tmp_path):
    write_tree(tmp_path, "train", {"cat": 1, "dog": 1, "eel": 1})
    write_tree(tmp_path, "test", {"cat": 1, "dog": 1, "fox": 1})
    for split in ("train", "test"):
        with pytest.raises(DataError, match="only in train: eel; only in test: fox|only in test: fox; only in train: eel"):
            load_imagefolder(str(tmp_path), split)


def test_the_file_listing_keeps_imagefolders_order(tmp_path):
    """Labels and order as torchvision's ImageFolder gives them, for a tree it reads correctly."""
    write_tree(tmp_path, "train", {"b": 2, "a": 1})
    write_tree(tmp_path / "train" / "a", "sub", {"x": 1, "x-2": 1})
    write_tree(tmp_path / "train" / "a" / "sub" / "x", "y", {"z": 1})  # "x-2" sorts before "x/y"
    reference = torchvision.datasets.ImageFolder(str(tmp_path / "train"), allow_empty=True)
    files, labels, classes = vision._list_imagefolder(tmp_path, "train")
    assert [str(f) for f in files] == [path for path, _ in reference.samples]
    assert labels == [label for _, label in reference.samples] and classes == reference.classes


# --- ImageFolder: the cache -------------------------------------------------------------------


def test_cache_is_written_next_to_the_data_and_read_back(tmp_path, monkeypatch):
    write_tree(tmp_path, "train", {"a": 2, "b": 2})
    first = load_imagefolder(str(tmp_path), "train")
    assert (tmp_path / ".bayesncl-cache" / "train.pt").is_file()

    forbid_decoding(monkeypatch)
    second = load_imagefolder(str(tmp_path), "train")
    assert torch.equal(second.images, first.images)
    assert torch.equal(second.labels, first.labels)
    assert second.classes == first.classes


def test_the_cache_of_one_split_does_not_serve_the_other(tmp_path):
    write_tree(tmp_path, "train", {"a": 2, "b": 2}, seed=0)
    write_tree(tmp_path, "test", {"a": 1, "b": 1}, seed=1)
    train = load_imagefolder(str(tmp_path), "train")
    test = load_imagefolder(str(tmp_path), "test")
    assert len(train) == 4 and len(test) == 2
    assert not torch.equal(train.images[:1], test.images[:1])


@pytest.mark.parametrize("change", ["touch", "add", "rewrite"])
def test_a_changed_tree_is_decoded_again(tmp_path, monkeypatch, change):
    write_tree(tmp_path, "train", {"a": 2, "b": 2})
    load_imagefolder(str(tmp_path), "train")
    target = tmp_path / "train" / "a" / "000.png"
    new_pixels = random_image(torch.Generator().manual_seed(99))
    if change == "touch":
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    elif change == "add":
        write_png(new_pixels, str(tmp_path / "train" / "b" / "zzz.png"))
    else:
        stat = target.stat()
        write_png(new_pixels, str(target))
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    calls = counting_decoder(monkeypatch)
    data = load_imagefolder(str(tmp_path), "train")

    assert len(calls) == len(data)
    if change == "add":
        assert len(data) == 5 and torch.equal(data.images[-1], new_pixels) and data.labels[-1] == 1
    if change == "rewrite":
        assert torch.equal(data.images[0], new_pixels)


def test_cache_dir_holds_the_cache_when_given(tmp_path, monkeypatch):
    root, cache_dir = tmp_path / "data", tmp_path / "cache"
    write_tree(root, "train", {"a": 1, "b": 2})
    first = load_imagefolder(str(root), "train", cache_dir=str(cache_dir))
    assert not (root / ".bayesncl-cache").exists()
    cached = list(cache_dir.glob("*/train.pt"))
    assert len(cached) == 1 and cached[0].parent.name.startswith("data-")

    forbid_decoding(monkeypatch)
    second = load_imagefolder(str(root), "train", cache_dir=str(cache_dir))
    assert torch.equal(second.images, first.images)


def test_a_second_root_gets_its_own_cache_in_cache_dir(tmp_path):
    cache_dir = tmp_path / "cache"
    write_tree(tmp_path / "one" / "data", "train", {"a": 1, "b": 1}, seed=0)
    write_tree(tmp_path / "two" / "data", "train", {"a": 1, "b": 1}, seed=1)
    one = load_imagefolder(str(tmp_path / "one" / "data"), "train", cache_dir=str(cache_dir))
    two = load_imagefolder(str(tmp_path / "two" / "data"), "train", cache_dir=str(cache_dir))
    assert len(list(cache_dir.glob("*/train.pt"))) == 2
    assert not torch.equal(one.images, two.images)


def test_read_only_root_caches_under_the_user_cache(tmp_path, monkeypatch):
    root, home = tmp_path / "data", tmp_path / "home"
    write_tree(root, "train", {"a": 2, "b": 1})
    monkeypatch.setenv("HOME", str(home))
    save = vision.atomic_torch_save

    def save_outside_root(path, obj):  # as the OS does for a non-root user in a 0o555 tree
        if Path(path).resolve().is_relative_to(root.resolve()):
            raise PermissionError(13, "Permission denied", str(path))
        return save(path, obj)

    monkeypatch.setattr(vision, "atomic_torch_save", save_outside_root)
    modes = {path: path.stat().st_mode for path in [root, *root.rglob("*")] if path.is_dir()}
    for path in modes:
        path.chmod(0o555)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            first = load_imagefolder(str(root), "train")
        cached = list((home / ".cache" / "bayesncl_pyro").glob("*/train.pt"))
        assert len(cached) == 1
        assert not (root / ".bayesncl-cache").exists()

        forbid_decoding(monkeypatch)
        assert torch.equal(load_imagefolder(str(root), "train").images, first.images)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def test_an_unreadable_cache_is_replaced(tmp_path):
    written = write_tree(tmp_path, "train", {"a": 1, "b": 1})
    load_imagefolder(str(tmp_path), "train")
    (tmp_path / ".bayesncl-cache" / "train.pt").write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable image cache"):
        data = load_imagefolder(str(tmp_path), "train")
    assert torch.equal(data.images, torch.stack(written["a"] + written["b"]))


# --- ImageFolder: errors ----------------------------------------------------------------------


def test_missing_root_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(str(missing))) as error:
        load_imagefolder(str(missing), "train")
    assert "train/<class>" in str(error.value)


def test_missing_split_is_named(tmp_path):
    write_tree(tmp_path, "train", {"a": 1, "b": 1})
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "test"))) as error:
        load_imagefolder(str(tmp_path), "test")
    assert "does not exist" in str(error.value) and "test/<class>" in str(error.value)


def test_unknown_split_is_refused(tmp_path):
    write_tree(tmp_path, "val", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="'val'.*allowed: train, test"):
        load_imagefolder(str(tmp_path), "val")


@pytest.mark.parametrize("layout", ["no class folders", "no image files"])
def test_empty_split_is_named(tmp_path, layout):
    split_dir = tmp_path / "train"
    split_dir.mkdir()
    if layout == "no image files":
        for name in ["a", "b"]:
            (split_dir / name).mkdir()
            (split_dir / name / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=re.escape(str(split_dir))):
        load_imagefolder(str(tmp_path), "train")


def test_a_class_folder_without_images_is_named(tmp_path):
    write_tree(tmp_path, "train", {"a": 1, "b": 1})
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(DataError, match=r"\['c'\]"):
        load_imagefolder(str(tmp_path), "train")


def test_one_class_is_refused(tmp_path):
    write_tree(tmp_path, "train", {"only": 3})
    with pytest.raises(DataError, match="at least 2 classes") as error:
        load_imagefolder(str(tmp_path), "train")
    assert str(tmp_path / "train") in str(error.value)


def _corrupt_bytes(kind: str) -> tuple[str, bytes]:
    image = random_image(torch.Generator().manual_seed(5))
    if kind == "garbage":
        return "broken.png", b"this is not an image at all"
    if kind == "truncated png":
        data = write_png_bytes(image)
        return "broken.png", data[: len(data) // 2]
    data = encode_jpeg(image, quality=90).numpy().tobytes()
    return "broken.jpg", data[: len(data) // 2]


def write_png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["garbage", "truncated png", "truncated jpeg"])
def test_a_corrupt_file_is_named(tmp_path, kind):
    write_tree(tmp_path, "train", {"a": 2, "b": 2})
    name, data = _corrupt_bytes(kind)
    broken = tmp_path / "train" / "b" / name
    broken.write_bytes(data)
    with pytest.raises(DataError, match=re.escape(str(broken))) as error:
        load_imagefolder(str(tmp_path), "train")
    assert "skip_corrupt" in str(error.value)
    assert not (tmp_path / ".bayesncl-cache").exists()


def test_a_corrupt_first_file_is_named(tmp_path):
    write_tree(tmp_path, "train", {"a": 2, "b": 2})
    broken = tmp_path / "train" / "a" / "000.png"
    broken.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=re.escape(str(broken))):
        load_imagefolder(str(tmp_path), "train")


def test_skip_corrupt_warns_and_leaves_the_files_out(tmp_path, monkeypatch):
    written = write_tree(tmp_path, "train", {"a": 2, "b": 2})
    bad_names = ["000_broken.png", "001_broken.jpg"]
    for bad_name, kind in zip(bad_names, ["garbage", "truncated jpeg"]):
        (tmp_path / "train" / "b" / bad_name).write_bytes(_corrupt_bytes(kind)[1])

    with pytest.warns(UserWarning, match="skipped 2 corrupt") as record:
        data = load_imagefolder(str(tmp_path), "train", skip_corrupt=True)
    message = next(str(w.message) for w in record if "skipped" in str(w.message))
    assert all(bad_name in message for bad_name in bad_names)
    assert torch.equal(data.images, torch.stack(written["a"] + written["b"]))
    assert data.labels.tolist() == [0, 0, 1, 1]

    forbid_decoding(monkeypatch)
    with pytest.warns(UserWarning, match="skipped 2 corrupt"):
        cached = load_imagefolder(str(tmp_path), "train", skip_corrupt=True)
    assert torch.equal(cached.images, data.images)

    monkeypatch.undo()
    with pytest.raises(DataError, match=re.escape(bad_names[0])):
        load_imagefolder(str(tmp_path), "train")


def test_all_files_corrupt_is_refused_even_when_skipping(tmp_path):
    for name in ["a", "b"]:
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "0.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="none of its 2 image files"):
        load_imagefolder(str(tmp_path), "train", skip_corrupt=True)


def test_a_size_mismatch_names_the_file_and_both_sizes(tmp_path):
    write_tree(tmp_path, "train", {"a": 2, "b": 2}, height=8, width=6)
    odd = tmp_path / "train" / "b" / "999.png"
    write_png(random_image(torch.Generator().manual_seed(3), height=10, width=6), str(odd))
    with pytest.raises(DataError, match=re.escape(str(odd))) as error:
        load_imagefolder(str(tmp_path), "train")
    assert "6x10" in str(error.value) and "6x8" in str(error.value)


# --- the real data at hand --------------------------------------------------------------------


@pytest.mark.skipif(not CIFAR10_JPEG.is_file(), reason=f"{CIFAR10_JPEG} is not present")
def test_cifar10_jpeg_test_split_of_two_classes(tmp_path):
    wanted_classes, per_class = ("cat", "dog"), 50
    wanted = {f"test/{name}/{k:04d}.jpg" for name in wanted_classes for k in range(per_class)}
    extracted = 0
    with tarfile.open(CIFAR10_JPEG, "r|gz") as tar:
        for member in tar:
            if member.name in wanted:
                tar.extract(member, tmp_path, **SAFE_EXTRACT)
                extracted += 1
                if extracted == len(wanted):
                    break
    assert extracted == len(wanted)

    data = load_imagefolder(str(tmp_path), "test")

    assert data.classes == list(wanted_classes)
    assert data.images.dtype == torch.uint8 and data.images.shape == (100, 3, 32, 32)
    assert torch.bincount(data.labels).tolist() == [per_class, per_class]
    assert data.labels.tolist() == sorted(data.labels.tolist())
    for row, path in [(0, "test/cat/0000.jpg"), (99, "test/dog/0049.jpg")]:
        reference = np.asarray(Image.open(tmp_path / path).convert("RGB")).astype(np.int32)
        difference = np.abs(data.images[row].permute(1, 2, 0).numpy().astype(np.int32) - reference)
        assert difference.mean() < 2.0
    assert data.images.float().std() > 20


def gunzip_fashion_mnist(root: Path) -> Path:
    """Lay Debian's gzip IDX files out as torchvision expects: root/FashionMNIST/raw/<name>."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for packed in FASHION_MNIST_DEBIAN.glob("*-ubyte.gz"):
        (raw / packed.stem).write_bytes(gzip.decompress(packed.read_bytes()))
    return raw


@pytest.mark.skipif(
    not FASHION_MNIST_DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_fashion_mnist_from_debian_files(tmp_path):
    raw = gunzip_fashion_mnist(tmp_path)
    data = load_fashion_mnist(str(tmp_path), "test")

    idx_pixels = (raw / "t10k-images-idx3-ubyte").read_bytes()[16:]
    pixels = np.frombuffer(idx_pixels, dtype=np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer((raw / "t10k-labels-idx1-ubyte").read_bytes()[8:], dtype=np.uint8)
    assert data.images.shape == (10_000, 3, 28, 28) and data.images.dtype == torch.uint8
    for channel in range(3):
        assert torch.equal(data.images[:, channel], torch.from_numpy(pixels.copy()))
    assert torch.equal(data.labels, torch.from_numpy(labels.astype(np.int64)))
    assert data.num_classes == 10

    train = load_fashion_mnist(str(tmp_path), "train")
    grey = train.images[:, 0].flatten()
    share = torch.bincount(grey, minlength=256).double() / grey.numel()
    levels = torch.arange(256, dtype=torch.float64) / 255
    pixel_mean = (share * levels).sum()
    pixel_std = (share * (levels - pixel_mean) ** 2).sum().sqrt()
    mean, std = NORMALIZATION["fashion_mnist"]
    assert abs(pixel_mean.item() - mean[0]) < 5e-4
    assert abs(pixel_std.item() - std[0]) < 5e-4


# --- torchvision datasets without their files -------------------------------------------------


@pytest.mark.parametrize(
    "loader, folder",
    [
        (load_cifar10, "cifar-10-batches-py"),
        (load_cifar100, "cifar-100-python"),
        (load_stl10, "stl10_binary"),
        (load_fashion_mnist, "FashionMNIST/raw"),
    ],
)
def test_missing_torchvision_files_say_where_and_how_to_fetch(tmp_path, loader, folder):
    with pytest.raises(DataError) as error:
        loader(str(tmp_path), "test", download=False)
    message = str(error.value)
    assert str(tmp_path / folder) in message
    assert "data.download=true" in message


@pytest.mark.parametrize("loader", [load_cifar10, load_cifar100, load_stl10, load_fashion_mnist])
def test_torchvision_loaders_refuse_unknown_splits(tmp_path, loader):
    with pytest.raises(DataError, match="allowed: train, test"):
        loader(str(tmp_path), "unlabeled")


# --- tables -----------------------------------------------------------------------------------


def test_registry_and_statistics_cover_the_same_datasets():
    names = {"cifar10", "cifar100", "stl10", "fashion_mnist", "imagefolder"}
    assert set(VISION_DATASETS) == names
    assert set(NORMALIZATION) == names
    assert VISION_DATASETS["imagefolder"] is load_imagefolder
    for mean, std in NORMALIZATION.values():
        assert len(mean) == len(std) == 3
        assert all(0.0 < value < 1.0 for value in (*mean, *std))
