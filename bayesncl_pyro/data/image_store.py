"""The on-disk image store: one split as a memory-mapped uint8 array, written piece by piece.

A store is a folder::

    manifest.json   what the store holds: format, the listing key, geometry, shape, classes,
                    chunk size, skipped files, whether it is complete, the name of the pixel file
    files.tsv       the listing it was decoded from: path, size, mtime_ns, label (one line a file)
    images.u8       uint8 [N, 3, S, S], row-major, no header (a sparse file while it is written)
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
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from bayesncl_pyro.config.errors import DataError
from bayesncl_pyro.storage.atomic import atomic_write_file, atomic_write_json, atomic_write_text, make_directory

STORE_FORMAT = 2
MANIFEST = "manifest.json"
LISTING = "files.tsv"
PIXELS = "images.u8"
LABELS = "labels.npy"
CHUNKS = "chunks"


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
        return np.memmap(self.folder / PIXELS, dtype=np.uint8, mode="r+", shape=self.shape)

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
            pixels = "images.kept.u8"
            source = self.rows()
            kept = np.flatnonzero(keep)

            def copy(path: Path) -> None:
                target = np.memmap(path, dtype=np.uint8, mode="w+", shape=(len(kept), *shape[1:]))
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
    """The manifest of the store in ``folder``; None when there is none or it cannot be read."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == STORE_FORMAT else None


def create_store(folder: Path, listing: Listing, geometry: str, size: int, chunk: int) -> StoreWriter:
    """A new, empty store for ``listing`` (whatever was in ``folder`` is removed): the manifest
    (not complete), the listing and a sparse pixel file of the full size."""
    if folder.exists():
        shutil.rmtree(folder)
    make_directory(folder / CHUNKS)
    shape = [len(listing), 3, size, size]
    manifest = {"format": STORE_FORMAT, "key": listing.key(geometry, size), "geometry": geometry, "shape": shape,
                "classes": listing.classes, "chunk": chunk, "complete": False, "pixels": PIXELS, "skipped": []}
    atomic_write_text(folder / LISTING, "".join(listing.lines()))
    with open(folder / PIXELS, "wb") as handle:
        handle.truncate(int(np.prod(shape)))
    atomic_write_json(folder / MANIFEST, manifest)
    return StoreWriter(folder, manifest)


def resume_store(folder: Path, key: str) -> StoreWriter | None:
    """The unfinished store in ``folder`` decoded from the listing with ``key``, to go on
    writing; None when there is none (or it is of another listing)."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("complete") or manifest.get("key") != key:
        return None
    writer = StoreWriter(folder, manifest)
    pixels = folder / PIXELS
    if not pixels.is_file() or pixels.stat().st_size != int(np.prod(writer.shape)):
        return None
    return writer


@dataclass
class OpenedStore:
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: list[str]


def open_store(folder: Path, key: str, expected_labels: np.ndarray, in_memory: bool = False) -> OpenedStore | None:
    """The complete store in ``folder`` if it was decoded from the listing with ``key`` and its
    labels are ``expected_labels`` (the listing's, less the skipped files); None otherwise (the
    caller decodes again). The pixels are mapped read-only and shared (copy-on-write: a write
    to the tensor stays in this process), or read into memory with ``in_memory``.

    Raises DataError when the store's labels contradict its own listing (a store changed by
    hand), since decoding again would hide that.
    """
    manifest = read_manifest(folder)
    if manifest is None or not manifest.get("complete") or manifest.get("key") != key:
        return None
    shape = tuple(manifest["shape"])
    pixels = folder / manifest["pixels"]
    try:
        if pixels.stat().st_size != int(np.prod(shape)):
            return None
        labels = np.load(folder / LABELS, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if labels.shape != expected_labels.shape or not np.array_equal(labels, expected_labels):
        wrong = int(np.flatnonzero(labels != expected_labels)[0]) if labels.shape == expected_labels.shape else None
        where = f" (first at row {wrong}: {labels[wrong]} where the listing gives {expected_labels[wrong]})" \
            if wrong is not None else f" ({labels.shape[0]} labels for {expected_labels.shape[0]} images)"
        raise DataError(f"{folder / LABELS} does not match the class folders of the listing{where}; the store was "
                        f"changed after it was written: delete {folder} to decode the split again")
    if shape[0] == 0:
        images = torch.zeros(shape, dtype=torch.uint8)
    elif in_memory:
        images = torch.from_numpy(np.fromfile(pixels, dtype=np.uint8).reshape(shape))
    else:
        images = torch.from_numpy(np.memmap(pixels, dtype=np.uint8, mode="c", shape=shape))
    return OpenedStore(images, torch.from_numpy(labels.astype(np.int64)), list(manifest["classes"]),
                       list(manifest["skipped"]))
