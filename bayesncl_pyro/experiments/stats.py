"""Mean ± standard deviation over seeds, one rule for every table and figure; and the mean
paired difference between two methods with its t confidence interval (runs pair by seed).

Missing values (None) and NaN are left out of the numbers; tables say how many were NaN (not
defined). The standard deviation is the sample one (n − 1); a single value has none (NaN), and
tables then show the mean alone, figures no error bar.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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


def format_mean_sd(values: Iterable[Any], digits: int = 4, scale: float = 1.0, missing: str = "–",
                   undefined: str | None = None) -> str:
    """``"mean ± sd"`` with ``digits`` decimals after multiplying by ``scale``; the mean alone for
    one value, ``missing`` for none. With ``undefined`` (the ``not defined: <reason>`` text of the
    quantity), NaN values are counted rather than dropped silently: ``undefined`` when every value
    is NaN, and ``"(k not defined)"`` after the mean of the others when some are, so that a table
    never reads "nan" nor hides that a seed's number could not be computed."""
    values = list(values)
    mean, sd, n = mean_sd(values)
    nans = sum(1 for v in values if isinstance(v, float) and math.isnan(v)) if undefined is not None else 0
    if n == 0:
        return undefined if nans else missing
    text = f"{mean * scale:.{digits}f}"
    text = text if math.isnan(sd) else f"{text} ± {sd * scale:.{digits}f}"
    return f"{text} ({nans} not defined)" if nans else text


# ----------------------------------------------------------------------------- paired differences

CONFIDENCE = 0.95


def t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with an integer number of degrees of freedom ``df`` ≥ 1.

    Closed form for integer df (Abramowitz & Stegun 26.7.3 and 26.7.4), with θ = atan(|t| / √df):
    A = P(|T| ≤ |t|) = (2/π)[θ + sin θ (cos θ + (2/3) cos³θ + …)] for odd df and
    sin θ [1 + (1/2) cos²θ + (1·3)/(2·4) cos⁴θ + …] for even df, each series running to the
    power df − 2; then P(T ≤ t) = (1 + sign(t) · A) / 2.
    """
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"df={df!r} is not allowed; allowed: an integer >= 1")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2:
        term = series = math.cos(theta) if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= (2 * k) / (2 * k + 1) * cos2
            series += term
        share = 2 / math.pi * (theta + math.sin(theta) * series)
    else:
        term = series = 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * cos2
            series += term
        share = math.sin(theta) * series
    return 0.5 + math.copysign(0.5 * share, t)


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with integer ``df`` (0 < p < 1): :func:`t_cdf` inverted by
    bisection to machine precision."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p!r} is not allowed; allowed: the open interval (0, 1)")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return 0.5 * (low + high)


@dataclass
class PairedDifference:
    """Mean of ``method − against`` over the seeds where both have a finite value, with its
    two-sided t confidence interval (NaN bounds with fewer than two pairs)."""

    pairs: int
    mean: float
    sd: float
    lower: float
    upper: float
    seeds: list[int]
    level: float = CONFIDENCE

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (False when it is undefined)."""
        return self.lower > 0.0 or self.upper < 0.0

    def to_dict(self) -> dict[str, Any]:
        """For results.json: undefined numbers (NaN) become None, so the file stays strict JSON."""
        def number(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {"pairs": self.pairs, "mean": number(self.mean), "sd": number(self.sd), "lower": number(self.lower),
                "upper": number(self.upper), "level": self.level, "excludes_zero": self.excludes_zero,
                "seeds": self.seeds}


def paired_difference(method: dict[int, Any], against: dict[int, Any], level: float = CONFIDENCE) -> PairedDifference:
    """``method`` and ``against`` map seeds to values; pairs are the seeds where both are finite.
    The interval is mean ± t_{(1+level)/2, n−1} · sd / √n (sd the sample one)."""
    seeds = sorted(s for s in set(method) & set(against) if finite_values([method[s]]) and finite_values([against[s]]))
    differences = [float(method[s]) - float(against[s]) for s in seeds]
    mean, sd, n = mean_sd(differences)
    if n < 2:
        return PairedDifference(n, mean, sd, math.nan, math.nan, seeds, level)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return PairedDifference(n, mean, sd, mean - half, mean + half, seeds, level)


def format_difference(d: dict[str, Any] | None, mark: bool = False) -> str:
    """A stored paired difference (:meth:`PairedDifference.to_dict`) as ``+m [+l, +u] (n=k)``;
    ``(n=1, no interval)`` when there are too few pairs for one, ``–`` when nothing was measured;
    ``mark`` adds `` *`` where the interval excludes 0."""
    if not d or d.get("mean") is None:
        return "–"
    if d.get("lower") is None or d.get("upper") is None:
        return f"{d['mean']:+.2f} (n={d['pairs']}, no interval)"
    star = " *" if mark and (d["lower"] > 0 or d["upper"] < 0) else ""
    return f"{d['mean']:+.2f} [{d['lower']:+.2f}, {d['upper']:+.2f}] (n={d['pairs']}){star}"
