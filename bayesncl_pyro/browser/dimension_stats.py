"""Per-dimension statistics of a run's test features: pure functions of arrays.

``features`` are the SPEC §6 gated features [N, D] (row-normalised; an entry is *active* when
``|f| > ACTIVITY_THRESHOLD``, as in the metrics), ``labels`` [N] class indices 0..C-1. Results are
numpy arrays; a quantity that is undefined for a dimension (e.g. the majority class of a dimension
that is never active) is nan, and index lists are padded with -1.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bayesncl_pyro.browser.intervals import hdi
from bayesncl_pyro.evaluation.metrics import ACTIVITY_THRESHOLD

HISTOGRAM_BINS = 20
UNSURE = (0.2, 0.8)
"""A gate with q(gate = 1 | x) strictly between these is unsure for that image."""


def activity(features: Tensor) -> Tensor:
    """[N, D] bool: the entries that count as active."""
    return features.abs() > ACTIVITY_THRESHOLD


def class_counts(active: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """[C, D] number of active images of each class, per dimension."""
    sums = torch.zeros(num_classes, active.shape[1], dtype=torch.float64)
    return sums.index_add_(0, labels.long(), active.to(torch.float64)).numpy()


def majority_class(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([D] most frequent class among a dimension's active images (-1 when none), [D] its share).

    The share is the dimension's contribution to semantic consistency: SC is its mean over the
    dimensions that are ever active, times 100."""
    totals = counts.sum(axis=0)
    best = counts.argmax(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = counts.max(axis=0) / totals
    return np.where(totals > 0, best, -1), np.where(totals > 0, share, np.nan)


def class_entropy(counts: np.ndarray) -> np.ndarray:
    """[D] entropy (nats) of the class distribution of each dimension's active images (0: a single
    class; log C: all classes alike); nan for a dimension that is never active."""
    totals = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / totals
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return np.where(totals > 0, terms.sum(axis=0), np.nan)


def top_images(values: Tensor, k: int, active: Tensor | None = None) -> np.ndarray:
    """[D, k] indices of the images with the largest value in each column, largest first (ties: the
    lower index first); with ``active`` ([N, D] bool) only active entries qualify. Padded with -1."""
    n, d = values.shape
    k_eff = min(k, n)
    ranked = values.to(torch.float64).T.clone()
    if active is not None:
        ranked[~active.T] = -np.inf
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :k_eff]
    result = np.full((d, k), -1, dtype=np.int64)
    chosen = order.numpy()
    if active is not None:
        chosen = np.where(torch.gather(active.T, 1, order).numpy(), chosen, -1)
    result[:, :k_eff] = chosen
    return result


def activating_sample(active: Tensor, k: int, seed: int) -> np.ndarray:
    """[D, k] a uniform random sample (without replacement, in random order) of the images on
    which each dimension is active, -1 padded; reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    columns = active.T.numpy()
    result = np.full((columns.shape[0], k), -1, dtype=np.int64)
    for dim, column in enumerate(columns):
        images = np.flatnonzero(column)
        picked = rng.choice(images, size=min(k, images.size), replace=False) if images.size else images
        result[dim, : picked.size] = picked
    return result


def class_histograms(features: Tensor, labels: Tensor, num_classes: int,
                     bins: int = HISTOGRAM_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histograms of each dimension's active values, split by class.

    Returns edges [D, bins + 1] (equal bins from min(0, smallest active value) to the largest),
    counts [D, C, bins] of active images, and inactive [D, C], the images of each class on which
    the dimension is not active."""
    x = features.to(torch.float64)
    on = activity(features)
    n, d = x.shape
    low = torch.where(on, x, torch.full_like(x, np.inf)).min(dim=0).values.clamp(max=0.0)
    low = torch.where(torch.isinf(low), torch.zeros_like(low), low)
    high = torch.where(on, x, torch.full_like(x, -np.inf)).max(dim=0).values.clamp(min=0.0)
    width = torch.where(high > low, high - low, torch.ones_like(high))
    which = ((x - low) / width * bins).floor().clamp(0, bins - 1).long()
    flat = (torch.arange(d)[None, :] * num_classes + labels.long()[:, None]) * bins + which
    counts = torch.bincount(flat[on], minlength=d * num_classes * bins).reshape(d, num_classes, bins)
    edges = low[:, None] + width[:, None] * torch.linspace(0, 1, bins + 1, dtype=torch.float64)[None]
    inactive = class_counts(~on, labels, num_classes).T
    return edges.numpy(), counts.numpy(), inactive


def unsure_share(gate_probs: Tensor) -> np.ndarray:
    """[D] share of images whose gate is unsure (q(gate = 1 | x) strictly inside ``UNSURE``)."""
    low, high = UNSURE
    return ((gate_probs > low) & (gate_probs < high)).double().mean(dim=0).numpy()


def probability_histograms(gate_probs: Tensor, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """[D, bins] how many images have q(gate = 1 | x) in each of ``bins`` equal bins of [0, 1] (1
    falls into the last): a sure gate piles up at 0 and 1, an unsure one in the middle."""
    n, d = gate_probs.shape
    which = (gate_probs.double() * bins).floor().clamp(0, bins - 1).long()
    flat = torch.arange(d)[None, :] * bins + which
    return torch.bincount(flat.reshape(-1), minlength=d * bins).reshape(d, bins).numpy()


def coactivation_neighbours(features: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` dimensions that fire together with each dimension most: cosine similarity of the
    activation columns [N] of two dimensions (1: active on the same images with proportional
    values). Returns (indices [D, k], similarities [D, k]), most similar first; dimensions that are
    never active have no neighbours and are nobody's neighbour (-1, nan)."""
    x = features.to(torch.float64)
    columns = F.normalize(x, dim=0)
    similarity = columns.T @ columns
    alive = activity(features).any(dim=0)
    similarity.fill_diagonal_(-np.inf)
    similarity[:, ~alive] = -np.inf
    k_eff = min(k, max(x.shape[1] - 1, 0))
    values, index = similarity.topk(k_eff, dim=1) if k_eff else (similarity[:, :0], similarity[:, :0].long())
    ok = torch.isfinite(values) & alive[:, None]
    result_index = np.full((x.shape[1], k), -1, dtype=np.int64)
    result_value = np.full((x.shape[1], k), np.nan)
    result_index[:, :k_eff] = torch.where(ok, index, -1).numpy()
    result_value[:, :k_eff] = torch.where(ok, values, torch.full_like(values, np.nan)).numpy()
    return result_index, result_value


def posterior_interval(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws [chains, draws, ...] -> (mean, HDI lower, HDI upper), each of shape [...]."""
    flat = np.asarray(draws, dtype=np.float64).reshape(-1, *np.shape(draws)[2:])
    lower, upper = hdi(flat)
    return flat.mean(axis=0), lower, upper
