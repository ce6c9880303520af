"""Shuffled mini-batches of a dataset held in memory or memory-mapped; the order is a function of
(seed, epoch) alone, so a resumed run sees exactly the batches the uninterrupted run would have
seen. :class:`Prefetcher` gathers them ahead of the step in a background thread."""
from __future__ import annotations

import queue
import threading
from typing import Iterator

import torch

PREFETCH_DEPTH = 3
"""Batches gathered ahead of the one the step is using."""


def epoch_order(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


def train_batches(num_items: int, batch_size: int, seed: int, epoch: int,
                  start: int = 0) -> Iterator[torch.Tensor]:
    """Index tensors of the full batches of one epoch (the last partial batch is dropped),
    beginning at batch ``start``."""
    order = epoch_order(num_items, seed, epoch)
    for b in range(start, num_items // batch_size):
        yield order[b * batch_size:(b + 1) * batch_size]


def steps_per_epoch(num_items: int, batch_size: int) -> int:
    return num_items // batch_size


def gather(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
           pin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``index`` of ``images`` and ``labels``, in that order; from a memory-mapped store
    only those rows are read. ``index_select`` runs without the GIL, so a gather in a background
    thread overlaps the step. With ``pin`` the batch is in page-locked memory, so that the copy
    to a CUDA device can be ``non_blocking``."""
    batch = torch.index_select(images, 0, index), torch.index_select(labels, 0, index)
    return (batch[0].pin_memory(), batch[1].pin_memory()) if pin else batch


class Prefetcher:
    """The batches of ``indices`` gathered by a background thread, up to ``depth`` ahead of the
    step: iterating gives (uint8 images [B, 3, H, W], int64 labels [B]) on the CPU, in the order
    of ``indices`` (so what a step sees does not depend on the thread), pinned when ``pin``.

    The thread stops when the batches run out, when the iteration is left (a ``break``, a stop,
    an error: the generator is closed as the loop drops it) or on :meth:`close`. An error in the
    thread is raised where the batch would have been taken.
    """

    _DONE = object()

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: Iterator[torch.Tensor],
                 pin: bool = False, depth: int = PREFETCH_DEPTH):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(images, labels, indices, pin),
                                        name="batch-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, images, labels, indices, pin) -> None:
        try:
            for index in indices:
                if not self._put(gather(images, labels, index, pin)):
                    return
        except BaseException as error:  # handed to the consumer
            self._put(error)
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
