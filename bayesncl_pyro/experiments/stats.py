"""Mean ± standard deviation over seeds, one rule for every table and figure.

Missing values (None) and NaN are left out. The standard deviation is the sample one (n − 1); a
single value has none (NaN), and tables then show the mean alone, figures no error bar.
"""
from __future__ import annotations

import math
from typing import Any, Iterable


def finite_values(values: Iterable[Any]) -> list[float]:
    """The finite numbers among ``values`` (None, NaN and infinities left out), as floats."""
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_sd(values: Iterable[Any]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, count) of the finite values; (nan, nan, 0) when there
    are none, and sd nan for a single value."""
    clean = finite_values(values)
    n = len(clean)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(clean) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1)) if n > 1 else math.nan
    return mean, sd, n


def format_mean_sd(values: Iterable[Any], digits: int = 4, scale: float = 1.0, missing: str = "–") -> str:
    """``"mean ± sd"`` with ``digits`` decimals after multiplying by ``scale``; the mean alone for
    one value, ``missing`` for none."""
    mean, sd, n = mean_sd(values)
    if n == 0:
        return missing
    text = f"{mean * scale:.{digits}f}"
    return text if math.isnan(sd) else f"{text} ± {sd * scale:.{digits}f}"
