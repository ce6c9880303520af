"""Grid points as names and overrides: what a grid's cells are called (their directory names) and
the ``key=value`` overrides that make them. Reads no data and imports no torch, so a grid file can
be planned, and its mistakes named, before anything heavy is loaded.

A cell is named by its axis values, ``axis=value`` joined by ``__``, where an axis is shown by
the last part of its dotted key unless two axes share it; characters that do not belong in a
directory name become ``-``.
"""
from __future__ import annotations

from typing import Any, Sequence

import yaml


def yaml_value(value: Any) -> str:
    """A grid value as it is written in an override (``3e-05``, ``true``, ``[1, 2]``)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def axis_labels(keys: Sequence[str]) -> dict[str, str]:
    """Short labels for cell names: the last part of a dotted key, unless two axes share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in text)


def cell_name(point: dict[str, Any]) -> str:
    """The name of a grid point (axis key -> value), usable as a directory name."""
    labels = axis_labels(list(point))
    return "__".join(_safe(f"{labels[k]}={yaml_value(v)}") for k, v in point.items())


def point_overrides(point: dict[str, Any]) -> list[str]:
    """The ``key=value`` overrides of a grid point."""
    return [f"{k}={yaml_value(v)}" for k, v in point.items()]
