"""The dataset table (``data.name``): each entry loads one split of a dataset as an ImageDataset."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from bayesncl_pyro.config.choices import DATASETS
from bayesncl_pyro.data.dataset import ImageDataset
from bayesncl_pyro.data.scenes import scenes_splits
from bayesncl_pyro.data.status import status
from bayesncl_pyro.data.imagefolder_store import load_imagefolder_store, store_folder
from bayesncl_pyro.data.vision import NORMALIZATION, VISION_DATASETS, _list_imagefolder, load_imagefolder

MEMORY_LIMIT_BYTES = 2 * 1024**3
"""``data.store=auto``: a split larger than this (at its stored size) is read memory-mapped."""


@functools.lru_cache(maxsize=4)
def _scenes(num_train: int, num_test: int, num_classes: int, shared_p: float, color_tied: bool,
            seed: int, image_size: int, background_class_rate: float) -> tuple[ImageDataset, ImageDataset]:
    """Both splits, cached in memory by every option that changes a pixel or a factor."""
    status(f"generating scenes: {num_train} train and {num_test} test images of {image_size}x{image_size} "
           f"(data.scenes.seed={seed})")
    return scenes_splits(num_train=num_train, num_test=num_test, seed=seed, num_classes=num_classes,
                         shared_p=shared_p, color_tied=color_tied, image_size=image_size,
                         background_class_rate=background_class_rate)


@DATASETS.register("scenes")
def load_scenes(data_cfg, split: str) -> ImageDataset:
    s = data_cfg.scenes
    train, test = _scenes(s.num_train, s.num_test, s.num_classes, s.shared_p, s.color_tied, s.seed,
                          data_cfg.image_size, float(s.background_class_rate))
    return train if split == "train" else test


def _vision(name: str):
    loader = VISION_DATASETS[name]

    def load(data_cfg, split: str) -> ImageDataset:
        root = str(Path(data_cfg.root).expanduser())
        if name == "imagefolder":
            return _imagefolder(data_cfg, root, split)
        return loader(root, split, download=data_cfg.download)

    load.__name__ = f"load_{name}"
    return load


@dataclass(frozen=True)
class ImageFolderLayout:
    """How an ImageFolder split is held: ``mode`` ``memory`` (one uint8 tensor in each process)
    or ``mmap`` (the on-disk store, memory-mapped); a store (``mmap``, or ``memory`` with a
    ``store_size``) holds the images at ``size`` in ``geometry``."""

    mode: str
    size: int
    geometry: str

    @property
    def uses_store(self) -> bool:
        return self.mode == "mmap" or self.geometry == "crop"


def imagefolder_layout(data_cfg, root: str, split: str) -> ImageFolderLayout:
    """``data.store`` decides: today's in-memory tensor (``memory``), or the on-disk store read
    memory-mapped (``mmap``); ``auto`` maps the store with ``data.store_size`` or when the split
    at its stored size would take more than :data:`MEMORY_LIMIT_BYTES`."""
    size = data_cfg.store_size or data_cfg.image_size
    geometry = "crop" if data_cfg.store_size else "square"
    mode = data_cfg.store
    if mode == "auto":
        if data_cfg.store_size:
            mode = "mmap"
        else:
            files, _, _ = _list_imagefolder(Path(root), split)
            mode = "mmap" if len(files) * 3 * size * size > MEMORY_LIMIT_BYTES else "memory"
    return ImageFolderLayout(mode, size, geometry)


def _open_imagefolder(data_cfg, root: str, split: str, layout: ImageFolderLayout, in_memory: bool,
                      cache_used: list[Path] | None = None) -> ImageDataset:
    """The split as ``layout`` holds it: the store (read into memory with ``in_memory``) or the
    in-memory cache (its file appended to ``cache_used``)."""
    cache_dir = data_cfg.cache_dir or None
    if not layout.uses_store:
        return load_imagefolder(root, split, skip_corrupt=data_cfg.skip_corrupt, cache_dir=cache_dir,
                                image_size=data_cfg.image_size, cache_used=cache_used)
    return load_imagefolder_store(root, split, layout.size, layout.geometry, skip_corrupt=data_cfg.skip_corrupt,
                                  cache_dir=cache_dir, in_memory=in_memory)


def _imagefolder(data_cfg, root: str, split: str) -> ImageDataset:
    layout = imagefolder_layout(data_cfg, root, split)
    return _open_imagefolder(data_cfg, root, split, layout, in_memory=layout.mode == "memory")


@dataclass(frozen=True)
class PreparedSplit:
    """What :func:`prepare_split` made: the split's size and image shape, and where training
    will read it, in words."""

    images: int
    classes: int
    shape: tuple[int, ...]
    where: str


def prepare_split(data_cfg, split: str) -> PreparedSplit | None:
    """Decode one split of ``data_cfg`` into what training will read, as training would decode it:
    an ImageFolder tree into its store (opened memory-mapped here, whatever ``data.store`` says,
    so that preparing never holds the split in memory) or its in-memory cache; a torchvision
    dataset is read from its files. None for ``scenes``, which every run generates itself."""
    if data_cfg.name == "scenes":
        return None
    root = Path(data_cfg.root).expanduser()
    if data_cfg.name != "imagefolder":
        data = DATASETS.get(data_cfg.name)(data_cfg, split)
        where = (f"read from {root} (torchvision's {data_cfg.name} files)" if data_cfg.name in VISION_DATASETS
                 else f"loaded by the registered {data_cfg.name!r} loader (it keeps what it needs itself)")
        return PreparedSplit(len(data), len(data.classes), tuple(data.images.shape[1:]), where)
    layout = imagefolder_layout(data_cfg, str(root), split)
    used: list[Path] = []
    data = _open_imagefolder(data_cfg, str(root), split, layout, in_memory=False, cache_used=used)
    if layout.uses_store:
        held = ("memory-mapped by every process" if layout.mode == "mmap"
                else "read into memory by each process (data.store=memory)")
        where = f"store {store_folder(root, split, layout.geometry, layout.size, data_cfg.cache_dir or None)}, {held}"
    else:
        where = (f"cache {used[0]}, read into memory by each process" if used
                 else "no cache could be written (see the warning above): every run decodes again")
    return PreparedSplit(len(data), len(data.classes), tuple(data.images.shape[1:]), where)


for _name in VISION_DATASETS:
    DATASETS.register(_name, _vision(_name))


def load_split(data_cfg, split: str) -> ImageDataset:
    """One split (``"train"`` or ``"test"``) of the configured dataset; the training split cut to
    ``data.train_subset`` images when that is set."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not allowed; allowed: train, test")
    data = DATASETS.get(data_cfg.name)(data_cfg, split)
    if split == "train" and 0 < data_cfg.train_subset < len(data):
        data = data.subset(balanced_subset(data.labels, data_cfg.train_subset))
    return data


def balanced_subset(labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` items, as equal a share of every class as possible, in a fixed random
    order (the same subset for every run, so methods compare on the same images)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    shuffled = labels[order]
    # rank of each item within its class, in the shuffled order
    onehot = torch.nn.functional.one_hot(shuffled, int(labels.max()) + 1)
    rank = (onehot.cumsum(0) * onehot).sum(1) - 1
    chosen = order[torch.argsort(rank, stable=True)[:size]]
    return chosen.sort().values


def normalization(data_cfg, train: ImageDataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel mean/std: the standard constants of a known dataset, else measured on ``train``."""
    if data_cfg.name in NORMALIZATION:
        mean, std = NORMALIZATION[data_cfg.name]
        return tuple(mean), tuple(std)
    sample = train.images[: min(len(train), 5000)].float() / 255
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())
