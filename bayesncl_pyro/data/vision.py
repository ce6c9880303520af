"""Real image datasets, each split decoded once into one in-memory uint8 tensor.

The loaders are the standard ones users already have (torchvision datasets with their
``download`` flag, ``torchvision.datasets.ImageFolder``), so the same configuration works
offline with files already on disk and online with ``data.download=true``. Every loader
returns an :class:`ImageDataset` holding the whole split: uint8 ``[N, 3, H, W]`` images
(grey repeated to 3 channels), int64 ``[N]`` labels and the class names. Augmentation and
normalisation happen later, batched on the training device; :data:`NORMALIZATION` gives the
per-channel statistics for that step.

ImageFolder trees are decoded once (JPEG/PNG/WebP/GIF by ``torchvision.io.decode_image``,
other formats through PIL, and a JPEG at least twice the target size by PIL at libjpeg's reduced
scale: :mod:`bayesncl_pyro.data.image_input`) and the stacked tensor is cached, so later runs
start in seconds.
Through the config (``data.name=imagefolder``) every image is resized to ``data.image_size``
square as it is decoded (bilinear, antialiased; the whole image, aspect not kept), so trees of
any and mixed sizes load; one size is cached per ``data.image_size``.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
from torchvision.transforms.v2.functional import resize

from bayesncl_pyro.config.errors import DataError, shown
from bayesncl_pyro.data.dataset import ImageDataset
from bayesncl_pyro.data.image_input import decode_image_file
from bayesncl_pyro.data.progress import progress as progress_bar
from bayesncl_pyro.data.status import status
from bayesncl_pyro.storage.atomic import atomic_torch_save

SPLITS = ("train", "test")
CACHE_FOLDER = ".bayesncl-cache"
CACHE_FORMAT = 2
DECODE_CHUNK = 256
IMG_EXTENSIONS = torchvision.datasets.folder.IMG_EXTENSIONS
TORCHVISION_IO_DEPRECATION = (
    "The image decoding and encoding capabilities of TorchVision are deprecated"
)

STL10_CLASSES = (
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"
)
"""STL-10's label order, for releases without ``class_names.txt``."""

Stats = tuple[float, float, float]

NORMALIZATION: dict[str, tuple[Stats, Stats]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
"""Per-channel (mean, std) of pixel values in [0, 1] on each training set; ImageNet's for
``imagefolder``, whose trees are usually ImageNet subsets."""


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split={split!r} is not known; allowed: {', '.join(SPLITS)}")


def _open_torchvision(
    cls: type, root: str, download: bool, expected: str, **kwargs
) -> torchvision.datasets.VisionDataset:
    """Build a torchvision dataset; its not-found or download errors become a DataError."""
    try:
        return cls(root, download=download, **kwargs)
    except (RuntimeError, OSError) as error:
        if download:
            raise DataError(
                f"{cls.__name__}: downloading into {root!r} failed ({error}); without internet, "
                f"put the files in {expected} and set data.download=false"
            ) from error
        raise DataError(
            f"{cls.__name__}: files not found or corrupted; expected them in {expected} "
            f"(data.root={root!r}); data.download=true fetches them"
        ) from error


def _cifar(cls: type, root: str, split: str, download: bool) -> ImageDataset:
    _check_split(split)
    dataset = _open_torchvision(
        cls, root, download, str(Path(root) / cls.base_folder), train=split == "train"
    )
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return ImageDataset(images, labels, list(dataset.classes))


def load_cifar10(root: str, split: str, download: bool = False) -> ImageDataset:
    """CIFAR-10 from torchvision's python-pickle release under ``root/cifar-10-batches-py``.

    Returns uint8 [N, 3, 32, 32] (N = 50,000 train / 10,000 test) and 10 classes.
    """
    return _cifar(torchvision.datasets.CIFAR10, root, split, download)


def load_cifar100(root: str, split: str, download: bool = False) -> ImageDataset:
    """CIFAR-100 (fine labels) from torchvision's release under ``root/cifar-100-python``.

    Returns uint8 [N, 3, 32, 32] (N = 50,000 train / 10,000 test) and 100 classes.
    """
    return _cifar(torchvision.datasets.CIFAR100, root, split, download)


def load_stl10(root: str, split: str, download: bool = False) -> ImageDataset:
    """STL-10 labelled splits from torchvision's binary release under ``root/stl10_binary``.

    Returns uint8 [N, 3, 96, 96] (N = 5,000 train / 8,000 test), 10 classes; the
    unlabelled split is not loaded.
    """
    _check_split(split)
    cls = torchvision.datasets.STL10
    dataset = _open_torchvision(cls, root, download, str(Path(root) / cls.base_folder), split=split)
    images = torch.from_numpy(np.ascontiguousarray(dataset.data))
    labels = torch.from_numpy(dataset.labels.astype(np.int64))
    return ImageDataset(images, labels, list(getattr(dataset, "classes", STL10_CLASSES)))


def load_fashion_mnist(root: str, split: str, download: bool = False) -> ImageDataset:
    """Fashion-MNIST through torchvision, grey repeated to 3 channels.

    Returns uint8 [N, 3, 28, 28] (N = 60,000 train / 10,000 test) and 10 classes.
    torchvision reads the uncompressed IDX files from ``root/FashionMNIST/raw/``. Debian's
    package ``dataset-fashion-mnist`` ships them gzipped in ``/usr/share/datasets/fashion-mnist/``
    (recompressed, so their checksums differ from torchvision's and ``download=true`` would
    not accept them); to use them, unpack them into that layout and keep ``download=false``::

        mkdir -p ROOT/FashionMNIST/raw
        for f in /usr/share/datasets/fashion-mnist/*.gz; do
            gunzip -c "$f" > ROOT/FashionMNIST/raw/"$(basename "$f" .gz)"
        done
    """
    _check_split(split)
    cls = torchvision.datasets.FashionMNIST
    expected = str(Path(root) / cls.__name__ / "raw")
    dataset = _open_torchvision(cls, root, download, expected, train=split == "train")
    images = dataset.data.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return ImageDataset(images, dataset.targets.to(torch.int64), list(dataset.classes))


def _visible(name: str) -> bool:
    """Hidden names (``.ipynb_checkpoints``, ``.DS_Store``, ``._x.jpg``) are not data."""
    return not name.startswith(".")


def _class_folders(split_dir: Path) -> list[str]:
    """The sorted names of the visible folders (or links to folders) in ``split_dir``."""
    try:
        entries = list(os.scandir(split_dir))
    except OSError as error:
        raise DataError(f"{split_dir} cannot be read ({error.strerror})") from None
    return sorted(entry.name for entry in entries if _visible(entry.name) and entry.is_dir())


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _image_files(class_dir: Path, outside: set[tuple[int, int]]) -> list[Path]:
    """The image files under ``class_dir`` in ImageFolder's order (directories by path, then
    names), hidden files and folders left out. Links to folders are followed, but never into a
    folder already visited or into one of ``outside`` (the split and data folders), so a link
    loop ends and no folder is listed twice."""
    visited = set(outside)
    folders: list[tuple[str, list[str]]] = []
    pending = [class_dir]
    while pending:
        folder = pending.pop()
        try:
            identity = _identity(folder)
            entries = list(os.scandir(folder))
        except OSError:
            continue
        if identity in visited:
            continue
        visited.add(identity)
        names, subfolders = [], []
        for entry in sorted(entries, key=lambda e: e.name):
            if not _visible(entry.name):
                continue
            if entry.is_dir():
                subfolders.append(folder / entry.name)
            elif torchvision.datasets.folder.has_file_allowed_extension(entry.name, IMG_EXTENSIONS):
                names.append(entry.name)
        folders.append((str(folder), names))
        pending.extend(reversed(subfolders))  # depth first, by name: which of two paths to a folder is kept does not vary
    return [Path(folder) / name for folder, names in sorted(folders) for name in names]


def _list_imagefolder(root: Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """The split's image files (ImageFolder order: by class, then by path), labels, classes.

    Labels are indices of the sorted class folder names, so train and test must hold the same
    class folders (a difference is an error naming it, never a silent shift of labels). Hidden
    files and folders are ignored; a file reached twice (through links) is listed once, and one
    reached from two class folders is an error, its label being ambiguous.
    """
    split_dir = root / split
    layout = f"expected {root}/{split}/<class>/<image>"
    if not root.is_dir():
        raise DataError(f"data.root {root} does not exist; {layout}")
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} does not exist; {layout}")
    classes = _class_folders(split_dir)
    if not classes:
        raise DataError(f"{split_dir} holds no class folders; {layout}")
    other = root / next(s for s in SPLITS if s != split)
    if other.is_dir():
        other_classes = _class_folders(other)
        if other_classes != classes:
            differences = [f"only in {where.name}: {', '.join(sorted(set(mine) - set(theirs)))}"
                           for where, mine, theirs in ((split_dir, classes, other_classes),
                                                       (other, other_classes, classes))
                           if set(mine) - set(theirs)]
            raise DataError(
                f"{split_dir} and {other} hold different class folders ({'; '.join(differences)}); labels "
                f"are indices of the sorted class names, so both splits must hold the same class folders"
            )
    files: list[Path] = []
    labels: list[int] = []
    owner: dict[tuple[int, int], tuple[int, Path]] = {}
    outside = {_identity(root), _identity(split_dir)}
    for label, name in enumerate(classes):
        for path in _image_files(split_dir / name, outside):
            try:
                identity = _identity(path)
            except OSError:  # a dangling link: listed, and named when it fails to decode
                identity = None
            if identity is not None and identity in owner:
                first_label, first = owner[identity]
                if first_label == label:
                    continue
                raise DataError(
                    f"{path} and {first} are the same file, in class folders {classes[first_label]!r} and "
                    f"{name!r}; its label is ambiguous: keep it in one class folder"
                )
            if identity is not None:
                owner[identity] = (label, path)
            files.append(path)
            labels.append(label)
    if not files:
        raise DataError(
            f"{split_dir} holds no images; {layout} with extensions {', '.join(IMG_EXTENSIONS)}"
        )
    if len(classes) < 2:
        raise DataError(
            f"{split_dir} has one class folder ({classes[0]!r}); "
            f"an ImageFolder needs at least 2 classes: {layout}"
        )
    empty = sorted(set(classes) - {classes[label] for label in labels})
    if empty:
        raise DataError(
            f"{split_dir}: class folders {empty} hold no images; "
            f"every class folder needs at least one"
        )
    return files, labels, classes


def _tree_key(split_dir: Path, files: list[Path], classes: list[str]) -> str:
    """Hash of the file list, sizes and modification times: any change re-decodes the split."""
    digest = hashlib.sha256(f"format {CACHE_FORMAT}\n{classes}\n".encode())
    for path in files:
        stat = path.stat()
        line = f"{path.relative_to(split_dir)}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
        digest.update(line.encode())
    return digest.hexdigest()


def _user_cache_dir(root: Path, cache_dir: str | None) -> Path:
    """``cache_dir`` (or ``~/.cache/bayesncl_pyro``) / ``<root name>-<hash of absolute root>``."""
    base = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "bayesncl_pyro"
    root_hash = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return base / f"{root.resolve().name}-{root_hash}"


def _cache_paths(root: Path, split: str, cache_dir: str | None) -> list[Path]:
    """Where a cache may be, in order of preference: next to the data, then the user cache."""
    user_path = _user_cache_dir(root, cache_dir) / f"{split}.pt"
    if cache_dir is not None:
        return [user_path]
    return [root / CACHE_FOLDER / f"{split}.pt", user_path]


def _read_cache(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        cache = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unreadable cache is re-made, not fatal
        warnings.warn(f"ignoring unreadable image cache {path}: {error}", stacklevel=2)
        return None
    if not isinstance(cache, dict) or cache.get("key") != key:
        return None
    if not isinstance(cache.get("images"), torch.Tensor) or not isinstance(cache.get("skipped"), list):
        warnings.warn(f"ignoring the image cache {path}: it lacks its images or its list of skipped files",
                      stacklevel=2)
        return None
    return cache


def _write_cache(paths: list[Path], cache: dict) -> Path | None:
    """Save to the first writable place; a read-only data tree falls back to the user cache."""
    errors = []
    for path in paths:
        try:
            return atomic_torch_save(path, cache)
        except OSError as error:
            errors.append(f"{path}: {error}")
    warnings.warn(
        f"could not write the image cache ({'; '.join(errors)}); the next load decodes again", stacklevel=2
    )
    return None


def _decode_file(path: Path, reduce_to: int | None = None) -> torch.Tensor:
    """One image file -> uint8 [3, H, W] RGB: :func:`~bayesncl_pyro.data.image_input.decode_image_file`
    (16-bit scaled to 8, the pixel limit checked before decoding; a large JPEG decoded by libjpeg
    at a reduced scale whose sides stay at least ``reduce_to``, the aspect ratio kept)."""
    return decode_image_file(path, reduce_to=reduce_to)


def _to_size(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 [3, H, W] -> [3, size, size] (bilinear, antialiased); unchanged without ``size`` or
    when it is that size already."""
    if size is None or image.shape[-2:] == (size, size):
        return image
    return resize(image, [size, size], antialias=True)


def _sized_key(key: str, size: int | None) -> str:
    """The cache key of a tree stored at ``size`` (the tree's own key when kept at its own size)."""
    return key if size is None else hashlib.sha256(f"{key}\nsize {size}".encode()).hexdigest()


def _decode_workers() -> int:
    """Threads for decoding; ``decode_image`` releases the GIL, so they overlap on several cores."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _error_text(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def _decode_reference(
    files: list[Path], split_dir: Path, size: int | None = None
) -> tuple[int, torch.Tensor, list[tuple[Path, str]]]:
    """The first decodable file's index and image (its size is the split's size), and the
    corrupt files before it."""
    corrupt: list[tuple[Path, str]] = []
    for index, path in enumerate(files):
        try:
            return index, _to_size(_decode_file(path, size), size), corrupt
        except Exception as error:
            corrupt.append((path, _error_text(error)))
    raise DataError(
        f"{split_dir}: none of its {len(files)} image files can be decoded "
        f"(first: {corrupt[0][0]}: {corrupt[0][1]})"
    )


def _decode_all(files: list[Path], split_dir: Path,
                size: int | None = None) -> tuple[torch.Tensor, list[tuple[Path, str]]]:
    """Decode every file into one uint8 [N, 3, H, W] tensor, in parallel chunks, each image
    resized to ``size`` square when that is given.

    Returns the tensor (rows of corrupt files left zero) and the corrupt files, in file order,
    with their errors. Without ``size`` all images must share the size of the first decodable one.
    """
    first, reference, corrupt = _decode_reference(files, split_dir, size)
    images = torch.zeros((len(files), *reference.shape), dtype=torch.uint8)
    images[first] = reference
    wrong_size: dict[int, torch.Size] = {}
    failed: dict[int, str] = {}

    def decode_chunk(start: int) -> int:
        stop = min(start + DECODE_CHUNK, len(files))
        for index in range(start, stop):
            try:
                image = _to_size(_decode_file(files[index], size), size)
            except Exception as error:
                failed[index] = _error_text(error)
                continue
            if image.shape != reference.shape:
                wrong_size[index] = image.shape
            else:
                images[index] = image
        return stop - start

    with progress_bar(total=len(files), initial=first + 1, desc=f"decoding {split_dir}", unit="img") as progress, \
            ThreadPoolExecutor(_decode_workers()) as pool:
        for decoded in pool.map(decode_chunk, range(first + 1, len(files), DECODE_CHUNK)):
            progress.update(decoded)

    if wrong_size:
        index = min(wrong_size)
        raise DataError(
            f"{files[index]} is {_size(wrong_size[index])} but {files[first]} is "
            f"{_size(reference.shape)}; all images of an ImageFolder split must share one size "
            f"({len(wrong_size)} file(s) differ); set data.image_size=N (image_size=N in Python) to "
            f"resize every image to NxN as it is decoded, or resize them beforehand"
        )
    return images, corrupt + [(files[index], failed[index]) for index in sorted(failed)]


def _size(shape: torch.Size) -> str:
    return f"{shape[-1]}x{shape[-2]} (width x height)"


def _report_corrupt(split_dir: Path, corrupt: list[tuple[Path, str]], skip_corrupt: bool) -> None:
    if not corrupt:
        return
    if not skip_corrupt:
        path, error = corrupt[0]
        raise DataError(
            f"{path} is not a readable image ({error}); "
            f"{len(corrupt)} file(s) in {split_dir} fail. "
            f"Remove or replace them, or set data.skip_corrupt=true to skip them"
        )
    names = ", ".join(str(path) for path, _ in corrupt[:5])
    more = f" and {len(corrupt) - 5} more" if len(corrupt) > 5 else ""
    warnings.warn(f"skipped {len(corrupt)} corrupt image file(s) in {split_dir}: {names}{more}", stacklevel=2)


def _labels_match(cache: dict, split_dir: Path, files: list[Path], labels: list[int]) -> bool:
    """Whether a cache's labels are the listing's (less its skipped files): the key covers the
    file list, not the labels saved beside it."""
    skipped = {split_dir / name for name in cache["skipped"]}
    expected = torch.as_tensor([label for path, label in zip(files, labels) if path not in skipped],
                               dtype=torch.int64)
    stored = cache.get("labels")
    return isinstance(stored, torch.Tensor) and stored.shape == expected.shape and bool((stored == expected).all())


def _cache_problem(cache: dict, classes: list[str], image_size: int | None) -> str | None:
    """What in a cache contradicts the listing it is keyed by, or None: its classes, the type and
    shape of its images (uint8 [N, 3, S, S] at ``image_size``, one row a label)."""
    if cache.get("classes") != classes:
        return f"its classes {shown(cache.get('classes'))} are not the class folders {shown(classes)}"
    images, labels = cache.get("images"), cache.get("labels")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[1] != 3:
        got = f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        return f"its images are {got}, not uint8 [N, 3, H, W]"
    if image_size is not None and images.shape[-2:] != (image_size, image_size):
        return f"its images are {images.shape[-1]}x{images.shape[-2]}, not {image_size}x{image_size}"
    if not isinstance(labels, torch.Tensor) or images.shape[0] != labels.shape[0]:
        return f"it holds {images.shape[0]} images for {shown(getattr(labels, 'shape', labels))} labels"
    return None


def load_imagefolder(
    root: str, split: str, skip_corrupt: bool = False, cache_dir: str | None = None,
    image_size: int | None = None, cache_used: list[Path] | None = None,
) -> ImageDataset:
    """A ``root/<split>/<class>/<image>`` tree, decoded once and cached.

    Returns uint8 [N, 3, H, W]; labels are ImageFolder's class indices (class folders sorted
    by name), so train and test must hold the same class folders (a ``val`` folder can be
    linked as ``test``). With ``image_size`` every image is resized to ``image_size`` square as
    it is decoded (bilinear, antialiased), so images of any size load; without it all images
    must share one size, which they keep.

    The stacked tensor is saved to ``root/.bayesncl-cache/<split>.pt``, or, when ``cache_dir``
    is given or ``root`` is not writable, to ``<cache_dir or ~/.cache/bayesncl_pyro>/
    <root name>-<hash of absolute root>/<split>.pt``. The cache stores a hash of the file
    list, sizes and modification times; a load whose tree no longer matches decodes again.
    Corrupt files raise a DataError naming the first; ``skip_corrupt=True`` leaves them out
    with a warning. ``cache_used``, when given, gets the cache file read or written appended
    (nothing when none could be written).
    """
    _check_split(split)
    root_path = Path(root).expanduser()
    split_dir = root_path / split
    files, labels, classes = _list_imagefolder(root_path, split)
    tree_key = _tree_key(split_dir, files, classes)
    key = _sized_key(tree_key, image_size)
    cache_paths = _cache_paths(root_path, split, cache_dir)

    for path in cache_paths:
        cache = _read_cache(path, key)
        if cache is None and image_size is not None:  # a tree cached at its own size, which is image_size
            cache = _read_cache(path, tree_key)
            if cache is not None and cache["images"].shape[-2:] != (image_size, image_size):
                cache = None
        if cache is None or (cache["skipped"] and not skip_corrupt):
            continue
        problem = _cache_problem(cache, classes, image_size)
        if problem is not None:
            warnings.warn(f"the image cache {path} does not match the listing of {split_dir} ({problem}); decoding "
                          "again", stacklevel=2)
            continue
        if not _labels_match(cache, split_dir, files, labels):
            warnings.warn(f"the labels in the image cache {path} do not match the class folders of {split_dir}; "
                          f"decoding again", stacklevel=2)
            continue
        skipped = [(split_dir / name, "skipped when cached") for name in cache["skipped"]]
        _report_corrupt(split_dir, skipped, skip_corrupt=True)
        if cache_used is not None:
            cache_used.append(path)
        return ImageDataset(cache["images"], cache["labels"], list(cache["classes"]))

    resizing = f", resized to {image_size}x{image_size} (data.image_size)" if image_size is not None else ""
    status(f"decoding {len(files)} images of {split_dir}{resizing}; cached for the next run")
    with warnings.catch_warnings():  # decode_image's notice about torchcodec, once per file
        warnings.filterwarnings("ignore", TORCHVISION_IO_DEPRECATION, DeprecationWarning)
        images, corrupt = _decode_all(files, split_dir, image_size)
    _report_corrupt(split_dir, corrupt, skip_corrupt)
    label_tensor = torch.as_tensor(labels, dtype=torch.int64)
    if corrupt:
        bad = {path for path, _ in corrupt}
        keep = torch.tensor([path not in bad for path in files])
        images, label_tensor = images[keep], label_tensor[keep]
    written = _write_cache(
        cache_paths,
        {
            "key": key,
            "images": images,
            "labels": label_tensor,
            "classes": classes,
            "skipped": [str(path.relative_to(split_dir)) for path, _ in corrupt],
        },
    )
    if cache_used is not None and written is not None:
        cache_used.append(written)
    return ImageDataset(images, label_tensor, classes)


VISION_DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,
    "fashion_mnist": load_fashion_mnist,
    "imagefolder": load_imagefolder,
}
