"""Two runs on the same test images: each dimension of one run and its best-matching dimension of
the other, by the correlation of their activations over the shared test images."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bayesncl_pyro.config.errors import DataError


@dataclass
class DimensionMatch:
    """For each dimension of run A: ``partner`` [DA], the dimension of run B whose activation
    correlates most with it (-1 when either side never varies), ``correlation`` [DA] (Pearson r,
    nan without a partner) and ``mutual`` [DA] (A's dimension is its partner's best match too)."""

    partner: np.ndarray
    correlation: np.ndarray
    mutual: np.ndarray


def check_same_test_split(labels_a: Tensor, images_a: Tensor, labels_b: Tensor, images_b: Tensor,
                          names: tuple[str, str]) -> None:
    """Raise DataError unless both runs hold the same test images with the same labels, in order:
    matching dimensions compares activations image by image."""
    a, b = names
    if images_a.shape != images_b.shape:
        raise DataError(f"runs {a} and {b} do not share a test split: {tuple(images_a.shape)} vs "
                        f"{tuple(images_b.shape)} test images; compare runs trained on the same dataset")
    if not torch.equal(labels_a, labels_b) or not torch.equal(images_a, images_b):
        raise DataError(f"runs {a} and {b} do not share a test split: the test images or labels differ "
                        "(another dataset, data seed or split size); compare runs trained on the same data")


def _standardised(x: Tensor) -> tuple[Tensor, Tensor]:
    """Columns centred and scaled to unit norm, and which columns vary at all."""
    centred = x.to(torch.float64) - x.to(torch.float64).mean(dim=0)
    norms = centred.norm(dim=0)
    varies = norms > 1e-12 * max(1.0, float(x.abs().max()))
    return centred / torch.where(varies, norms, torch.ones_like(norms)), varies


def correlation_matrix(a: Tensor, b: Tensor) -> np.ndarray:
    """[DA, DB] Pearson correlation of each column of ``a`` [N, DA] with each column of ``b`` [N, DB];
    nan where a column is constant."""
    za, va = _standardised(a)
    zb, vb = _standardised(b)
    r = za.T @ zb
    r[~va] = np.nan
    r[:, ~vb] = np.nan
    return r.numpy()


def match_dimensions(a: Tensor, b: Tensor) -> tuple[DimensionMatch, DimensionMatch]:
    """Best matches both ways between the activations ``a`` [N, DA] and ``b`` [N, DB] of two runs."""
    r = correlation_matrix(a, b)

    def best(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        filled = np.where(np.isnan(matrix), -np.inf, matrix)
        partner = filled.argmax(axis=1) if matrix.shape[1] else np.zeros(matrix.shape[0], dtype=int)
        value = filled[np.arange(matrix.shape[0]), partner] if matrix.shape[1] else np.full(matrix.shape[0], -np.inf)
        found = np.isfinite(value)
        return np.where(found, partner, -1), np.where(found, value, np.nan)

    a_partner, a_r = best(r)
    b_partner, b_r = best(r.T)
    a_mutual = np.array([p >= 0 and b_partner[p] == i for i, p in enumerate(a_partner)], dtype=bool)
    b_mutual = np.array([p >= 0 and a_partner[p] == j for j, p in enumerate(b_partner)], dtype=bool)
    return DimensionMatch(a_partner, a_r, a_mutual), DimensionMatch(b_partner, b_r, b_mutual)
