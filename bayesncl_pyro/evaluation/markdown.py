"""Markdown tables of numbers, as the evaluation and inspection pages show them, and the one way
the pages write a number in a table: every number of a table with the same decimals."""
from __future__ import annotations

import math
from typing import Any

DIGITS = 2
"""Decimals of every float in a table (shares in %, nats, scores alike)."""


NOT_DEFINED = "not defined"
"""What a cell shows for nan (a number that cannot be computed), never "nan"; callers that know the
quantity pass ``glossary.shown_value``'s ``not defined: <reason>`` text instead."""


def fixed_number(value: Any, digits: int = DIGITS) -> str:
    """A table cell: a float with ``digits`` decimals (a non-zero one that would show as 0 in
    scientific notation, ``3.1e-05``), an int as it is, None (not measured) as "–", nan as
    "not defined", anything else as text."""
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return NOT_DEFINED
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.5 * 10.0 ** -digits:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]], digits: int = DIGITS) -> str:
    """A GitHub Markdown table; floats with ``digits`` decimals (:func:`fixed_number`), None as
    "–", nan as "not defined"."""
    def cell(value: Any) -> str:
        return fixed_number(value, digits).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
