"""An ImageFolder split decoded into an on-disk :mod:`image store <.image_store>`, then read
memory-mapped (or into memory when that is asked for).

The decode never holds the split in memory: worker processes (one per core) each decode a chunk
of files and write its rows straight into the store's pixel file; a chunk is marked done once it
is on disk, so a killed decode continues with the chunks left. Progress shows images/s and the
time left. Corrupt files are named as by :func:`~bayesncl_pyro.data.vision.load_imagefolder`
(an error naming the first, or ``data.skip_corrupt=true`` to leave them out with a warning).

Two geometries (recorded in the manifest; one store per geometry and size):

* ``crop``: the short side is resized to ``S`` (bilinear, antialiased) and the centre ``S×S``
  kept: the stored size of ``data.store_size``, from which training takes random resized crops
  to ``data.image_size`` (real pixels, as in the standard ImageNet recipe; evaluation resizes
  the ``S×S`` image to ``data.image_size``).
* ``square``: the whole image resized to ``S×S`` (aspect not kept), what ``data.image_size``
  alone does today: pixels equal to ``load_imagefolder(..., image_size=S)`` bit for bit.

Nothing is lost, hung or unbounded on the way: the pixel file is allocated on disk before the
decode (a full disk is one error naming it and the space needed), workers die with the process
that started them (a killed ``bayesncl-prepare`` leaves none behind holding the lock), a run that
waits for the lock says which, and an image whose short-side resize would exceed the pixel limit
is centre-cropped to a square first. A store beside a read-only data folder is read where it is.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2.functional import center_crop, resize

from bayesncl_pyro.config.errors import DataError
from bayesncl_pyro.data.dataset import ImageDataset
from bayesncl_pyro.data.image_input import max_image_pixels
from bayesncl_pyro.data.image_store import (PIXELS, Listing, StoreWriter, create_store, map_pixels, open_store,
                                            read_manifest, resume_store)
from bayesncl_pyro.data.progress import progress
from bayesncl_pyro.data.status import status
from bayesncl_pyro.storage.shared_lock import exclusive
from bayesncl_pyro.data import vision
from bayesncl_pyro.data.vision import (CACHE_FOLDER, TORCHVISION_IO_DEPRECATION, _check_split,
                                       _error_text, _list_imagefolder, _report_corrupt, _to_size, _user_cache_dir)

GEOMETRIES = ("crop", "square")
CHUNK = 512
"""Images per chunk: the unit of parallel work and of resuming."""


def fit(image: torch.Tensor, geometry: str, size: int, max_pixels: int | None = None) -> torch.Tensor:
    """uint8 [3, H, W] -> [3, size, size] in the store's geometry (see the module docstring). In
    ``crop``, an image whose short-side resize would hold more than ``max_pixels`` (default
    :func:`~bayesncl_pyro.data.image_input.max_image_pixels`: 890000 x 100 at 256 would be
    2.3 G x 256) is centre-cropped to a square first: the same centre, never that intermediate."""
    if geometry == "square":
        return _to_size(image, size)
    short, long = min(image.shape[-2:]), max(image.shape[-2:])
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if short != size and size * (size * long // short) > limit:
        image = center_crop(image, [short, short])
    if min(image.shape[-2:]) != size:
        image = resize(image, [size], antialias=True)
    return center_crop(image, [size, size]) if image.shape[-2:] != (size, size) else image


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when its parent dies (Linux), even by SIGKILL: a killed
    decode must leave no worker behind holding the store's memory and lock."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _init_worker(parent: int, inherited: tuple[int, ...] = ()) -> None:
    """Worker set-up: die with ``parent``, close the descriptors of ``inherited`` (the lock's, so
    only the parent holds the lock), one torch thread, no decode notice."""
    _die_with_parent(parent)
    for fd in inherited:
        try:
            os.close(fd)
        except OSError:
            pass
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", TORCHVISION_IO_DEPRECATION, DeprecationWarning)


def decode_chunk(pixels: str, shape: tuple[int, ...], rows: range, paths: list[str], geometry: str
                 ) -> list[tuple[int, str]]:
    """Decode ``paths`` into ``rows`` of the pixel file; returns the corrupt ones (row, error).
    Rows of corrupt files stay zero. Runs in a worker process (or in the caller's)."""
    images = map_pixels(Path(pixels), tuple(shape))
    corrupt = []
    size = shape[-1]
    for row, path in zip(rows, paths):
        try:
            image = fit(vision._decode_file(Path(path), size), geometry, size)
        except Exception as error:
            corrupt.append((row, _error_text(error)))
            continue
        images[row] = image.numpy()
    images.flush()
    del images
    return corrupt


def _context():
    """Fork where there is fork (as torch's DataLoader does: no re-import of the caller's main
    module, so scripts without a ``__main__`` guard and notebooks work), else spawn."""
    return get_context("fork") if sys.platform.startswith("linux") else get_context("spawn")


def workers() -> int:
    """Every core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _decode(writer: StoreWriter, paths: list[str], split_dir: Path, processes: int,
            lock: int = -1) -> list[tuple[int, str]]:
    """Decode every chunk without a marker; returns the corrupt files of all chunks (row, error).
    ``lock`` is the descriptor of the held decode lock, which the workers close."""
    done = writer.done_chunks()
    pending = [c for c in range(writer.num_chunks) if c not in done]
    pixels, shape, geometry = str(writer.folder / PIXELS), writer.shape, writer.manifest["geometry"]
    finished = sum(len(writer.chunk_rows(c)) for c in done)
    corrupt = [tuple(item) for items in done.values() for item in items]
    if finished:
        status(f"resuming the decode of {split_dir}: {finished} of {shape[0]} images are in {writer.folder}")
    bar = progress(total=shape[0], initial=finished, desc=f"decoding {split_dir.name}", unit="img",
                   dynamic_ncols=True, smoothing=0.1)

    def job(chunk: int) -> tuple:
        rows = writer.chunk_rows(chunk)
        return pixels, shape, rows, paths[rows.start:rows.stop], geometry

    try:
        if processes <= 1 or len(pending) <= 1:
            with warnings.catch_warnings():
                _init_worker_warnings()
                for chunk in pending:
                    found = decode_chunk(*job(chunk))
                    writer.mark_done(chunk, found)
                    corrupt += found
                    bar.update(len(writer.chunk_rows(chunk)))
        else:
            with ProcessPoolExecutor(min(processes, len(pending)), mp_context=_context(),
                                     initializer=_init_worker,
                                     initargs=(os.getpid(), (lock,) if lock >= 0 else ())) as pool:
                running = {}
                queue = list(reversed(pending))
                try:
                    while queue or running:
                        while queue and len(running) < 2 * processes:  # a bounded queue of submitted chunks
                            chunk = queue.pop()
                            running[pool.submit(decode_chunk, *job(chunk))] = chunk
                        finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
                        for future in finished_now:
                            chunk = running.pop(future)
                            found = future.result()
                            writer.mark_done(chunk, found)
                            corrupt += found
                            bar.update(len(writer.chunk_rows(chunk)))
                except BaseException:
                    for future in running:
                        future.cancel()
                    raise
    finally:
        bar.close()
    return sorted(corrupt)


def _init_worker_warnings() -> None:
    warnings.filterwarnings("ignore", TORCHVISION_IO_DEPRECATION, DeprecationWarning)


def _writable(folder: Path) -> bool:
    """Whether a store can be written at ``folder`` (its nearest existing parent is writable)."""
    for parent in folder.parents:
        if parent.is_dir():
            return os.access(parent, os.W_OK)
    return False


def _complete(folder: Path) -> bool:
    manifest = read_manifest(folder)
    return manifest is not None and bool(manifest.get("complete"))


def store_folder(root: Path, split: str, geometry: str, size: int, cache_dir: str | None) -> Path:
    """Where the store of a split lives: ``root/.bayesncl-cache/<split>-<geometry><size>.store``
    (also when ``root`` is read-only but a complete store is there), or under the user cache
    (``cache_dir`` or ``~/.cache/bayesncl_pyro``) when ``cache_dir`` is given or ``root`` cannot
    be written."""
    name = f"{split}-{geometry}{size}.store"
    if cache_dir is None:
        beside = root / CACHE_FOLDER / name
        if _writable(beside) or _complete(beside):
            return beside
    return _user_cache_dir(root, cache_dir) / name


def listing_of(split_dir: Path, files: list[Path], labels: list[int], classes: list[str]) -> Listing:
    stats = [path.stat() if path.exists() else None for path in files]
    return Listing([str(path.relative_to(split_dir)) for path in files],
                   [s.st_size if s else -1 for s in stats], [s.st_mtime_ns if s else -1 for s in stats],
                   list(labels), list(classes))


def load_imagefolder_store(root: str, split: str, size: int, geometry: str = "crop", skip_corrupt: bool = False,
                           cache_dir: str | None = None, in_memory: bool = False, processes: int | None = None,
                           chunk: int = CHUNK) -> ImageDataset:
    """A ``root/<split>/<class>/<image>`` tree as an ImageDataset whose images are the store's
    memory-mapped pixels (uint8 [N, 3, size, size]), decoding into the store first when it is
    missing, unfinished (it resumes) or of another listing (the tree changed).

    ``geometry`` is ``crop`` or ``square`` (module docstring); ``in_memory`` reads the store into
    memory instead of mapping it; ``processes`` decode in parallel (default: every core).
    """
    _check_split(split)
    if geometry not in GEOMETRIES:
        raise DataError(f"geometry={geometry!r} is not known; allowed: {', '.join(GEOMETRIES)}")
    root_path = Path(root).expanduser()
    split_dir = root_path / split
    files, labels, classes = _list_imagefolder(root_path, split)
    listing = listing_of(split_dir, files, labels, classes)
    key = listing.key(geometry, size)
    folder = store_folder(root_path, split, geometry, size, cache_dir)
    if not _writable(folder):  # a complete store beside read-only data: nobody rewrites it, no lock needed
        opened = _open(folder, key, listing, split_dir, skip_corrupt, in_memory, size)
        if opened is not None:
            return opened
        folder = _user_cache_dir(root_path, cache_dir) / folder.name
    try:
        with _decode_lock(folder) as lock:
            opened = _open(folder, key, listing, split_dir, skip_corrupt, in_memory, size)
            if opened is not None:
                return opened
            return _decode_and_open(folder, key, listing, files, split_dir, geometry, size, skip_corrupt, in_memory,
                                    processes, chunk, lock)
    except _NoLocks as refused:
        opened = _open(folder, key, listing, split_dir, skip_corrupt, in_memory, size)
        if opened is not None:  # complete and of this tree: reading it needs no lock
            return opened
        raise DataError(str(refused)) from None


class _NoLocks(DataError):
    """The store's file system has no locks (a complete store there is still read)."""


def _decode_lock(folder: Path):
    """An exclusive lock on ``<folder>.lock`` while a process checks and decodes the store: the
    ranks of a ``torchrun`` job (on one machine, or on a shared file system that supports
    ``flock``) start together; one decodes, the others wait (saying so, with the path and the
    holder's process id) and then read what it wrote. Yields the lock's descriptor. A file system
    without locks raises _NoLocks: two ranks decoding into one store would overwrite each other."""
    path = folder.with_name(folder.name + ".lock")
    return exclusive(path, "decoding or reading this store", record_holder=True,
                     refuse_unlocked=lambda message: _NoLocks(
                         f"{message}, and the store there is missing, unfinished or of another tree; decode it once "
                         "where locks work (mount with locks: NFS without nolock, Lustre with -o flock) or give "
                         "data.cache_dir a folder on a local disk"))


def _decode_and_open(folder: Path, key: str, listing: Listing, files: list[Path], split_dir: Path, geometry: str,
                     size: int, skip_corrupt: bool, in_memory: bool, processes: int | None,
                     chunk: int, lock: int = -1) -> ImageDataset:
    writer = resume_store(folder, key)
    if writer is None:
        manifest = read_manifest(folder)
        why = "" if manifest is None else " (the tree changed since it was decoded)" \
            if manifest.get("key") != key else ""
        status(f"decoding {len(files)} images of {split_dir} into {folder}{why}, {size}x{size} ({geometry})")
        writer = create_store(folder, listing, geometry, size, chunk)
    with warnings.catch_warnings():
        _init_worker_warnings()
        corrupt = _decode(writer, [str(path) for path in files], split_dir, processes or workers(), lock)
    named = [(files[row], error) for row, error in corrupt]
    _report_corrupt(split_dir, named, skip_corrupt)
    keep = np.ones(len(files), dtype=bool)
    keep[[row for row, _ in corrupt]] = False
    writer.finish(np.asarray(listing.labels, dtype=np.int64), [listing.files[row] for row, _ in corrupt], keep)
    opened = _open(folder, key, listing, split_dir, True, in_memory, size)
    if opened is None:
        raise DataError(f"the store {folder} could not be read back after decoding; delete it and run again")
    return opened


def _open(folder: Path, key: str, listing: Listing, split_dir: Path, skip_corrupt: bool,
          in_memory: bool, size: int | None = None) -> ImageDataset | None:
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("key") != key or not manifest.get("complete"):
        return None
    skipped = set(manifest.get("skipped", []))
    if skipped and not skip_corrupt:  # the files left out when it was decoded are still there, still corrupt
        _report_corrupt(split_dir, [(split_dir / name, "not decodable when the store was written")
                                    for name in manifest["skipped"]], False)
    expected = np.asarray([label for name, label in zip(listing.files, listing.labels) if name not in skipped],
                          dtype=np.int64)
    store = open_store(folder, key, expected, in_memory, listing.classes, size)
    if store is None:
        return None
    if store.skipped:
        _report_corrupt(split_dir, [(split_dir / name, "skipped when decoded") for name in store.skipped], True)
    return ImageDataset(store.images, store.labels, store.classes)
