"""SIGTERM and SIGINT as a request to stop at the next step boundary (with a checkpoint)."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def stop_requests() -> Iterator[list[str]]:
    """Turn SIGTERM/SIGINT into a request the loop honours at the next step boundary: the list
    yielded holds the names of the signals received. A second signal stops at once
    (KeyboardInterrupt). Outside the main thread no handler can be installed; nothing is caught."""
    requests: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {}

    def handler(signum, frame):
        if requests:  # a second request: stop now, without a checkpoint
            raise KeyboardInterrupt
        requests.append(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield requests
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
