"""The on-disk image store: the same pixels and labels as the in-memory path, read-only and shared
between processes, resumable, verified against the listing; training from it is the training
from memory, batch for batch."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import decode_image, encode_jpeg
from torchvision.transforms.v2.functional import center_crop, resize

import bayesncl_pyro.data.imagefolder_store as imagefolder_store
from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.errors import ConfigError, DataError
from bayesncl_pyro.data.image_store import LABELS, MANIFEST
from bayesncl_pyro.data.imagefolder_store import load_imagefolder_store, store_folder
from bayesncl_pyro.data.sources import load_split
from bayesncl_pyro.data.vision import load_imagefolder
from bayesncl_pyro.training.batches import Prefetcher, gather, train_batches
from bayesncl_pyro.training.loop import train

from .conftest import ROOT, TINY

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)
CLASSES = ("ant", "bee", "cat")


def jpeg_tree(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    """JPEGs of mixed sizes and aspect ratios in root/{train,test}/<class>/."""
    g = torch.Generator().manual_seed(seed)
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                height, width = 18 + 5 * (k % 6), 40 - 3 * (k % 6) + c
                image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
                (folder / f"{k:02d}.jpg").write_bytes(bytes(encode_jpeg(image, quality=90).numpy()))
    return root


def test_square_store_equals_the_in_memory_path_bit_for_bit(tmp_path):
    jpeg_tree(tmp_path)
    memory = load_imagefolder(str(tmp_path), "train", image_size=16)
    store = load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=2, chunk=4)
    assert store.images.shape == memory.images.shape == (18, 3, 16, 16)
    assert torch.equal(store.images, memory.images)
    assert torch.equal(store.labels, memory.labels) and store.classes == memory.classes


def test_crop_store_is_short_side_resize_and_centre_crop(tmp_path):
    jpeg_tree(tmp_path)
    store = load_imagefolder_store(str(tmp_path), "test", 20, "crop", processes=1, chunk=5)
    files = sorted((tmp_path / "test").glob("*/*.jpg"))
    for row, path in enumerate(files):
        image = decode_image(str(path))
        expected = center_crop(resize(image, [20], antialias=True), [20, 20])
        assert torch.equal(store.images[row], expected), path
        assert store.labels[row] == CLASSES.index(path.parent.name)


def test_the_store_is_mapped_read_only_and_never_written(tmp_path):
    jpeg_tree(tmp_path)
    data = load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1)
    pixels = store_folder(tmp_path, "train", "square", 16, None) / "images.u8"
    before = hashlib.sha256(pixels.read_bytes()).hexdigest()
    maps = Path("/proc/self/maps").read_text()
    assert str(pixels) in maps  # file-backed, not a private copy
    mapping = next(line for line in maps.splitlines() if line.endswith(str(pixels)))
    assert mapping.split()[1].startswith("rw") and mapping.split()[1][3] == "p"  # private: copy-on-write
    data.images[0].fill_(7)  # a write stays in this process
    assert hashlib.sha256(pixels.read_bytes()).hexdigest() == before
    again = load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1)
    assert not torch.equal(again.images[0], data.images[0])


SHARE_SCRIPT = """
import sys
import numpy as np
pixels = np.memmap(sys.argv[1], dtype=np.uint8, mode="r")
print(int(pixels.sum(dtype=np.int64)), flush=True)   # every page touched
sys.stdin.readline()
"""


def _mapping_kb(pixels: Path, pid: str = "self") -> dict[str, int]:
    """Rss and Pss (kB) of ``pixels`` mapped into process ``pid``."""
    sizes, inside = {}, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split()[0]
        if not first.endswith(":"):  # a mapping's header line: address range, perms, ..., path
            inside = line.endswith(str(pixels))
        elif inside and first in ("Rss:", "Pss:"):
            sizes[first[:-1]] = sizes.get(first[:-1], 0) + int(line.split()[1])
    return sizes


def test_the_store_pages_are_shared_with_another_process(tmp_path):
    """The training process maps the store; with another process (numpy only, to start fast)
    holding every page too, this process is charged about half of them (PSS): no private copy."""
    jpeg_tree(tmp_path, per_class=40)
    size = 64  # 120 images x 12 kB: 360 pages
    data = load_imagefolder_store(str(tmp_path), "train", size, "square", processes=1)
    pixels = store_folder(tmp_path, "train", "square", size, None) / "images.u8"
    child = subprocess.Popen([sys.executable, "-c", SHARE_SCRIPT, str(pixels)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert int(child.stdout.readline()) == int(data.images.sum())  # the child has touched every page
        mine = _mapping_kb(pixels)
    finally:
        child.communicate("\n", timeout=60)
    assert mine["Rss"] >= 0.95 * pixels.stat().st_size / 1024  # this process sees every page...
    assert mine["Pss"] <= 0.6 * mine["Rss"]  # ...but pays for about half of them


class Interrupt(Exception):
    pass


def test_a_killed_decode_resumes_where_it_stopped(tmp_path, monkeypatch):
    jpeg_tree(tmp_path)
    reference = load_imagefolder(str(tmp_path), "train", image_size=16)
    original = imagefolder_store.decode_chunk
    decoded: list[int] = []

    def decode_then_die(pixels, shape, rows, paths, geometry):
        if len(decoded) == 2:
            raise Interrupt("killed after 2 chunks")
        decoded.append(rows.start)
        return original(pixels, shape, rows, paths, geometry)

    monkeypatch.setattr(imagefolder_store, "decode_chunk", decode_then_die)
    with pytest.raises(Interrupt):
        load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1, chunk=4)
    folder = store_folder(tmp_path, "train", "square", 16, None)
    assert not json.loads((folder / MANIFEST).read_text())["complete"]
    assert len(list((folder / "chunks").glob("*.json"))) == 2

    resumed: list[int] = []

    def count(pixels, shape, rows, paths, geometry):
        resumed.append(rows.start)
        return original(pixels, shape, rows, paths, geometry)

    monkeypatch.setattr(imagefolder_store, "decode_chunk", count)
    store = load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1, chunk=4)
    assert sorted(resumed) == [8, 12, 16]  # the chunks 0 and 4 were not decoded again
    assert torch.equal(store.images, reference.images) and torch.equal(store.labels, reference.labels)


def test_a_changed_tree_is_decoded_again(tmp_path):
    jpeg_tree(tmp_path)
    first = load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1)
    replaced = tmp_path / "train" / "bee" / "00.jpg"
    replaced.write_bytes((tmp_path / "train" / "ant" / "01.jpg").read_bytes())
    second = load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1)
    row = sorted((tmp_path / "train").glob("*/*.jpg")).index(replaced)
    assert torch.equal(second.images[row], first.images[1]) and not torch.equal(first.images[row], second.images[row])


def test_labels_changed_in_the_store_are_an_error(tmp_path):
    jpeg_tree(tmp_path)
    load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1)
    labels_file = store_folder(tmp_path, "train", "square", 16, None) / LABELS
    labels = np.load(labels_file)
    np.save(labels_file, labels[::-1].copy())
    with pytest.raises(DataError, match="does not match the class folders of the listing.*row 0"):
        load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1)


def test_flipped_labels_in_the_in_memory_cache_are_not_trusted(tmp_path):
    jpeg_tree(tmp_path)
    right = load_imagefolder(str(tmp_path), "train", image_size=16)
    cache_file = tmp_path / ".bayesncl-cache" / "train.pt"
    cache = torch.load(cache_file)
    cache["labels"] = cache["labels"].flip(0)
    torch.save(cache, cache_file)
    with pytest.warns(UserWarning, match="do not match the class folders"):
        again = load_imagefolder(str(tmp_path), "train", image_size=16)
    assert torch.equal(again.labels, right.labels)


def test_corrupt_files_are_named_or_left_out(tmp_path):
    jpeg_tree(tmp_path)
    bad = tmp_path / "train" / "bee" / "03.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=f"{bad} is not a readable image.*skip_corrupt"):
        load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1, chunk=4)
    with pytest.warns(UserWarning, match="skipped 1 corrupt"):
        store = load_imagefolder_store(str(tmp_path), "train", 16, "square", skip_corrupt=True, processes=1,
                                       chunk=4)
    with pytest.warns(UserWarning, match="skipped 1 corrupt"):
        memory = load_imagefolder(str(tmp_path), "train", skip_corrupt=True, image_size=16)
    assert torch.equal(store.images, memory.images) and torch.equal(store.labels, memory.labels)
    with pytest.raises(DataError, match=f"{bad} is not a readable image"):  # the complete store still names it
        load_imagefolder_store(str(tmp_path), "train", 16, "square", processes=1, chunk=4)


def test_the_prefetcher_gives_the_batches_in_order(tmp_path):
    images = torch.arange(40 * 3 * 2 * 2, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(40, 3, 2, 2)
    labels = torch.arange(40)
    indices = list(train_batches(40, 8, seed=3, epoch=1))
    got = list(Prefetcher(images, labels, iter(indices), depth=2))
    assert len(got) == len(indices) == 5
    for (x, y), index in zip(got, indices):
        assert torch.equal(x, images[index]) and torch.equal(y, labels[index])
    broken = iter([indices[0], torch.tensor([99])])
    with pytest.raises(IndexError):
        list(Prefetcher(images, labels, broken))
    assert torch.equal(gather(images, labels, indices[2])[0], images[indices[2]])


def _config(root: Path, out: Path, *overrides: str):
    return load_config(ROOT / "configs" / "scenes_quick.yaml",
                       [*TINY, "data.name=imagefolder", f"data.root={root}", "data.batch_size=6",
                        "data.image_size=16", "train.epochs=2", f"train.out_dir={out}", *overrides])


def test_store_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="data.store='disk' is not allowed; allowed: auto, memory, mmap"):
        _config(tmp_path, tmp_path / "run", "data.store=disk")
    with pytest.raises(ConfigError, match="data.store_size=8 is not allowed"):
        _config(tmp_path, tmp_path / "run", "data.store_size=8")


def test_auto_keeps_small_splits_in_memory_and_maps_a_store_size(tmp_path):
    jpeg_tree(tmp_path)
    small = load_split(_config(tmp_path, tmp_path / "r").data, "train")
    mapped = load_split(_config(tmp_path, tmp_path / "r", "data.store_size=24").data, "train")
    assert (tmp_path / ".bayesncl-cache" / "train.pt").is_file()
    assert small.images.shape[-1] == 16 and mapped.images.shape[-1] == 24
    assert str(store_folder(tmp_path, "train", "crop", 24, None) / "images.u8") in Path("/proc/self/maps").read_text()


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_training_from_the_store_is_training_from_memory_and_resumes_exactly(tmp_path):
    jpeg_tree(tmp_path)
    memory = train(_config(tmp_path, tmp_path / "memory", "data.store=memory"), progress=False)
    mapped = train(_config(tmp_path, tmp_path / "mmap", "data.store=mmap"), progress=False)
    assert _losses(tmp_path / "memory") == _losses(tmp_path / "mmap")
    assert memory["final_loss"] == mapped["final_loss"]
    half = _config(tmp_path, tmp_path / "resumed", "data.store=mmap", "train.steps=3")
    train(half, progress=False)
    train(_config(tmp_path, tmp_path / "resumed", "data.store=mmap"), resume=True, progress=False)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "mmap")


def test_prepare_decodes_the_store_training_opens_and_nothing_is_decoded_again(tmp_path, monkeypatch, capsys):
    from bayesncl_pyro.cli.prepare import main as prepare

    jpeg_tree(tmp_path / "tree")
    overrides = ["data.name=imagefolder", f"data.root={tmp_path / 'tree'}", "data.store_size=20",
                 "data.image_size=16", f"data.cache_dir={tmp_path / 'cache'}"]
    assert prepare(overrides) == 0
    out = capsys.readouterr().out
    for split in ("train", "test"):
        folder = store_folder(tmp_path / "tree", split, "crop", 20, str(tmp_path / "cache"))
        assert json.loads((folder / MANIFEST).read_text())["complete"]
        assert f"{split}: 18 images of 3 classes, uint8 3×20×20; store {folder}, memory-mapped by every process" in out

    def no_decode(*args):
        raise AssertionError("training decoded again what bayesncl-prepare had decoded")

    monkeypatch.setattr(imagefolder_store, "decode_chunk", no_decode)
    cfg = load_config(None, overrides)
    stored = load_split(cfg.data, "train")
    direct = load_imagefolder_store(str(tmp_path / "tree"), "train", 20, "crop", cache_dir=str(tmp_path / "cache"))
    assert torch.equal(stored.images, direct.images) and torch.equal(stored.labels, direct.labels)


def test_prepare_names_a_missing_tree_and_a_split_it_does_not_know(tmp_path, capsys):
    from bayesncl_pyro.cli.prepare import main as prepare

    assert prepare(["data.name=imagefolder", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert f"data.root {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err
    assert prepare(["--splits", "val"]) == 2
    assert "invalid choice: 'val'" in capsys.readouterr().err


def large_jpeg_tree(root: Path, seed: int = 0) -> Path:
    """Smooth JPEG photos of 150-200 px (several times the stored size), one per class and split,
    of different aspect ratios: large enough for libjpeg's reduced-scale decode."""
    g = torch.Generator().manual_seed(seed)
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            height, width = 150 + 10 * c, 200 - 20 * c
            coarse = torch.randint(0, 256, (3, 6, 8), generator=g).float()
            image = resize(coarse, [height, width], antialias=False).round().clamp(0, 255).to(torch.uint8)
            (folder / "00.jpg").write_bytes(bytes(encode_jpeg(image, quality=92).numpy()))
    return root


def _draft_reference(path: Path, size: int) -> torch.Tensor:
    """PIL's reduced-scale JPEG decode with both sides kept ≥ size, written out independently."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        reduced = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
    return reduced


def test_large_jpegs_are_decoded_at_a_reduced_scale_in_both_imagefolder_paths(tmp_path):
    large_jpeg_tree(tmp_path)
    size = 16
    files = sorted((tmp_path / "train").glob("*/*.jpg"))
    reduced = [_draft_reference(path, size) for path in files]
    for path, image in zip(files, reduced):
        full = decode_image(str(path))
        assert min(image.shape[-2:]) >= size and image.shape[-1] * 4 <= full.shape[-1]  # 1/4 or 1/8 of the side
    crop = load_imagefolder_store(str(tmp_path), "train", size, "crop", processes=1)
    square = load_imagefolder_store(str(tmp_path), "train", size, "square", processes=1)
    memory = load_imagefolder(str(tmp_path), "train", image_size=size)
    for row, image in enumerate(reduced):
        assert torch.equal(crop.images[row], center_crop(resize(image, [size], antialias=True), [size, size]))
        assert torch.equal(square.images[row], resize(image, [size, size], antialias=True))
    assert torch.equal(memory.images, square.images)  # the in-memory cache and the store: the same pixels
    full = resize(decode_image(str(files[0])), [size, size], antialias=True)
    assert not torch.equal(full, square.images[0])  # power: the full-scale decode gives other pixels


def test_a_store_of_an_earlier_format_is_decoded_again(tmp_path, monkeypatch):
    jpeg_tree(tmp_path)
    load_imagefolder_store(str(tmp_path), "test", 16, "square", processes=1)
    folder = store_folder(tmp_path, "test", "square", 16, None)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "format": manifest["format"] - 1}))
    decoded: list[int] = []
    original = imagefolder_store.decode_chunk

    def count(pixels, shape, rows, paths, geometry):
        decoded.append(rows.start)
        return original(pixels, shape, rows, paths, geometry)

    monkeypatch.setattr(imagefolder_store, "decode_chunk", count)
    again = load_imagefolder_store(str(tmp_path), "test", 16, "square", processes=1)
    assert decoded == [0] and len(again) == 18
    assert json.loads((folder / MANIFEST).read_text())["format"] == manifest["format"]


def test_a_cache_of_full_scale_decodes_is_not_reused(tmp_path, monkeypatch):
    """An in-memory cache written before the reduced-scale decode (format 1: full-scale pixels)
    is decoded again, so the cache and the store of one tree never hold different pixels."""
    from bayesncl_pyro.data import vision

    large_jpeg_tree(tmp_path)
    size = 16
    split_dir = tmp_path / "train"
    files, labels, classes = vision._list_imagefolder(tmp_path, "train")
    full = torch.stack([resize(decode_image(str(path)), [size, size], antialias=True) for path in files])
    monkeypatch.setattr(vision, "CACHE_FORMAT", 1)
    old_key = vision._sized_key(vision._tree_key(split_dir, files, classes), size)
    monkeypatch.undo()
    cache = tmp_path / vision.CACHE_FOLDER / "train.pt"
    cache.parent.mkdir()
    torch.save({"key": old_key, "images": full, "labels": torch.tensor(labels), "classes": classes,
                "skipped": []}, cache)
    memory = load_imagefolder(str(tmp_path), "train", image_size=size)
    store = load_imagefolder_store(str(tmp_path), "train", size, "square", processes=1)
    assert torch.equal(memory.images, store.images)
    assert not torch.equal(memory.images, full)


def test_prepare_opens_a_store_mapped_and_leaves_scenes_alone(tmp_path, monkeypatch, capsys):
    from bayesncl_pyro.cli.prepare import main as prepare
    from bayesncl_pyro.data import sources

    jpeg_tree(tmp_path)
    opened = []
    original = sources.load_imagefolder_store
    monkeypatch.setattr(sources, "load_imagefolder_store",
                        lambda *args, **kwargs: opened.append(kwargs.get("in_memory", False)) or original(*args, **kwargs))
    assert prepare(["data.name=imagefolder", f"data.root={tmp_path}", "data.store=memory", "data.store_size=20",
                    "data.image_size=16", "--splits", "test"]) == 0
    assert opened == [False]  # preparing never reads the whole store into memory
    assert "read into memory by each process (data.store=memory)" in capsys.readouterr().out

    def no_scenes(*args, **kwargs):
        raise AssertionError("scenes generated although nothing is kept")

    monkeypatch.setattr(sources, "scenes_splits", no_scenes)
    assert prepare(["data.name=scenes"]) == 0
    assert "data.name=scenes is generated in memory by every run; nothing to prepare" in capsys.readouterr().out


def test_prepare_names_the_cache_it_read_or_wrote(tmp_path, capsys):
    from bayesncl_pyro.cli.prepare import main as prepare

    jpeg_tree(tmp_path / "tree")
    overrides = ["data.name=imagefolder", f"data.root={tmp_path / 'tree'}", "data.image_size=16",
                 f"data.cache_dir={tmp_path / 'cache'}", "--splits", "train"]
    for _ in range(2):  # written, then read
        assert prepare(overrides) == 0
        out = capsys.readouterr().out
        written = list((tmp_path / "cache").rglob("train.pt"))
        assert len(written) == 1 and f"cache {written[0]}, read into memory by each process" in out
