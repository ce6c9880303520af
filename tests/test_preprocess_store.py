"""``BayesNCL.preprocess`` of a run trained on ``data.store_size`` is the run's evaluation view
of a raw photo: short side resized and centre crop, as the image store decoded its test images
(here compared with the store's own decode of the same non-square photo), not a squash of the
whole photo."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bayesncl_pyro.config import load_config
from bayesncl_pyro.data.augment import EvalTransform
from bayesncl_pyro.data.sources import load_split
from bayesncl_pyro.inference.bayesncl import BayesNCL
from bayesncl_pyro.storage.run_directory import PREPROCESSING_FILE
from bayesncl_pyro.training.loop import train

from .conftest import ROOT, TINY

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
)
STORE_SIZE, IMAGE_SIZE = 48, 16


def photo(seed: int, width: int = 500, height: int = 375) -> Image.Image:
    """A landscape picture with content up to its left and right edges (what a squash keeps and
    a centre crop drops)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    image = Image.fromarray((ramp * rng.uniform(0.3, 1.0, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        draw.ellipse([x, y, x + 60, y + 45], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def photo_tree(root):
    for split, count in (("train", 4), ("test", 1)):
        for c, name in enumerate(("a", "b")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                photo(100 * c + 10 * k + (split == "test")).save(folder / f"{k}.png")
    return root


def test_preprocess_of_a_store_size_run_is_the_stores_crop_not_a_squash(tmp_path):
    root = photo_tree(tmp_path / "tree")
    cfg = load_config(ROOT / "configs" / "scenes_quick.yaml", [
        *TINY, "data.name=imagefolder", f"data.root={root}", f"data.store_size={STORE_SIZE}",
        f"data.image_size={IMAGE_SIZE}", "data.batch_size=4", "train.steps=2", f"train.out_dir={tmp_path / 'run'}"])
    train(cfg, progress=False)
    record = json.loads((tmp_path / "run" / PREPROCESSING_FILE).read_text())
    assert record["store_size"] == STORE_SIZE and record["input_size"] == [3, IMAGE_SIZE, IMAGE_SIZE]

    net = BayesNCL.from_run(tmp_path / "run")
    raw = Image.open(root / "test" / "a" / "0.png")
    assert raw.size == (500, 375)
    test_set = load_split(cfg.data, "test")  # the store's own decode of the same file
    assert tuple(test_set.images.shape[1:]) == (3, STORE_SIZE, STORE_SIZE) and int(test_set.labels[0]) == 0
    plain = EvalTransform(IMAGE_SIZE, record["mean"], record["std"])
    expected = plain(test_set.images[:1])
    assert torch.equal(net.preprocess(raw), expected)

    squashed = plain(torch.from_numpy(np.array(raw)).permute(2, 0, 1)[None])
    assert (squashed - expected).abs().mean() > 0.05  # what preprocess gave before: the whole photo squashed


def test_a_record_without_store_size_takes_the_runs_config(tmp_path):
    """A run that recorded its transform before ``store_size`` was part of it gets the crop from
    its config, so an older store-size run loads right too."""
    from bayesncl_pyro.inference.trained_network import run_eval_transform
    from bayesncl_pyro.storage import run_directory

    cfg = load_config(None, [f"data.store_size={STORE_SIZE}", f"data.image_size={IMAGE_SIZE}"])
    run_directory.write_preprocessing(tmp_path, IMAGE_SIZE, (0.5,) * 3, (0.25,) * 3, STORE_SIZE)
    assert run_eval_transform(tmp_path, cfg).store_size == STORE_SIZE
    record = json.loads((tmp_path / PREPROCESSING_FILE).read_text())
    del record["store_size"]
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps(record))
    assert run_eval_transform(tmp_path, cfg).store_size == STORE_SIZE
    cfg.data.store_size = 0
    assert run_eval_transform(tmp_path, cfg).store_size == 0


@pytest.mark.parametrize("store_size", [8, -1, 2.5, True])
def test_an_impossible_store_size_is_refused(store_size):
    with pytest.raises(Exception, match=f"store_size={store_size!r} is not allowed"):
        EvalTransform(IMAGE_SIZE, (0.5,) * 3, (0.25,) * 3, store_size)
