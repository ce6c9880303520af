"""Highest-density intervals of posterior draws (ArviZ's rule, vectorised over any trailing shape)."""
from __future__ import annotations

import math

import numpy as np

HDI_PROB = 0.94
"""ArviZ's default mass, the one ``bayesncl-inspect`` reports."""


def hdi(draws: np.ndarray, prob: float = HDI_PROB) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper), each of shape draws.shape[1:], of the narrowest interval that spans
    ``floor(prob · S)`` steps of the S sorted draws along the first axis, as ``az.hdi`` computes it;
    nan where a draw is nan."""
    ordered = np.sort(np.asarray(draws, dtype=np.float64), axis=0)
    count = ordered.shape[0]
    span = math.floor(prob * count)
    if count - span < 1:
        raise ValueError(f"{count} draws are too few for a {prob:.0%} interval")
    widths = ordered[span:] - ordered[: count - span]
    start = np.argmin(np.where(np.isnan(widths), np.inf, widths), axis=0)[None]
    lower = np.take_along_axis(ordered, start, axis=0)[0]
    upper = np.take_along_axis(ordered, start + span, axis=0)[0]
    has_nan = np.isnan(ordered).any(axis=0)
    return np.where(has_nan, np.nan, lower), np.where(has_nan, np.nan, upper)
