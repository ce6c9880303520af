"""Nearest test images under the gated features, and the dimensions two images share.

The similarity of two images is the cosine of their gated feature rows (the features are unit
rows, so a dot product); it is a sum over dimensions of f_i[d] · f_j[d], so each dimension's term
says how much of the similarity it carries: those terms answer "why are these two similar".
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

CHUNK_ENTRIES = 2**24
"""Upper bound on the entries of one [queries, N] similarity block."""


def nearest_images(features: Tensor, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(indices [N, k], cosine similarities [N, k]) of each image's k most similar other images,
    most similar first; k is capped at N − 1 and the rest padded with -1/nan."""
    x = F.normalize(features.float(), dim=1)
    n = x.shape[0]
    k_eff = min(k, n - 1)
    index = np.full((n, k), -1, dtype=np.int64)
    value = np.full((n, k), np.nan, dtype=np.float32)
    chunk = max(1, CHUNK_ENTRIES // max(n, 1))
    for start in tqdm(range(0, n, chunk), disable=not progress, desc="nearest images", unit="chunk", leave=False):
        rows = torch.arange(start, min(start + chunk, n))
        similarity = x[rows] @ x.T
        similarity[torch.arange(rows.numel()), rows] = -np.inf
        best, order = similarity.topk(k_eff, dim=1)
        index[start:start + rows.numel(), :k_eff] = order.numpy()
        value[start:start + rows.numel(), :k_eff] = best.numpy()
    return index, value


def shared_dimensions(features: Tensor, neighbours: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """For each image i and each of its neighbours j (``neighbours`` [N, k], -1 = none): the ``count``
    dimensions with the largest positive term f_i[d] · f_j[d] of their cosine, and each term's share
    of the cosine. Returns (dims [N, k, count], shares [N, k, count]), -1/nan padded."""
    x = F.normalize(features.float(), dim=1)
    n, k = neighbours.shape
    d = x.shape[1]
    count_eff = min(count, d)
    dims = np.full((n, k, count), -1, dtype=np.int64)
    shares = np.full((n, k, count), np.nan, dtype=np.float32)
    chunk = max(1, CHUNK_ENTRIES // max(k * d, 1))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        partners = torch.as_tensor(neighbours[start:stop])
        terms = x[start:stop, None, :] * x[partners.clamp(min=0)]
        cosine = terms.sum(dim=2, keepdim=True)
        values, which = terms.topk(count_eff, dim=2)
        keep = (values > 0) & (partners[:, :, None] >= 0)
        dims[start:stop, :, :count_eff] = torch.where(keep, which, -1).numpy()
        share = torch.where(keep & (cosine > 0), values / cosine, torch.full_like(values, np.nan))
        shares[start:stop, :, :count_eff] = share.numpy()
    return dims, shares
