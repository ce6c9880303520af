"""Metrics of SPEC §6 against independent per-dimension numpy loops and closed-form cases."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from bayesncl_pyro.evaluation import metrics

ACTIVE = 1e-5
TOL = 1e-6

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------- data


def sparse_data(seed: int = 0, n: int = 300, d: int = 40, c: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Random non-negative [n, d] features with 70 % zeros, two all-zero columns, two all-zero
    rows, one column whose entries are non-zero but below the activity threshold, one column
    with a single active entry, and a few sub-threshold entries elsewhere."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)) * (rng.random((n, d)) > 0.7)
    x[:, 25] = 0.0
    x[rng.choice(n, 20, replace=False), 25] = 1e-9
    x[rng.choice(n, 10, replace=False), 30] = 1e-9
    x[:, 35] = 0.0
    x[7, 35] = 0.5
    x[:, [3, 17]] = 0.0
    x[[5, 100], :] = 0.0
    labels = rng.integers(0, c, size=n)
    return x, labels


def unit_rows(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x, dtype=np.float64)
    for i, row in enumerate(x.astype(np.float64)):
        out[i] = row / max(math.sqrt(sum(v * v for v in row)), 1e-12)
    return out


def as_torch(x: np.ndarray, labels: np.ndarray | None = None, device: str = "cpu"):
    f = torch.tensor(x, dtype=torch.float64, device=device)
    if labels is None:
        return f
    return f, torch.tensor(labels, dtype=torch.int64, device=device)


# ---------------------------------------------------------------- loop references


def active_labels_per_dim(x: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    """For each kept dimension (non-zero column sum, an active entry), the labels of its active rows."""
    f = unit_rows(x)
    kept = []
    for d in range(f.shape[1]):
        column = f[:, d]
        if column.sum() == 0:
            continue
        active_labels = [labels[i] for i in range(len(column)) if abs(column[i]) > ACTIVE]
        if active_labels:
            kept.append(active_labels)
    return kept


def sc_loop(x: np.ndarray, labels: np.ndarray) -> float:
    shares = [Counter(active).most_common(1)[0][1] / len(active) for active in active_labels_per_dim(x, labels)]
    return 100.0 * sum(shares) / len(shares)


def entropy(weights: list[float]) -> float:
    total = sum(weights)
    return -sum((w / total) * math.log(w / total) for w in weights if w > 0)


def entropies_loop(x: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    f = unit_rows(x)
    classes = sorted(set(labels.tolist()))
    by_sum, by_mean, by_frequency = [], [], []
    for d in range(f.shape[1]):
        column = f[:, d]
        if not any(abs(v) > ACTIVE for v in column):
            continue
        sums, means, counts = [], [], []
        for c in classes:
            members = [abs(column[i]) for i in range(len(column)) if labels[i] == c]
            sums.append(sum(members))
            means.append(sum(members) / len(members))
            counts.append(sum(1 for v in members if v > ACTIVE))
        by_sum.append(entropy(sums))
        by_mean.append(entropy(means))
        by_frequency.append(entropy(counts))
    return float(np.mean(by_sum)), float(np.mean(by_mean)), float(np.mean(by_frequency))


def sparsity_loop(x: np.ndarray) -> float:
    f = unit_rows(x)
    zeros = sum(1 for row in f for v in row if abs(v) <= ACTIVE)
    return zeros / f.size


def nonzero_columns(f: np.ndarray) -> list[int]:
    return [d for d in range(f.shape[1]) if np.mean(np.abs(f[:, d])) > 0]


def orthogonality_loop(x: np.ndarray) -> float:
    f = unit_rows(x)
    columns = [f[:, d] / np.linalg.norm(f[:, d]) for d in nonzero_columns(f)]
    total, pairs = 0.0, 0
    for a in range(len(columns)):
        for b in range(len(columns)):
            if a != b:
                total += abs(float(np.dot(columns[a], columns[b])))
                pairs += 1
    return total / pairs


def effective_rank_numpy(x: np.ndarray) -> float:
    s = np.linalg.svd(unit_rows(x), compute_uv=False)
    p = s / s.sum()
    return float(-sum(v * math.log(v) for v in p if v > 0))


def retrieval_bounds_loop(x: np.ndarray, labels: np.ndarray, k: int, top_dims: int | None) -> tuple[float, float]:
    """Lowest and highest precision@k (%) over all ways of breaking ties in similarity."""
    f = unit_rows(x)
    n = f.shape[0]
    low = high = 0
    for i in range(n):
        query = f[i].copy()
        if top_dims is not None:
            order = sorted(range(len(query)), key=lambda d: -abs(query[d]))
            for d in order[top_dims:]:
                query[d] = 0.0
            norm = np.linalg.norm(query)
            if norm > 0:
                query = query / norm
        scored = [(float(np.dot(query, f[j])), labels[j] == labels[i]) for j in range(n) if j != i]
        scored.sort(key=lambda t: -t[0])
        kth = scored[k - 1][0]
        above = [same for s, same in scored if s > kth + 1e-12]
        tied = [same for s, same in scored if abs(s - kth) <= 1e-12]
        needed = k - len(above)
        tied_same = sum(tied)
        tied_other = len(tied) - tied_same
        low += sum(above) + max(0, needed - tied_other)
        high += sum(above) + min(needed, tied_same)
    return 100.0 * low / (n * k), 100.0 * high / (n * k)


def knn_loop(train: np.ndarray, train_labels, test: np.ndarray, test_labels, k: int, temperature: float) -> float:
    train_f, test_f = unit_rows(train), unit_rows(test)
    correct = 0
    for i in range(len(test_f)):
        similarity = [(float(np.dot(test_f[i], train_f[j])), train_labels[j]) for j in range(len(train_f))]
        similarity.sort(key=lambda t: -t[0])
        votes: dict[int, float] = {}
        for s, label in similarity[:k]:
            votes[label] = votes.get(label, 0.0) + math.exp(s / temperature)
        best = max(sorted(votes), key=lambda label: votes[label])
        correct += int(best == test_labels[i])
    return 100.0 * correct / len(test_f)


# ---------------------------------------------------------------- against the loops


@pytest.fixture(scope="module")
def data():
    return sparse_data()


@pytest.mark.parametrize("device", DEVICES)
def test_semantic_consistency_matches_loop(data, device):
    x, labels = data
    assert metrics.semantic_consistency(*as_torch(x, labels, device)) == pytest.approx(sc_loop(x, labels), abs=TOL)


def sc_variants_loop(x: np.ndarray, labels: np.ndarray, min_count: int) -> tuple[float, float]:
    """(SC over dims with at least ``min_count`` active rows, share of active entries in their
    dimension's majority class), both in %, by counting row by row."""
    shares, majority_entries, active_entries = [], 0, 0
    for active_labels in active_labels_per_dim(x, labels):
        top = Counter(active_labels).most_common(1)[0][1]
        majority_entries += top
        active_entries += len(active_labels)
        if len(active_labels) >= min_count:
            shares.append(top / len(active_labels))
    supported = 100.0 * sum(shares) / len(shares) if shares else math.nan
    return supported, 100.0 * majority_entries / active_entries


@pytest.mark.parametrize("device", DEVICES)
def test_supported_and_weighted_semantic_consistency_match_loop(data, device):
    x, labels = data
    f, y = as_torch(x, labels, device)
    n = x.shape[0]
    for min_share in (0.0, 0.01, 0.1, 0.3):
        expected, weighted = sc_variants_loop(x, labels, max(1, math.ceil(min_share * n)))
        got = metrics.semantic_consistency_supported(f, y, min_share)
        assert got == pytest.approx(expected, abs=TOL, nan_ok=True)
    assert metrics.semantic_consistency_supported(f, y, 0.0) == pytest.approx(metrics.semantic_consistency(f, y), abs=TOL)
    assert metrics.semantic_consistency_weighted(f, y) == pytest.approx(weighted, abs=TOL)


def test_rare_dimensions_move_plain_sc_but_not_supported_or_weighted_sc():
    """A dense class-blind code plus dimensions that each fire on one image: the plain SC rises
    towards 100 with every such dimension, the supported SC ignores them (1 image < 1 % of 1,000)
    and the weighted SC barely moves."""
    rng = np.random.default_rng(3)
    n, classes = 1000, 10
    labels = np.arange(n) % classes
    dense = rng.random((n, 8)) + 0.1
    rare = np.zeros((n, 40))
    rare[rng.choice(n, 40, replace=False), np.arange(40)] = 1.0
    f, y = as_torch(np.concatenate([dense, rare], axis=1), labels)
    assert metrics.semantic_consistency(f, y) == pytest.approx((8 * 10.0 + 40 * 100.0) / 48, abs=1e-9)
    assert metrics.semantic_consistency_supported(f, y) == pytest.approx(10.0, abs=1e-9)
    assert metrics.semantic_consistency_weighted(f, y) == pytest.approx(100.0 * (8 * 100 + 40) / (8 * 1000 + 40), abs=1e-9)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.01", True, None])
def test_supported_semantic_consistency_names_a_bad_share(bad):
    f, y = as_torch(np.ones((4, 2)), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"min_share must be a number in \[0, 1\], got"):
        metrics.semantic_consistency_supported(f, y, bad)


@pytest.mark.parametrize("device", DEVICES)
def test_semantic_entropies_match_loop(data, device):
    x, labels = data
    f, y = as_torch(x, labels, device)
    by_sum, by_mean, by_frequency = entropies_loop(x, labels)
    assert metrics.semantic_entropy_sum(f, y) == pytest.approx(by_sum, abs=TOL)
    assert metrics.semantic_entropy_mean(f, y) == pytest.approx(by_mean, abs=TOL)
    assert metrics.semantic_entropy_frequency(f, y) == pytest.approx(by_frequency, abs=TOL)


def test_signed_features_use_magnitudes_and_input_is_not_modified(data):
    x, labels = data
    signs = np.where(np.random.default_rng(9).random(x.shape) < 0.5, -1.0, 1.0)
    signed = x * signs
    f, y = as_torch(signed, labels)
    before = f.clone()
    by_sum, by_mean, by_frequency = entropies_loop(signed, labels)
    assert metrics.semantic_entropy_sum(f, y) == pytest.approx(by_sum, abs=TOL)
    assert metrics.semantic_entropy_mean(f, y) == pytest.approx(by_mean, abs=TOL)
    assert metrics.semantic_entropy_frequency(f, y) == pytest.approx(by_frequency, abs=TOL)
    assert metrics.semantic_consistency(f, y) == pytest.approx(sc_loop(signed, labels), abs=TOL)
    assert metrics.sparsity(f) == pytest.approx(sparsity_loop(signed), abs=TOL)
    assert torch.equal(f, before)


def test_sum_and_mean_entropies_differ_under_class_imbalance():
    rng = np.random.default_rng(3)
    labels = np.array([0] * 200 + [1] * 20 + [2] * 80)
    x = rng.random((300, 12)) * (rng.random((300, 12)) > 0.5)
    f, y = as_torch(x, labels)
    by_sum, by_mean, _ = entropies_loop(x, labels)
    assert abs(by_sum - by_mean) > 1e-3
    assert metrics.semantic_entropy_sum(f, y) == pytest.approx(by_sum, abs=TOL)
    assert metrics.semantic_entropy_mean(f, y) == pytest.approx(by_mean, abs=TOL)


@pytest.mark.parametrize("device", DEVICES)
def test_dimension_metrics_match_loop(data, device):
    x, labels = data
    f = as_torch(x, device=device)
    assert metrics.sparsity(f) == pytest.approx(sparsity_loop(x), abs=TOL)
    assert metrics.sparsity(f, labels=None) == metrics.sparsity(f)
    assert metrics.active_dims(f) == float(len(nonzero_columns(unit_rows(x))))
    assert metrics.orthogonality(f) == pytest.approx(orthogonality_loop(x), abs=TOL)
    assert metrics.effective_rank(f) == pytest.approx(effective_rank_numpy(x), abs=TOL)
    assert metrics.effective_rank(f, exponentiate=True) == pytest.approx(math.exp(effective_rank_numpy(x)), rel=TOL)


def test_active_dims_counts_sub_threshold_columns_but_entropies_do_not(data):
    x, labels = data
    f, y = as_torch(x, labels)
    # column 25 holds only 1e-9 entries: non-zero mean, never active
    assert metrics.active_dims(f) == x.shape[1] - 2
    x_without = np.delete(x, 25, axis=1)
    assert metrics.semantic_entropy_frequency(f, y) == pytest.approx(
        metrics.semantic_entropy_frequency(*as_torch(x_without, labels)), abs=1e-12
    )


@pytest.mark.parametrize("top_dims", [None, 3, 10])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_retrieval_precision_within_tie_bounds_of_loop(data, k, top_dims):
    x, labels = data
    x, labels = x[:150], labels[:150]
    low, high = retrieval_bounds_loop(x, labels, k, top_dims)
    got = metrics.retrieval_precision(*as_torch(x, labels), k=k, top_dims=top_dims)
    assert low - TOL <= got <= high + TOL


def test_retrieval_precision_matches_loop_without_ties():
    rng = np.random.default_rng(1)
    x = rng.random((120, 16)) + 0.01
    labels = rng.integers(0, 4, size=120)
    for k, top_dims in [(1, None), (7, None), (7, 4)]:
        low, high = retrieval_bounds_loop(x, labels, k, top_dims)
        assert low == high
        assert metrics.retrieval_precision(*as_torch(x, labels), k=k, top_dims=top_dims) == pytest.approx(low, abs=TOL)


def test_retrieval_precision_chunking_does_not_change_result(data, monkeypatch):
    x, labels = data
    f, y = as_torch(x + 1e-3, labels)
    whole = metrics.retrieval_precision(f, y, k=5, top_dims=8)
    monkeypatch.setattr(metrics, "_SIMILARITY_CHUNK_ENTRIES", 7 * x.shape[0])
    assert metrics.retrieval_precision(f, y, k=5, top_dims=8) == pytest.approx(whole, abs=1e-12)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_top1_matches_loop(k):
    rng = np.random.default_rng(2)
    centres = rng.random((4, 24)) * 2
    train_labels = rng.integers(0, 4, size=200)
    test_labels = rng.integers(0, 4, size=60)
    train = np.abs(centres[train_labels] + rng.normal(0, 0.8, (200, 24)))
    test = np.abs(centres[test_labels] + rng.normal(0, 0.8, (60, 24)))
    expected = knn_loop(train, train_labels, test, test_labels, k, 0.07)
    assert 0 < expected < 100
    got = metrics.knn_top1(*as_torch(train, train_labels), *as_torch(test, test_labels), k=k, temperature=0.07)
    assert got == pytest.approx(expected, abs=TOL)


def test_knn_top1_chunking_does_not_change_result(monkeypatch):
    rng = np.random.default_rng(4)
    train, test = rng.random((100, 8)), rng.random((50, 8))
    train_labels, test_labels = rng.integers(0, 3, 100), rng.integers(0, 3, 50)
    args = (*as_torch(train, train_labels), *as_torch(test, test_labels))
    whole = metrics.knn_top1(*args, k=10)
    monkeypatch.setattr(metrics, "_SIMILARITY_CHUNK_ENTRIES", 3 * 100)
    assert metrics.knn_top1(*args, k=10) == whole


# ---------------------------------------------------------------- closed cases


def balanced_labels(n_per_class: int, n_classes: int) -> np.ndarray:
    return np.repeat(np.arange(n_classes), n_per_class)


@pytest.mark.parametrize("n_classes", [2, 4, 10])
def test_dense_features_score_one_over_c(n_classes):
    labels = balanced_labels(30, n_classes)
    x = np.random.default_rng(n_classes).random((len(labels), 16)) + 0.1
    f, y = as_torch(x, labels)
    assert metrics.semantic_consistency(f, y) == pytest.approx(100.0 / n_classes, abs=1e-9)
    assert metrics.semantic_entropy_frequency(f, y) == pytest.approx(math.log(n_classes), abs=1e-9)
    assert metrics.sparsity(f) == 0.0


def test_one_hot_class_dims_are_perfectly_consistent():
    labels = balanced_labels(20, 5)
    rng = np.random.default_rng(0)
    x = np.zeros((len(labels), 8))
    x[np.arange(len(labels)), labels] = rng.random(len(labels)) + 0.5
    f, y = as_torch(x, labels)
    assert metrics.semantic_consistency(f, y) == pytest.approx(100.0, abs=1e-9)
    assert metrics.semantic_entropy_frequency(f, y) == pytest.approx(0.0, abs=1e-12)
    assert metrics.semantic_entropy_sum(f, y) == pytest.approx(0.0, abs=1e-12)
    assert metrics.semantic_entropy_mean(f, y) == pytest.approx(0.0, abs=1e-12)
    assert metrics.active_dims(f) == 5.0
    assert metrics.orthogonality(f) == pytest.approx(0.0, abs=1e-12)
    assert metrics.sparsity(f) == pytest.approx(1 - 1 / 8, abs=1e-12)
    # perfectly clustered: every other sample of the class is at cosine 1, all others at 0
    assert metrics.retrieval_precision(f, y, k=19) == pytest.approx(100.0, abs=1e-9)
    assert metrics.knn_top1(f, y, f, y, k=5) == pytest.approx(100.0, abs=1e-9)


def test_labels_are_arbitrary_integers():
    x, labels = sparse_data(seed=5)
    renamed = np.array([-7, 3, 100, 42, 0])[labels]
    f, y = as_torch(x, labels)
    g, z = as_torch(x, renamed)
    assert metrics.semantic_consistency(g, z) == pytest.approx(metrics.semantic_consistency(f, y), abs=1e-12)
    assert metrics.semantic_entropy_mean(g, z) == pytest.approx(metrics.semantic_entropy_mean(f, y), abs=1e-12)
    assert metrics.retrieval_precision(g, z, k=3) == pytest.approx(metrics.retrieval_precision(f, y, k=3), abs=1e-12)


def test_sparsity_of_a_known_matrix():
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 1e-7, 3.0], [0.0, 0.0, 0.0, 0.0]])
    # after row normalisation 1e-7 becomes ~2.8e-8 <= 1e-5: 3 + 2 + 4 zeros out of 12
    assert metrics.sparsity(x) == pytest.approx(9 / 12, abs=1e-12)
    assert metrics.active_dims(x) == 4.0


def test_orthogonality_closed_forms():
    assert metrics.orthogonality(torch.eye(6)) == pytest.approx(0.0, abs=1e-12)
    a = 1 / math.sqrt(2)
    two_columns = torch.tensor([[1.0, 0.0], [a, a]], dtype=torch.float64)
    # columns (1, a) and (0, a): cosine = a / sqrt(1 + a^2) = 1 / sqrt(3)
    assert metrics.orthogonality(two_columns) == pytest.approx(1 / math.sqrt(3), abs=1e-12)
    repeated = torch.ones(10, 3)
    assert metrics.orthogonality(repeated) == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(metrics.orthogonality(torch.tensor([[1.0, 0.0], [2.0, 0.0]])))


def test_effective_rank_closed_forms():
    rng = np.random.default_rng(0)
    rank_one = np.outer(rng.random(50) + 0.1, rng.random(12) + 0.1)
    assert metrics.effective_rank(as_torch(rank_one)) == pytest.approx(0.0, abs=1e-9)
    assert metrics.effective_rank(as_torch(rank_one), exponentiate=True) == pytest.approx(1.0, abs=1e-9)
    assert metrics.effective_rank(torch.eye(8)) == pytest.approx(math.log(8), abs=1e-9)
    assert metrics.effective_rank(torch.eye(8), exponentiate=True) == pytest.approx(8.0, abs=1e-9)
    assert math.isnan(metrics.effective_rank(torch.zeros(4, 3)))


def test_retrieval_top_dims_ignores_a_dominant_nuisance():
    """Rows = 2 e_class + 1 on six nuisance dims of a group independent of the class.

    With all dims the nuisance wins: cosine 1 to the same (class, group), 0.6 to the other class in
    the same group, 0.4 to the same class in the other group. With k = 2m - 1 the neighbours are
    the m - 1 same-cell rows and the m other-class rows: precision (m - 1) / (2m - 1). With the
    single top dim the query is its class dim only, so every neighbour shares the class.
    """
    m = 5
    rows, labels = [], []
    for cls in range(2):
        for group in range(2):
            for _ in range(m):
                row = np.zeros(14)
                row[cls] = 2.0
                row[2 + 6 * group : 8 + 6 * group] = 1.0
                rows.append(row)
                labels.append(cls)
    f, y = as_torch(np.array(rows), np.array(labels))
    k = 2 * m - 1
    assert metrics.retrieval_precision(f, y, k=k) == pytest.approx(100.0 * (m - 1) / (2 * m - 1), abs=1e-9)
    assert metrics.retrieval_precision(f, y, k=k, top_dims=1) == pytest.approx(100.0, abs=1e-9)


def test_all_zero_features_give_nan():
    f, y = torch.zeros(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
    assert math.isnan(metrics.semantic_consistency(f, y))
    assert math.isnan(metrics.semantic_entropy_sum(f, y))
    assert metrics.sparsity(f) == 1.0
    assert metrics.active_dims(f) == 0.0


def test_float32_and_float64_inputs_agree(data):
    x, labels = data
    f64, y = as_torch(x, labels)
    f32 = f64.to(torch.float32)
    assert metrics.semantic_consistency(f32, y) == pytest.approx(metrics.semantic_consistency(f64, y), abs=1e-4)
    assert metrics.semantic_entropy_sum(f32, y) == pytest.approx(metrics.semantic_entropy_sum(f64, y), abs=1e-5)


def test_results_are_python_floats(data):
    f, y = as_torch(*data)
    for value in [
        metrics.semantic_consistency(f, y),
        metrics.semantic_entropy_frequency(f, y),
        metrics.sparsity(f),
        metrics.active_dims(f),
        metrics.effective_rank(f),
        metrics.orthogonality(f),
        metrics.retrieval_precision(f, y, k=2),
        metrics.knn_top1(f, y, f, y, k=2),
    ]:
        assert type(value) is float


# ---------------------------------------------------------------- errors


LABELLED = [
    metrics.semantic_consistency,
    metrics.semantic_entropy_sum,
    metrics.semantic_entropy_mean,
    metrics.semantic_entropy_frequency,
]
UNLABELLED = [metrics.sparsity, metrics.active_dims, metrics.effective_rank, metrics.orthogonality]


@pytest.mark.parametrize("metric", LABELLED)
def test_labelled_metrics_reject_bad_shapes(metric):
    f, y = torch.rand(10, 4), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match="2-D"):
        metric(torch.rand(10), y)
    with pytest.raises(ValueError, match="9 entries but features has 10 rows"):
        metric(f, y[:9])
    with pytest.raises(ValueError, match="1-D"):
        metric(f, y[:, None])
    with pytest.raises(ValueError, match="integer dtype"):
        metric(f, y.float())


@pytest.mark.parametrize("metric", UNLABELLED)
def test_unlabelled_metrics_reject_bad_shapes(metric):
    with pytest.raises(ValueError, match="2-D"):
        metric(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="at least one row"):
        metric(torch.rand(0, 4))


def test_retrieval_rejects_bad_k_and_top_dims():
    f, y = torch.rand(10, 4), torch.zeros(10, dtype=torch.int64)
    for k in (0, 10, 11):
        with pytest.raises(ValueError, match="k must satisfy"):
            metrics.retrieval_precision(f, y, k=k)
    with pytest.raises(ValueError, match="top_dims"):
        metrics.retrieval_precision(f, y, k=2, top_dims=5)
    with pytest.raises(ValueError, match="top_dims"):
        metrics.retrieval_precision(f, y, k=2, top_dims=0)
    with pytest.raises(ValueError, match="rows"):
        metrics.retrieval_precision(f, y[:8], k=2)
    assert 0.0 <= metrics.retrieval_precision(f, y, k=9) <= 100.0


def test_knn_rejects_bad_arguments():
    train, y = torch.rand(10, 4), torch.zeros(10, dtype=torch.int64)
    test, z = torch.rand(6, 4), torch.zeros(6, dtype=torch.int64)
    with pytest.raises(ValueError, match="columns"):
        metrics.knn_top1(train, y, torch.rand(6, 5), z)
    with pytest.raises(ValueError, match="test_labels has 5 entries but test_features has 6 rows"):
        metrics.knn_top1(train, y, test, z[:5], k=3)
    with pytest.raises(ValueError, match="k must satisfy"):
        metrics.knn_top1(train, y, test, z, k=11)
    with pytest.raises(ValueError, match="k must satisfy"):
        metrics.knn_top1(train, y, test, z, k=0)
    with pytest.raises(ValueError, match="temperature"):
        metrics.knn_top1(train, y, test, z, k=3, temperature=0.0)
