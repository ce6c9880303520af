"""SIGTERM and SIGINT as a request to stop, honoured where stopping loses nothing.

While the training loop runs, a signal only records a request; the loop honours it at the next
step boundary by saving a checkpoint and stopping (exit code 130). Further signals are recorded
and change nothing: a checkpoint being written is never cut short, so whatever the signals and
their timing the run ends with a complete checkpoint. Outside the loop (loading data before the
first step, the end-of-run summary after the last checkpoint) there is nothing to save, and the
first signal stops at once (KeyboardInterrupt).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

RECEIVED: list[str] = []
"""Every SIGTERM/SIGINT a handler of this module saw in this process, in order."""


def _record(signum: int) -> str:
    name = signal.Signals(signum).name
    RECEIVED.append(name)
    return name


class StopRequests:
    """The names of the signals received (``SIGTERM``, ``SIGINT``); true once one arrived."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.deferring = False

    def __bool__(self) -> bool:
        return bool(self.names)

    @property
    def first(self) -> str:
        return self.names[0]

    def receive(self, name: str) -> None:
        stopping = bool(self.names)
        self.names.append(name)
        if not (self.deferring or stopping):
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator["StopRequests"]:
        """Within this block signals only record a request (the loop checks it at step boundaries)."""
        self.deferring = True
        try:
            yield self
        finally:
            self.deferring = False


@contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """Handle SIGTERM/SIGINT for the duration of a run (see the module docstring). Outside the
    main thread no handler can be installed; nothing is caught."""
    requests = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return

    def handler(signum, frame):
        requests.receive(_record(signum))

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def install_process_handlers() -> None:
    """For a process that ends when its command does (a console command): SIGTERM stops it like
    SIGINT (KeyboardInterrupt, exit code 130), and once any signal asked this process to stop,
    later ones are ignored, so that a second signal cannot cut short the saving and shutdown
    the first one started (see :func:`ignore_signals_at_exit` for the very end). Never undone:
    the process is about to end."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        already = bool(RECEIVED)
        _record(signum)
        if not already:
            raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def ignore_signals_at_exit() -> None:
    """Just before a console command exits, its work done and its exit code decided: ignore
    SIGTERM and SIGINT outright. A signal arriving now has nothing left to stop; with a Python
    handler it would raise KeyboardInterrupt inside an ``atexit`` callback ("Exception ignored in
    atexit callback") or, once the interpreter's shutdown has put the default action back, end the
    process by the signal (exit code 143) instead of with the command's code. An ignored signal
    stays ignored through the shutdown."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
