"""The authors' two structural metrics (their orthogonality scale, retrieval on globally top
dimensions) against plain numpy versions written from their description."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesncl_pyro.evaluation import metrics

TOL = 1e-9


def authors_orthogonality_numpy(x: np.ndarray) -> float:
    """Their evaluation: drop all-zero columns, L2-normalise columns, |CᵀC − I| / (d (d − 1)), mean."""
    f = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    f = f[:, np.abs(f).sum(axis=0) > 0]
    d = f.shape[1]
    c = f / np.linalg.norm(f, axis=0, keepdims=True)
    err = np.abs(c.T @ c - np.eye(d)) / (d * (d - 1))
    return float(err.mean())


def global_dims_retrieval_numpy(x: np.ndarray, labels: np.ndarray, k: int, top_dims: int) -> float:
    """Rank dims by column sum, keep the top ones, renormalise rows, and for every query take the k
    most similar other rows (the query's own row comes first and is dropped, as theirs does)."""
    f = x / np.linalg.norm(x, axis=1, keepdims=True)
    order = sorted(range(f.shape[1]), key=lambda d: -f[:, d].sum())[:top_dims]
    g = f[:, order]
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    hits = 0
    for i in range(len(g)):
        similarity = g @ g[i]
        ranked = np.argsort(-similarity, kind="stable")
        assert ranked[0] == i  # no ties with itself in these inputs
        hits += sum(labels[j] == labels[i] for j in ranked[1:k + 1])
    return 100.0 * hits / (len(g) * k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orthogonality_authors_matches_their_formula(seed):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(40, 12)), 0.0)
    x[:, 3] = 0.0  # a dead column is dropped by both
    got = metrics.orthogonality_authors(torch.from_numpy(x))
    assert got == pytest.approx(authors_orthogonality_numpy(x), abs=TOL)
    d = 11
    assert got == pytest.approx(metrics.orthogonality(torch.from_numpy(x)) / d**2, rel=1e-12)


def test_orthogonality_authors_undefined_with_one_active_dim():
    assert math.isnan(metrics.orthogonality_authors(torch.tensor([[1.0, 0.0], [2.0, 0.0]])))


@pytest.mark.parametrize("seed,k,top_dims", [(0, 1, 4), (1, 5, 8), (2, 10, 3), (3, 5, 16)])
def test_global_dims_retrieval_matches_their_procedure(seed, k, top_dims):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=60)
    centres = rng.uniform(0.0, 1.0, size=(4, 16))
    x = np.abs(centres[labels] + 0.3 * rng.normal(size=(60, 16))) + 1e-3  # no row empties after the cut
    got = metrics.retrieval_precision_global_dims(torch.from_numpy(x), torch.from_numpy(labels), k, top_dims)
    assert got == pytest.approx(global_dims_retrieval_numpy(x, labels, k, top_dims), abs=1e-9)


def test_global_dims_with_every_dim_is_plain_retrieval():
    rng = np.random.default_rng(5)
    x = np.abs(rng.normal(size=(30, 6)))
    labels = rng.integers(0, 3, size=30)
    f, y = torch.from_numpy(x), torch.from_numpy(labels)
    assert metrics.retrieval_precision_global_dims(f, y, 5, 6) == pytest.approx(metrics.retrieval_precision(f, y, 5))


def test_global_dims_rejects_bad_top_dims():
    with pytest.raises(ValueError, match="top_dims"):
        metrics.retrieval_precision_global_dims(torch.ones(4, 3), torch.tensor([0, 0, 1, 1]), 1, 4)
