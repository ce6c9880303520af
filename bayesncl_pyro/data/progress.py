"""Progress of long work (decoding a split, training, evaluating) on stderr, for a person and for
a log file alike.

On a terminal (or in a notebook, as a widget) it is tqdm's bar. Anywhere else (a log file, a
pipe) a bar would be one line of carriage returns growing until the work ends, so there it is a
plain line (what, count/total, rate, elapsed time, time left) at the start, at most one every
:data:`INTERVAL` seconds, and at the end. It sits here, beside :mod:`.status`, because decoding is the lowest layer
that shows progress; training and evaluation use the same :func:`progress`.

A command's ``--no-progress`` covers the work it starts, the decode its data loading runs
included: inside :func:`silenced`, :func:`progress` shows nothing.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from tqdm import auto
from tqdm.std import tqdm as plain_tqdm

INTERVAL = 30.0
"""Seconds between two progress lines in a log."""

_silent: ContextVar[bool] = ContextVar("bayesncl_progress_silent", default=False)


@contextmanager
def silenced(silent: bool = True) -> Iterator[None]:
    """No progress is shown inside (when ``silent``); an outer ``silenced()`` still holds."""
    token = _silent.set(silent or _silent.get())
    try:
        yield
    finally:
        _silent.reset(token)


def _shows_a_bar(stream: TextIO) -> bool:
    """A terminal redraws a bar in place; so does a notebook, where tqdm.auto makes it a widget."""
    in_notebook = any(cls.__module__ == "tqdm.notebook" for cls in auto.tqdm.__mro__)
    isatty = getattr(stream, "isatty", None)
    return in_notebook or bool(isatty and isatty())


def progress(iterable: Iterable | None = None, *, desc: str, total: float | None = None, unit: str = "it",
             initial: float = 0, unit_scale: bool = False, enabled: bool = True, stream: TextIO | None = None,
             interval: float | None = None, clock: Callable[[], float] = time.monotonic, **bar_options: Any):
    """A tqdm bar, or :class:`ProgressLines` with the same interface where stderr (``stream``) is
    no terminal, or a disabled bar (``enabled`` false, inside :func:`silenced`, no stderr at all).
    ``interval`` (default :data:`INTERVAL`) and ``clock`` pace the lines; ``bar_options`` go to
    the bar only (``leave``, ``dynamic_ncols``, ``smoothing``)."""
    stream = sys.stderr if stream is None else stream
    interval = INTERVAL if interval is None else interval
    if not enabled or _silent.get() or stream is None:
        return plain_tqdm(iterable, total=total, disable=True)
    if _shows_a_bar(stream):
        return auto.tqdm(iterable, desc=desc, total=total, unit=unit, initial=initial, unit_scale=unit_scale,
                         file=stream, **bar_options)
    return ProgressLines(iterable, desc=desc, total=total, unit=unit, initial=initial, unit_scale=unit_scale,
                         stream=stream, interval=interval, clock=clock)


def _count(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:g}"


def _rate(per_second: float) -> str:
    if per_second <= 0:
        return "?"
    return f"{per_second:.3g}" if per_second < 1000 else f"{per_second:.0f}"


class ProgressLines:
    """The part of tqdm's interface this package uses (``update``, ``set_postfix``,
    ``set_postfix_str``, ``refresh``, ``close``, iteration, ``with``), written as whole lines:
    one when it starts, one at the first ``update`` (or new postfix) at least ``interval`` seconds
    after the last line, and one when it is closed (or its iterable runs out)."""

    def __init__(self, iterable: Iterable | None, desc: str, total: float | None, unit: str, initial: float,
                 unit_scale: bool, stream: TextIO, interval: float, clock: Callable[[], float]):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = self.initial = initial
        self.unit_scale, self.stream, self.interval, self.clock = unit_scale, stream, interval, clock
        self.postfix = ""
        self.closed = False
        self.lines, self.last_n = 0, initial
        self.started = self.last_line = clock()
        self._write(self.started)

    def line(self, now: float) -> str:
        """``desc: n/total unit (p%), rate, elapsed, ETA`` (rate and ETA "?" before any work is
        done; counts in k/M when ``unit_scale``)."""
        elapsed = now - self.started
        count = plain_tqdm.format_sizeof if self.unit_scale else _count
        parts = [f"{count(self.n)}/{count(self.total)} {self.unit} ({100 * self.n / self.total:.0f}%)"
                 if self.total else f"{count(self.n)} {self.unit}"]
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        parts.append(f"{count(rate) if self.unit_scale and rate >= 1000 else _rate(rate)} {self.unit}/s")
        parts.append(f"{plain_tqdm.format_interval(elapsed)} elapsed")
        if self.total:
            eta = plain_tqdm.format_interval(max(self.total - self.n, 0) / rate) if rate > 0 else "?"
            parts.append(f"ETA {eta}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: {', '.join(parts)}"

    def _write(self, now: float) -> None:
        self.last_line, self.last_n, self.lines = now, self.n, self.lines + 1
        try:
            print(self.line(now), file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or broken stderr: the work goes on without its lines
            pass

    def _due(self) -> None:
        now = self.clock()
        if now - self.last_line >= self.interval:
            self._write(now)

    def update(self, n: float = 1) -> None:
        self.n += n
        self._due()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Shown from the next line on; a new postfix is progress too (the iterations of one long
        probe fit), so it writes a line when ``interval`` has passed."""
        values = {**(ordered_dict or {}), **kwargs}
        self.set_postfix_str(", ".join(f"{key}={value}" for key, value in values.items()))

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s
        self._due()

    def refresh(self) -> None:
        """Nothing: lines come only at the start, each interval and at the end."""

    def close(self) -> None:
        """The end line, unless the last periodic line already showed the final count."""
        if not self.closed:
            self.closed = True
            if self.lines == 1 or self.n != self.last_n:
                self._write(self.clock())

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
