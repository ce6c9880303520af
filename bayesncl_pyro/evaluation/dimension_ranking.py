"""Which output dimensions are the most and the least class-specific, and by how much.

Each dimension of the features that SC is reported on (gated z; normalize(z) without gates) gets
its term of the semantic consistency: the share (%) of the most frequent class among the test
images on which it is active (``metrics.semantic_consistency_per_dim``). A dimension active on a
handful of images trivially scores near 100 %, so the ranking only takes dimensions active on at
least :data:`MIN_ACTIVE_SHARE` of the test images. The per-dimension table and the choice go to
``dims.json`` in the run directory, which the HTML report's summary reads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bayesncl_pyro.evaluation.metrics import ACTIVITY_THRESHOLD, SUPPORTED_MIN_SHARE, semantic_consistency_per_dim

DIMS_FILE = "dims.json"
MIN_ACTIVE_SHARE = SUPPORTED_MIN_SHARE
"""A dimension enters the best/worst ranking when it is active on at least 1 % of the test images:
the dimensions the supported SC (``metrics.semantic_consistency_supported``) averages over."""
RANKED = 3
"""How many best and how many worst dimensions are shown."""


@dataclass
class DimensionRanking:
    """Per dimension (all [D]): ``consistency`` (%; nan where never active), ``active_share``
    (fraction of test images with |f| > 1e-5), ``mean_value`` (mean f over the test images),
    ``open_rate`` (fraction of test images whose gate is open; None without gates); and the
    indices of the ``best`` and ``worst`` ranked dimensions, best first / worst first."""

    features: str
    consistency: Tensor
    active_share: Tensor
    mean_value: Tensor
    open_rate: Tensor | None
    best: list[int]
    worst: list[int]

    def to_dict(self) -> dict[str, Any]:
        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        rows = []
        for d in range(self.consistency.numel()):
            row = {"dim": d, "semantic_consistency": number(float(self.consistency[d])),
                   "active_share": float(self.active_share[d]), "mean_value": float(self.mean_value[d])}
            if self.open_rate is not None:
                row["open_rate"] = float(self.open_rate[d])
            rows.append(row)
        return {
            "features": self.features,
            "units": "semantic_consistency in %; active_share and open_rate as fractions (0-1)",
            "min_active_share": MIN_ACTIVE_SHARE,
            "best": self.best,
            "worst": self.worst,
            "dims": rows,
        }


def rank_dimensions(features: Tensor, labels: Tensor, gate: Tensor | None, name: str,
                    count: int = RANKED, min_active_share: float = MIN_ACTIVE_SHARE) -> DimensionRanking:
    """Rank the dimensions of ``features`` [N, D] (labels [N]; the hard gate [N, D] or None) by
    their semantic consistency among those active on at least ``min_active_share`` of the rows.
    Ties keep the lower index first. ``name`` names the feature set (e.g. ``gated z``)."""
    consistency = semantic_consistency_per_dim(features, labels).cpu()
    active_share = (features.abs() > ACTIVITY_THRESHOLD).double().mean(dim=0).cpu()
    eligible = torch.nonzero((active_share >= min_active_share) & ~torch.isnan(consistency)).flatten()
    scores = consistency[eligible]
    order = eligible[torch.argsort(-scores, stable=True)].tolist()
    best = order[:count]
    worst = [d for d in reversed(order) if d not in best][:count]
    open_rate = None if gate is None else gate.double().mean(dim=0).cpu()
    return DimensionRanking(name, consistency, active_share, features.double().mean(dim=0).cpu(), open_rate,
                            best, worst)
