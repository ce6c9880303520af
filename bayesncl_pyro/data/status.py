"""One line when data preparation starts a long phase (generating ``scenes``, decoding an
ImageFolder tree), so a run that seems idle says what it is doing.

Written to stderr when that is a terminal, where the progress bars are (tqdm's ``disable=None``
rule): a log or a captured stream keeps only results and, on bad input, the one error line.
"""
from __future__ import annotations

import sys


def status(message: str) -> None:
    stream = sys.stderr
    if stream is not None and stream.isatty():
        print(message, file=stream, flush=True)
