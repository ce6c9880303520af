"""The ground-truth gate check on ``scenes`` (SPEC §8): what each output dimension encodes, and
whether the gate closes the background dimensions while it keeps the object dimensions open.

Every scene image carries its generating factors, so for every output dimension one can ask how
much of the variance of its activation each factor explains. The measure is the correlation ratio
η² = SS_between / SS_total of the activation grouped by the factor's value, adjusted for the number
of groups (ε² = (SS_between − (k − 1) · MS_within) / SS_total), so that a factor with more values
does not win by chance: a dimension unrelated to a factor scores about 0, one that is a function
of it scores 1. Continuous factors are cut into quantile bins first; the object position is one
factor, a bins × bins grid of (x, y).

Each dimension gets the label of the factor with the highest score, ``dead`` when it is zero on
every test image (a ReLU unit that never fires: the README's Glossary, the same dimensions that
``active_dims`` of z leaves out), or ``unexplained`` when no factor reaches ``min_score`` (or the
activation is a non-zero constant, which no factor explains). The gate check then compares the
gate's open rate on the dimensions of each label: BayesNCL should close the dimensions that encode
the shared background and keep those that encode the object's class open.

All functions are pure functions of tensors; ``activations`` are [N, D], codes are int64 [N].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

DEAD = "dead"
UNEXPLAINED = "unexplained"
MIN_SCORE = 0.05
"""A dimension whose best factor explains less than this share of its variance is unexplained."""
OBJECT_FACTORS = ("class", "color", "position", "scale", "rotation")
"""Factors that describe the foreground object (everything but the background)."""
MOSTLY_OPEN = 0.5
"""A dimension whose gate is open for at least this share of test images counts as kept open."""

POSITION_BINS = 3
CONTINUOUS_BINS = 4


def quantile_bins(values: Tensor, bins: int) -> Tensor:
    """[N] real values -> [N] int64 codes in 0..bins-1, cut at the empirical quantiles."""
    inner = torch.linspace(0, 1, bins + 1, dtype=torch.float64, device=values.device)[1:-1]
    edges = torch.quantile(values.to(torch.float64), inner)
    return torch.bucketize(values.to(torch.float64), edges, right=True)


def scene_factor_codes(labels: Tensor, factors: dict[str, Tensor], position_bins: int = POSITION_BINS,
                       continuous_bins: int = CONTINUOUS_BINS) -> dict[str, Tensor]:
    """The scenes factors as categorical codes [N]: ``class`` (the label), ``background`` and
    ``color`` as they are, ``position`` = x bin · bins + y bin, ``scale`` and ``rotation`` binned.

    Factors missing from ``factors`` are left out, so any dataset with known factors works.
    """
    codes = {"class": labels.long()}
    for name in ("background", "color"):
        if name in factors:
            codes[name] = factors[name].long()
    if "x" in factors and "y" in factors:
        codes["position"] = (quantile_bins(factors["x"], position_bins) * position_bins
                             + quantile_bins(factors["y"], position_bins))
    for name in ("scale", "rotation"):
        if name in factors:
            codes[name] = quantile_bins(factors[name], continuous_bins)
    return codes


def correlation_ratio(activations: Tensor, codes: Tensor, adjusted: bool = True) -> Tensor:
    """Share of each column's variance explained by the groups of ``codes``.

    activations: [N, D]; codes: [N] integers (any values; the groups are the distinct values).
    Returns [D] float64: ε² (``adjusted``, may be slightly negative by chance) or plain η², and
    ``nan`` for a constant column.
    """
    x = activations.to(torch.float64)
    _, group = torch.unique(codes.to(x.device), return_inverse=True)
    k = int(group.max()) + 1
    n = x.shape[0]
    counts = torch.bincount(group, minlength=k).to(torch.float64)
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device).index_add_(0, group, x)
    grand = x.mean(dim=0)
    ss_total = (x - grand).pow(2).sum(dim=0)
    ss_between = (counts[:, None] * (sums / counts[:, None] - grand).pow(2)).sum(dim=0)
    if adjusted and n > k:
        ms_within = (ss_total - ss_between) / (n - k)
        ss_between = ss_between - (k - 1) * ms_within
    score = ss_between / ss_total
    return torch.where(ss_total > 0, score, torch.full_like(score, math.nan))


def factor_scores(activations: Tensor, codes: dict[str, Tensor]) -> Tensor:
    """[F, D] score of each factor (in the order of ``codes``) for each dimension."""
    return torch.stack([correlation_ratio(activations, code) for code in codes.values()])


def label_dimensions(scores: Tensor, factor_names: list[str], min_score: float = MIN_SCORE,
                     dead: Tensor | None = None) -> list[str]:
    """One label per dimension from scores [F, D]: ``dead`` where ``dead`` [D] (bool) says so, the
    best factor's name, or ``unexplained`` when the best score is below ``min_score`` or there is
    none (a constant dimension: all scores nan). Without ``dead``, a constant dimension is dead."""
    labels = []
    for d, column in enumerate(scores.T):
        constant = bool(torch.isnan(column).all())
        if (bool(dead[d]) if dead is not None else constant):
            labels.append(DEAD)
            continue
        if constant:
            labels.append(UNEXPLAINED)
            continue
        best = int(torch.nan_to_num(column, nan=-math.inf).argmax())
        labels.append(factor_names[best] if float(column[best]) >= min_score else UNEXPLAINED)
    return labels


def gate_check(dim_labels: list[str], open_rate: Tensor | None) -> dict[str, dict[str, float]]:
    """Per label: ``dims`` (how many dimensions carry it) and, when there is a gate (open_rate: [D],
    the share of test images whose hard gate is open), ``mean_open_rate`` and ``share_kept_open``
    (share of its dimensions open for at least half the images)."""
    result: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(dim_labels):
        index = torch.tensor([i for i, name in enumerate(dim_labels) if name == label])
        entry: dict[str, float] = {"dims": float(index.numel())}
        if open_rate is not None:
            rates = open_rate.detach().to(torch.float64).cpu()[index]
            entry["mean_open_rate"] = float(rates.mean())
            entry["share_kept_open"] = float((rates >= MOSTLY_OPEN).to(torch.float64).mean())
        result[label] = entry
    return result


@dataclass
class FactorCheck:
    """The whole check: scores [F, D], the factor names, one label per dimension, the per-label
    table of :func:`gate_check`, and the headline shares (nan when no dimension has the label or
    there is no gate): of background dimensions the gate closes, of class dimensions and of object
    dimensions (any of ``OBJECT_FACTORS``) it keeps open."""

    scores: Tensor
    factor_names: list[str]
    dim_labels: list[str]
    by_label: dict[str, dict[str, float]]
    background_closed_share: float
    class_open_share: float
    object_open_share: float

    def to_dict(self) -> dict:
        return {
            "factor_names": list(self.factor_names),
            "dim_labels": list(self.dim_labels),
            "scores": {name: [None if math.isnan(v) else v for v in row.tolist()]
                       for name, row in zip(self.factor_names, self.scores)},
            "by_label": self.by_label,
            "background_closed_share": self.background_closed_share,
            "class_open_share": self.class_open_share,
            "object_open_share": self.object_open_share,
            "min_score": MIN_SCORE,
            "mostly_open": MOSTLY_OPEN,
        }


def check_factors(activations: Tensor, codes: dict[str, Tensor], open_rate: Tensor | None,
                  min_score: float = MIN_SCORE) -> FactorCheck:
    """Label each dimension of ``activations`` [N, D] (the ungated features, so that a closed
    dimension still shows what it encodes) by the factor codes, then compare the gate's
    ``open_rate`` [D] (or None for an ungated run) across labels."""
    names = list(codes)
    scores = factor_scores(activations, codes)
    dim_labels = label_dimensions(scores, names, min_score, dead=(activations == 0).all(dim=0).cpu())
    by_label = gate_check(dim_labels, open_rate)

    def share(label: str, key: str, closed: bool) -> float:
        entry = by_label.get(label)
        if entry is None or key not in entry:
            return math.nan
        return 1.0 - entry[key] if closed else entry[key]

    object_dims = [label in OBJECT_FACTORS for label in dim_labels]
    if open_rate is None or not any(object_dims):
        object_open_share = math.nan
    else:
        kept_open = open_rate.detach().to(torch.float64).cpu() >= MOSTLY_OPEN
        object_open_share = float(kept_open[torch.tensor(object_dims)].to(torch.float64).mean())
    return FactorCheck(scores, names, dim_labels, by_label,
                       background_closed_share=share("background", "share_kept_open", closed=True),
                       class_open_share=share("class", "share_kept_open", closed=False),
                       object_open_share=object_open_share)
