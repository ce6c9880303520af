"""The on-disk image store: one split as a memory-mapped uint8 array, written piece by piece.

A store is a folder::

    manifest.json   what the store holds: format, the listing key, geometry, shape, classes,
                    chunk size, skipped files, whether it is complete, the name of the pixel file
    files.tsv       the listing it was decoded from: path, size, mtime_ns, label (one line a file)
    images.u8       uint8 [N, 3, S, S], row-major, no header (allocated in full before it is written)
    labels.npy      int64 [N] (written when the store is complete)
    chunks/         one marker ``NNNNNNNN.json`` per finished chunk of rows (its corrupt files)

Rows are written in place by any number of processes; a chunk's marker is written (atomically)
after its rows are flushed, so a killed writer leaves markers only for chunks that are on disk
and the next writer decodes the rest. When every chunk is done the labels and a manifest with
``complete: true`` are written last: a store without that flag is never read for training.

Readers map the pixel file copy-on-write (``MAP_PRIVATE``, opened read-only): the file is never
modified, pages come from the page cache and are shared by every process on the machine that
maps it (the ranks of a ``torchrun`` job, evaluation, the browser), and the process holds no
private copy. A gather ``images[index]`` reads only the rows it names.

Nothing in a store is trusted beyond what the listing says: the manifest's fields (classes,
shape, pixel file) and the labels must be those of the listing, or the store is refused as
changed by hand. Its files are read only when they are regular files of a sane size (a FIFO or
device in their place neither hangs nor fills the memory) and written without following links.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from bayesncl_pyro.config.errors import DataError, StorageError, shown
from bayesncl_pyro.storage.allocation import allocate
from bayesncl_pyro.storage.atomic import (atomic_write_file, atomic_write_json, atomic_write_text, link_error,
                                          make_directory, open_own_file, read_regular, refuse_link, storage_error)

STORE_FORMAT = 2
MANIFEST = "manifest.json"
LISTING = "files.tsv"
PIXELS = "images.u8"
KEPT_PIXELS = "images.kept.u8"
"""The pixel file of a store whose corrupt rows were left out (see :meth:`StoreWriter.finish`)."""
LABELS = "labels.npy"
CHUNKS = "chunks"
MANIFEST_LIMIT = 256 << 20
"""Largest manifest read (256 MiB): its list of skipped files is the only part that grows."""
NPY_HEADER = 1 << 16
"""Room for the header of ``labels.npy`` above its 8 bytes a row."""


def _changed(folder: Path, what: str) -> DataError:
    return DataError(f"{what}; the store was changed after it was written: delete {folder} to decode the split "
                     "again")


def manifest_problem(manifest: dict) -> str | None:
    """What is wrong with the fields of a manifest (their types and ranges), or None."""
    shape = manifest.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(type(n) is int and n >= 0 for n in shape)
            and shape[1] == 3 and shape[2] == shape[3] >= 1):
        return f"its field 'shape' is {shown(shape)}; allowed: [N, 3, S, S] with N >= 0 and S >= 1"
    classes = manifest.get("classes")
    if not (isinstance(classes, list) and all(isinstance(name, str) for name in classes)):
        return f"its field 'classes' is {shown(classes)}; allowed: a list of class folder names"
    if manifest.get("pixels") not in (PIXELS, KEPT_PIXELS):
        return f"its field 'pixels' is {shown(manifest.get('pixels'))}; allowed: {PIXELS}, {KEPT_PIXELS}"
    chunk = manifest.get("chunk")
    if type(chunk) is not int or chunk < 1:
        return f"its field 'chunk' is {shown(chunk)}; allowed: an integer >= 1"
    skipped = manifest.get("skipped")
    if not (isinstance(skipped, list) and all(isinstance(name, str) for name in skipped)):
        return f"its field 'skipped' is {shown(skipped)}; allowed: a list of file names"
    return None


def check_manifest(folder: Path, manifest: dict, count: int, classes: list[str] | None = None,
                   size: int | None = None) -> None:
    """Raise DataError unless the manifest of the store in ``folder`` is well formed and holds
    ``count`` rows of ``classes`` at ``size`` (each checked when given)."""
    problem = manifest_problem(manifest)
    shape = manifest.get("shape")
    if problem is None and shape[0] != count:
        problem = f"its field 'shape' holds {shape[0]} images where the listing gives {count}"
    if problem is None and size is not None and shape[2] != size:
        problem = f"its field 'shape' holds images of {shape[2]}x{shape[3]} where the store is of {size}x{size}"
    if problem is None and classes is not None and manifest["classes"] != list(classes):
        problem = f"its field 'classes' is {shown(manifest['classes'])} where the listing gives {shown(classes)}"
    if problem is not None:
        raise _changed(folder, f"{folder / MANIFEST} does not match the listing: {problem}")


def map_pixels(path: Path, shape: tuple[int, ...], mode: str = "r+") -> np.memmap:
    """The pixel file ``path`` mapped as uint8 ``shape``: writable (``r+``) or copy-on-write (``c``);
    opened without following a link, and only when it is a regular file of exactly that size."""
    flags = os.O_RDWR if mode == "r+" else os.O_RDONLY
    fd = open_own_file(path, flags, 0, action="map", doing="open", harm="writing it would change that file",
                       refusal="cannot map the store's pixel file {path}: {what}")
    with os.fdopen(fd, "r+b" if mode == "r+" else "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size != int(np.prod(shape)):
            raise StorageError(f"the store's pixel file {path} is {size} bytes where its shape "
                               f"{list(shape)} needs {int(np.prod(shape))}")
        return np.memmap(handle, dtype=np.uint8, mode=mode, shape=tuple(shape))


def _new_pixels(path: Path, nbytes: int) -> None:
    """A new pixel file of ``nbytes`` zeros at ``path``, its blocks allocated (never through a link)."""
    fd = open_own_file(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666, action="create", doing="create",
                       harm="writing it would change that file",
                       refusal="cannot create the store's pixel file {path}: {what}")
    try:
        allocate(fd, path, nbytes, "store's pixel file")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Listing:
    """What a store is decoded from: files (relative to the split folder), their sizes and
    modification times, labels and class names. Its :meth:`key` changes with any of them."""

    files: list[str]
    sizes: list[int]
    mtimes: list[int]
    labels: list[int]
    classes: list[str]

    def lines(self) -> Iterable[str]:
        for name, size, mtime, label in zip(self.files, self.sizes, self.mtimes, self.labels):
            yield f"{name}\t{size}\t{mtime}\t{label}\n"

    def key(self, geometry: str, size: int) -> str:
        digest = hashlib.sha256(f"store {STORE_FORMAT}\n{geometry} {size}\n{json.dumps(self.classes)}\n".encode())
        for line in self.lines():
            digest.update(line.encode())
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class StoreWriter:
    """A store being written: rows go straight to ``images.u8`` (see :meth:`rows`), chunks are
    marked done one by one, :meth:`finish` makes it readable."""

    folder: Path
    manifest: dict

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.manifest["shape"])  # type: ignore[return-value]

    @property
    def chunk(self) -> int:
        return int(self.manifest["chunk"])

    @property
    def num_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk)

    def chunk_rows(self, chunk: int) -> range:
        return range(chunk * self.chunk, min((chunk + 1) * self.chunk, self.shape[0]))

    def rows(self) -> np.memmap:
        """The pixel file, writable, [N, 3, S, S]."""
        return map_pixels(self.folder / PIXELS, self.shape)

    def done_chunks(self) -> dict[int, list[list]]:
        """Finished chunks -> their corrupt files ([index, error] pairs)."""
        done = {}
        for marker in (self.folder / CHUNKS).glob("*.json"):
            try:
                done[int(marker.stem)] = json.loads(marker.read_text())
            except (ValueError, OSError):  # a marker that cannot be read: that chunk is decoded again
                continue
        return done

    def mark_done(self, chunk: int, corrupt: list[tuple[int, str]]) -> None:
        """Record a chunk whose rows are flushed, with its corrupt files (row index, error)."""
        atomic_write_json(self.folder / CHUNKS / f"{chunk:08d}.json", [list(item) for item in corrupt])

    def finish(self, labels: np.ndarray, skipped: list[str], keep: np.ndarray | None = None) -> None:
        """Write the labels and the complete manifest. With ``keep`` (a bool mask of rows) the
        rows not kept (corrupt files) are left out: the kept rows are copied to a new pixel file,
        which the manifest names, before the old one is deleted, so a kill at any point leaves a
        store that either resumes or is complete."""
        pixels = PIXELS
        shape = list(self.shape)
        if keep is not None and not keep.all():
            pixels = KEPT_PIXELS
            source = self.rows()
            kept = np.flatnonzero(keep)

            def copy(path: Path) -> None:
                with open(path, "r+b") as handle:
                    allocate(handle.fileno(), self.folder / pixels, len(kept) * int(np.prod(shape[1:])),
                             "store's pixel file")
                target = np.memmap(path, dtype=np.uint8, mode="r+", shape=(len(kept), *shape[1:]))
                for start in range(0, len(kept), self.chunk):
                    part = kept[start:start + self.chunk]
                    target[start:start + len(part)] = source[part]
                target.flush()
                del target

            atomic_write_file(self.folder / pixels, copy)
            labels, shape[0] = labels[keep], len(kept)

        def save_labels(path: Path) -> None:
            with open(path, "wb") as handle:
                np.save(handle, labels.astype(np.int64))

        atomic_write_file(self.folder / LABELS, save_labels)
        atomic_write_json(self.folder / MANIFEST, {**self.manifest, "shape": shape, "pixels": pixels,
                                                   "skipped": skipped, "complete": True})
        if pixels != PIXELS:
            (self.folder / PIXELS).unlink(missing_ok=True)
        shutil.rmtree(self.folder / CHUNKS, ignore_errors=True)


def read_manifest(folder: Path) -> dict | None:
    """The manifest of the store in ``folder``; None when there is none or it is not JSON of this
    format. Raises StorageError when it is not a regular file or is oversized."""
    path = folder / MANIFEST
    if not os.path.lexists(path):
        return None
    try:
        manifest = json.loads(read_regular(path, "store manifest", MANIFEST_LIMIT))
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == STORE_FORMAT else None


def create_store(folder: Path, listing: Listing, geometry: str, size: int, chunk: int) -> StoreWriter:
    """A new, empty store for ``listing`` (whatever was in ``folder`` is removed): the manifest
    (not complete), the listing and a pixel file of the full size, allocated on disk (the free
    space checked first: a full disk is an error naming the file, never a SIGBUS mid-decode)."""
    refuse_link(folder, "write the store")
    shape = [len(listing), 3, size, size]
    try:
        if folder.exists():
            shutil.rmtree(folder)
    except OSError as error:
        raise storage_error(error, error.filename or folder, "remove the old store") from None
    make_directory(folder / CHUNKS)
    manifest = {"format": STORE_FORMAT, "key": listing.key(geometry, size), "geometry": geometry, "shape": shape,
                "classes": listing.classes, "chunk": chunk, "complete": False, "pixels": PIXELS, "skipped": []}
    atomic_write_text(folder / LISTING, "".join(listing.lines()))
    _new_pixels(folder / PIXELS, int(np.prod(shape)))
    atomic_write_json(folder / MANIFEST, manifest)
    return StoreWriter(folder, manifest)


def resume_store(folder: Path, key: str) -> StoreWriter | None:
    """The unfinished store in ``folder`` decoded from the listing with ``key``, to go on
    writing; None when there is none (or it is of another listing)."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("complete") or manifest.get("key") != key:
        return None
    problem = manifest_problem(manifest)
    if problem is not None:
        raise _changed(folder, f"{folder / MANIFEST} is damaged: {problem}")
    writer = StoreWriter(folder, manifest)
    pixels = folder / PIXELS
    if os.path.islink(pixels):
        raise link_error(pixels, "write the store's pixel file")
    try:
        info = os.lstat(pixels)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size != int(np.prod(writer.shape)):
        return None
    return writer


@dataclass
class OpenedStore:
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: list[str]


def open_store(folder: Path, key: str, expected_labels: np.ndarray, in_memory: bool = False,
               classes: list[str] | None = None, size: int | None = None) -> OpenedStore | None:
    """The complete store in ``folder`` if it was decoded from the listing with ``key`` and its
    labels are ``expected_labels`` (the listing's, less the skipped files); None otherwise (the
    caller decodes again). The pixels are mapped read-only and shared (copy-on-write: a write
    to the tensor stays in this process), or read into memory with ``in_memory``.

    Raises DataError when the store's manifest (its shape, ``classes`` and ``size`` when given)
    or labels contradict its own listing (a store changed by hand), since decoding again would
    hide that; StorageError when one of its files is a link, FIFO or device, or oversized.
    """
    manifest = read_manifest(folder)
    if manifest is None or not manifest.get("complete") or manifest.get("key") != key:
        return None
    check_manifest(folder, manifest, len(expected_labels), classes, size)
    shape = tuple(manifest["shape"])
    pixels = folder / manifest["pixels"]
    if not os.path.lexists(folder / LABELS):
        return None
    data = read_regular(folder / LABELS, "store labels", 8 * len(expected_labels) + NPY_HEADER)
    try:
        labels = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError):
        return None
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise _changed(folder, f"{folder / LABELS} holds {labels.dtype} {list(labels.shape)}, not int64 [N]")
    if labels.shape != expected_labels.shape or not np.array_equal(labels, expected_labels):
        wrong = int(np.flatnonzero(labels != expected_labels)[0]) if labels.shape == expected_labels.shape else None
        where = f" (first at row {wrong}: {labels[wrong]} where the listing gives {expected_labels[wrong]})" \
            if wrong is not None else f" ({labels.shape[0]} labels for {expected_labels.shape[0]} images)"
        raise DataError(f"{folder / LABELS} does not match the class folders of the listing{where}; the store was "
                        f"changed after it was written: delete {folder} to decode the split again")
    try:
        info = os.lstat(pixels)
    except OSError:
        return None
    if stat.S_ISREG(info.st_mode) and info.st_size != int(np.prod(shape)):
        return None
    if shape[0] == 0:
        images = torch.zeros(shape, dtype=torch.uint8)
    else:
        mapped = map_pixels(pixels, shape, "c")
        images = torch.from_numpy(np.array(mapped) if in_memory else mapped)
    return OpenedStore(images, torch.from_numpy(labels.astype(np.int64)), list(manifest["classes"]),
                       list(manifest["skipped"]))
