"""Evaluation metrics of SPEC §6: pure functions of a feature matrix and its labels.

Every metric takes ``features`` of shape [N, D] (one row per sample, one column per output
dimension) and, where it needs them, integer ``labels`` of shape [N]; it returns a python float.
Tensors may live on any device; the result does not depend on it beyond rounding.

Conventions shared by all metrics:

* **Row normalisation first.** Each metric L2-normalises the rows before anything else
  (``f = x / max(||x||, 1e-12)``), so a row that is all zero stays all zero. The features of
  SPEC §6 are already row-normalised, so this is a no-op for them; for other inputs it makes the
  activity threshold below independent of the scale of a row.
* **Activity.** An entry is *active* when ``|f| > ACTIVITY_THRESHOLD`` (1e-5). A dimension is
  active when at least one entry in its column is active (semantic consistency and the three
  semantic entropies). ``active_dims`` and ``orthogonality`` follow the SPEC's own wording
  instead: a dimension counts when its mean ``|f|`` is strictly greater than zero.
* **Signed features.** Where a metric needs a distribution over classes it uses ``|f|``; for the
  non-negative features that NCL produces this is the same as ``f``, and it lets the metrics be
  taken on plain SimCLR features too.
* **Classes** are the distinct label values present in ``labels`` (any integers); a class with no
  samples cannot occur, so the per-class mean is always defined.
* **Units.** Semantic consistency, retrieval precision and k-NN accuracy are percentages
  (0–100); sparsity is a share (0–1); entropies are in nats.
* **Undefined cases** (no active dimension, fewer than two active dimensions for
  orthogonality, an all-zero matrix for the effective rank) return ``nan``;
  :data:`UNDEFINED_WHEN` says why in words, for the pages that show the result.

The counting metrics run in float64 so that the threshold test and the entropies do not depend on
the input precision; the two neighbour searches (retrieval, k-NN) run in the input's floating
precision (float32 at least) and in chunks of queries, so that N = 10,000 and more fit in memory.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVITY_THRESHOLD = 1e-5
"""An entry with ``|f|`` at or below this (after row normalisation) counts as zero."""

UNDEFINED_WHEN = {
    "semantic_consistency": "no test image has an active dimension",
    "semantic_consistency_supported": "no dimension is active on at least 1 % of the test images",
    "semantic_consistency_weighted": "no test image has an active dimension",
    "semantic_entropy_sum": "no test image has an active dimension",
    "semantic_entropy_mean": "no test image has an active dimension",
    "semantic_entropy_frequency": "no test image has an active dimension",
    "effective_rank": "every feature is zero on every test image",
    "orthogonality": "fewer than two dimensions are active",
}
"""Metric -> the case in which it is ``nan``, as the pages say it ("not defined: ..."): a reader
told only "nan" cannot tell an empty representation from a bug. The metrics are taken on the test
split, hence the wording."""

_SIMILARITY_CHUNK_ENTRIES = 2**23
"""Upper bound on the entries of one [queries, N] similarity block in the neighbour searches."""


def _check_features(features: Tensor, name: str = "features") -> None:
    if not isinstance(features, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [N, D], got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(features.shape)}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(features.shape)}")


def _check_labels(labels: Tensor, n_rows: int, name: str = "labels", features_name: str = "features") -> None:
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [N], got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{name} must have an integer dtype (int64), got {labels.dtype}")
    if labels.shape[0] != n_rows:
        raise ValueError(
            f"{name} has {labels.shape[0]} entries but {features_name} has {n_rows} rows; they must match"
        )


def _check_k(k: int, upper: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {k!r}")
    if k < 1 or k > upper:
        raise ValueError(f"k must satisfy 1 <= k <= {upper} ({what}), got k={k}")


def _unit_rows64(features: Tensor) -> Tensor:
    """[N, D] -> new [N, D] float64 tensor with unit-norm rows (zero rows stay zero).

    Same result as ``F.normalize`` (division by ``max(norm, 1e-12)``), written with one
    allocation so that callers may keep modifying the result in place.
    """
    f = features.to(torch.float64, copy=True)
    norms = torch.linalg.vector_norm(f, dim=1, keepdim=True).clamp_min_(1e-12)
    return f.div_(norms)


def _unit_rows_search(features: Tensor) -> Tensor:
    """Row-normalised copy in the input's floating precision, at least float32."""
    dtype = features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
    return F.normalize(features.to(dtype), p=2.0, dim=1)


def _class_index(labels: Tensor) -> tuple[Tensor, int]:
    """[N] integer labels -> ([N] class index in 0..C-1, C), classes = distinct values present."""
    classes, index = torch.unique(labels, return_inverse=True)
    return index, int(classes.numel())


def _per_class_sums(values: Tensor, class_index: Tensor, n_classes: int) -> Tensor:
    """[N, D] values, [N] class index -> [C, D] per-class column sums."""
    sums = torch.zeros(n_classes, values.shape[1], dtype=values.dtype, device=values.device)
    return sums.index_add_(0, class_index, values)


def _entropy_over_classes(weights: Tensor) -> Tensor:
    """[C, D] non-negative weights -> [D] natural-log entropy of each column normalised to sum 1.

    Columns must have a positive sum; terms with zero weight contribute 0 (0 log 0 = 0).
    """
    p = weights / weights.sum(dim=0, keepdim=True)
    return -torch.special.xlogy(p, p).sum(dim=0)


def _class_counts(active: Tensor, class_index: Tensor, n_classes: int) -> Tensor:
    """[N, D] bool, [N] class index -> [C, D] float64 number of active entries per class.

    Counted in float32 (exact for counts below 2**24) to halve the memory of the [N, D] copy.
    """
    dtype = torch.float32 if active.shape[0] < 2**24 else torch.float64
    counts = _per_class_sums(active.to(dtype), class_index, n_classes)
    return counts.to(torch.float64)


def _activity(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Shared first steps of SC and the entropies.

    Returns ``f`` [N, D] (a new float64 tensor with unit rows, which the caller may overwrite),
    ``active`` [N, D] bool (``|f| > 1e-5``), the class index [N] and the number of classes C.
    """
    _check_features(features)
    _check_labels(labels, features.shape[0])
    f = _unit_rows64(features)
    active = f.abs() > ACTIVITY_THRESHOLD
    class_index, n_classes = _class_index(labels)
    return f, active, class_index.to(f.device), n_classes


def semantic_consistency(features: Tensor, labels: Tensor) -> float:
    """Mean over dimensions of the majority-label share among a dimension's active samples (%).

    A dimension is kept when its column sum is non-zero and it has at least one active entry
    (a kept dimension with no active sample would have no majority label). For each kept
    dimension d: ``max_c count[c, d] / sum_c count[c, d]``, with ``count[c, d]`` the number of
    samples of class c with ``|f[:, d]| > 1e-5``. A dense representation scores 100 times the
    largest class share (100 / C for balanced classes); dimensions that each fire for one class
    only score 100.

    features: [N, D]; labels: [N] integers. Returns a float in [0, 100], ``nan`` if no dimension
    is kept.
    """
    per_dim = semantic_consistency_per_dim(features, labels)
    kept = ~torch.isnan(per_dim)
    if not bool(kept.any()):
        return math.nan
    return float(per_dim[kept].mean())


def semantic_consistency_per_dim(features: Tensor, labels: Tensor) -> Tensor:
    """The per-dimension terms of :func:`semantic_consistency`: [D] float64, the majority-label
    share (%) among each kept dimension's active samples, ``nan`` for a dimension that is not kept.
    features: [N, D]; labels: [N] integers."""
    majority, support, kept = _majority_and_support(features, labels)
    share = majority / support.clamp_min(1.0)
    return torch.where(kept, share * 100.0, torch.full_like(share, math.nan))


def _majority_and_support(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """What every form of SC is made of, per dimension: [D] float64 count of active samples of the
    majority class, [D] float64 count of active samples, and [D] bool whether the dimension is
    kept (non-zero column sum and at least one active sample)."""
    f, active, class_index, n_classes = _activity(features, labels)
    counts = _class_counts(active, class_index, n_classes)
    support = counts.sum(dim=0)
    return counts.max(dim=0).values, support, (f.sum(dim=0) != 0) & (support > 0)


SUPPORTED_MIN_SHARE = 0.01
"""``semantic_consistency_supported`` keeps dimensions active on at least 1 % of the samples."""


def semantic_consistency_supported(features: Tensor, labels: Tensor, min_share: float = SUPPORTED_MIN_SHARE) -> float:
    """:func:`semantic_consistency` over the dimensions active on at least ``min_share`` of the
    samples (at least ``ceil(min_share * N)`` of them, and at least one).

    Why: the plain mean counts a dimension that fires on three images like one that fires on
    three thousand, and a dimension with few active samples has a high majority share by chance
    alone (one active sample scores 100). A gate that is almost always closed makes such
    dimensions; this variant asks whether the dimensions that carry the representation are
    class-consistent. ``min_share`` in [0, 1]; ``nan`` when no dimension qualifies.
    """
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be a number in [0, 1], got {min_share!r}")
    majority, support, kept = _majority_and_support(features, labels)
    kept &= support >= max(1, math.ceil(min_share * features.shape[0] - 1e-9))
    if not bool(kept.any()):
        return math.nan
    return float((majority[kept] / support[kept]).mean() * 100.0)


def semantic_consistency_weighted(features: Tensor, labels: Tensor) -> float:
    """Share (%) of the active entries that belong to their dimension's majority class:
    :func:`semantic_consistency` with every dimension weighted by its number of active samples,
    ``sum_d max_c count[c, d] / sum_d sum_c count[c, d]``.

    Why: a reading of SC that no rarely active dimension can move far; a dense representation
    still scores 100 times the largest class share and a one-class-per-dimension code 100.
    ``nan`` if no entry is active.
    """
    majority, support, kept = _majority_and_support(features, labels)
    if not bool(kept.any()):
        return math.nan
    return float(majority[kept].sum() / support[kept].sum() * 100.0)


def _mean_entropy_over_active_dims(weights: Tensor, active: Tensor) -> float:
    dims = active.any(dim=0)
    if not bool(dims.any()):
        return math.nan
    return float(_entropy_over_classes(weights[:, dims]).mean())


def semantic_entropy_sum(features: Tensor, labels: Tensor) -> float:
    """Mean over active dimensions of the entropy (nats) of the per-class sums of ``|f|``.

    For dimension d the class distribution is ``S[c, d] / sum_c S[c, d]`` with
    ``S[c, d] = sum_{i in c} |f[i, d]|`` (all entries, not only the active ones). Lower means a
    dimension's mass sits in fewer classes; a dense representation with balanced classes gives
    about log C. features: [N, D]; labels: [N]. ``nan`` if no dimension is active.
    """
    f, active, class_index, n_classes = _activity(features, labels)
    sums = _per_class_sums(f.abs_(), class_index, n_classes)
    return _mean_entropy_over_active_dims(sums, active)


def semantic_entropy_mean(features: Tensor, labels: Tensor) -> float:
    """Mean over active dimensions of the entropy (nats) of the per-class mean of ``|f|``.

    As ``semantic_entropy_sum`` but each class sum is divided by the class size, so that class
    imbalance does not count as selectivity. Only classes present in ``labels`` take part, so no
    class has zero samples. features: [N, D]; labels: [N]. ``nan`` if no dimension is active.
    """
    f, active, class_index, n_classes = _activity(features, labels)
    sums = _per_class_sums(f.abs_(), class_index, n_classes)
    class_sizes = torch.bincount(class_index, minlength=n_classes).to(torch.float64)
    return _mean_entropy_over_active_dims(sums / class_sizes[:, None], active)


def semantic_entropy_frequency(features: Tensor, labels: Tensor) -> float:
    """Mean over active dimensions of the entropy (nats) of the per-class active counts.

    For dimension d the class distribution is ``count[c, d] / sum_c count[c, d]``, with
    ``count`` as in ``semantic_consistency``. A dimension that fires for one class only has
    entropy 0. features: [N, D]; labels: [N]. ``nan`` if no dimension is active.
    """
    _, active, class_index, n_classes = _activity(features, labels)
    counts = _class_counts(active, class_index, n_classes)
    return _mean_entropy_over_active_dims(counts, active)


def sparsity(features: Tensor, labels: Tensor | None = None) -> float:
    """Share (0–1) of entries with ``|f| <= 1e-5`` after row normalisation.

    features: [N, D]; ``labels`` is accepted for a uniform call signature and ignored.
    """
    _check_features(features)
    f = _unit_rows64(features)
    return float((f.abs() <= ACTIVITY_THRESHOLD).to(torch.float64).mean())


def _nonzero_dims(f: Tensor) -> Tensor:
    """[N, D] -> [D] bool: the column's mean |f| is strictly positive."""
    return f.abs().mean(dim=0) > 0


def active_dims(features: Tensor, labels: Tensor | None = None) -> float:
    """Number of dimensions whose mean ``|f|`` is strictly positive, as an integer-valued float.

    The test is ``> 0`` (any non-zero entry in the column), not the 1e-5 activity threshold: a
    dimension that never exceeds 1e-5 but is not exactly zero still counts here. Returned as a
    float so that all metrics share one return type. features: [N, D]; ``labels`` is ignored.
    """
    _check_features(features)
    return float(_nonzero_dims(_unit_rows64(features)).sum())


def effective_rank(features: Tensor, labels: Tensor | None = None, exponentiate: bool = False) -> float:
    """Entropy (nats) of the singular values of ``f`` normalised to sum 1.

    ``H = -sum_i p_i log p_i`` with ``p = s / sum(s)``, s the singular values of the [N, D]
    row-normalised feature matrix (not centred). This is what SPEC §6 reports. The usual
    "effective rank" number (Roy & Vetterli, 2007) is ``exp(H)``, between 1 and min(N, D);
    ``exponentiate=True`` returns that instead. A rank-1 matrix has H = 0. ``nan`` for an
    all-zero matrix. ``labels`` is ignored.
    """
    _check_features(features)
    singular_values = torch.linalg.svdvals(_unit_rows64(features))
    total = singular_values.sum()
    if not bool(total > 0):
        return math.nan
    p = singular_values / total
    entropy = float(-torch.special.xlogy(p, p).sum())
    return math.exp(entropy) if exponentiate else entropy


def orthogonality(features: Tensor, labels: Tensor | None = None) -> float:
    """Mean absolute cosine between distinct active dimensions (0 = mutually orthogonal columns).

    Active dimensions are those of ``active_dims`` (mean ``|f|`` > 0); their columns are
    L2-normalised into C [N, d] and the result is ``sum_{a != b} |(C^T C)[a, b]| / (d (d - 1))``,
    the off-diagonal part of ``|C^T C - I|``. ``nan`` when fewer than two dimensions are active.
    ``labels`` is ignored.
    """
    _check_features(features)
    f = _unit_rows64(features)
    columns = f[:, _nonzero_dims(f)]
    d = columns.shape[1]
    if d < 2:
        return math.nan
    columns = F.normalize(columns, p=2.0, dim=0)
    gram = (columns.T @ columns).abs()
    off_diagonal_sum = gram.sum() - gram.diagonal().sum()
    return float(off_diagonal_sum / (d * (d - 1)))


def orthogonality_authors(features: Tensor, labels: Tensor | None = None) -> float:
    """Orthogonality on the scale of the authors' evaluation code: the mean over all d² entries of
    ``|CᵀC − I| / (d (d − 1))``, C the L2-normalised active columns — :func:`orthogonality`
    divided by d². Kept beside ours so that numbers can be set against the paper's; being divided
    by d² twice over, it shrinks with the number of active dimensions, which ours does not.
    ``nan`` when fewer than two dimensions are active."""
    ours = orthogonality(features)
    if math.isnan(ours):
        return math.nan
    d = int(_nonzero_dims(_unit_rows64(features)).sum())
    return ours / d**2


def global_top_dims(features: Tensor, top_dims: int) -> Tensor:
    """Indices [top_dims] of the dimensions with the largest column sum of the row-normalised
    features, largest first: the authors' ranking for their retrieval (one ranking for the whole
    split, not one per query)."""
    return _unit_rows64(features).sum(dim=0).topk(top_dims).indices


def _keep_top_dims(queries: Tensor, top_dims: int) -> Tensor:
    """[Q, D] -> [Q, D] with all but each row's ``top_dims`` largest-|value| entries set to 0."""
    top = queries.abs().topk(top_dims, dim=1).indices
    mask = torch.zeros_like(queries, dtype=torch.bool).scatter_(1, top, True)
    return queries * mask


def _chunk_rows(n_database: int) -> int:
    return max(1, _SIMILARITY_CHUNK_ENTRIES // max(n_database, 1))


def retrieval_precision(features: Tensor, labels: Tensor, k: int, top_dims: int | None = None) -> float:
    """Precision@k (%) of leave-one-out cosine retrieval, optionally on each query's top dims.

    Every sample is a query against all other samples. With ``top_dims`` set, the query keeps
    only its own ``top_dims`` largest-magnitude dimensions (the rest are set to zero) — this is
    the "top-k dims" retrieval of SPEC §6, applied to the query only; the database rows stay
    whole. Similarity is the cosine; the result is the share of the k most similar other samples
    that carry the query's label, averaged over queries, ×100. Ties in similarity (e.g. an
    all-zero query) are broken by ``torch.topk`` and so are not specified.

    features: [N, D]; labels: [N]; 1 <= k <= N - 1; ``top_dims`` in 1..D or None (all dims).
    Queries are processed in chunks so the [chunk, N] similarity block stays bounded.
    """
    _check_features(features)
    n, d = features.shape
    _check_labels(labels, n)
    _check_k(k, n - 1, "the query itself is left out, so at most N - 1 neighbours")
    if top_dims is not None:
        if isinstance(top_dims, bool) or not isinstance(top_dims, int) or not 1 <= top_dims <= d:
            raise ValueError(f"top_dims must be None or an int in 1..{d} (D), got {top_dims!r}")
    database = _unit_rows_search(features)
    labels = labels.to(database.device)
    chunk = _chunk_rows(n)
    hits = torch.zeros((), dtype=torch.float64, device=database.device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        queries = database[start:stop]
        if top_dims is not None and top_dims < d:
            queries = _keep_top_dims(queries, top_dims)
        similarity = queries @ database.T
        rows = torch.arange(stop - start, device=database.device)
        similarity[rows, rows + start] = -math.inf
        neighbours = similarity.topk(k, dim=1).indices
        hits += (labels[neighbours] == labels[start:stop, None]).sum()
    return float(hits / (n * k) * 100.0)


def retrieval_precision_global_dims(features: Tensor, labels: Tensor, k: int, top_dims: int) -> float:
    """Precision@k (%) of leave-one-out cosine retrieval on the split's ``top_dims`` globally top
    dimensions (:func:`global_top_dims`), queries and database cut alike and rows normalised
    again: the retrieval of the authors' evaluation code. Theirs drops each query's first
    neighbour as itself; here the query itself is left out, which differs only where a row ties
    with its own similarity (an all-zero row after the cut). ``top_dims`` in 1..D."""
    _check_features(features)
    d = features.shape[1]
    if isinstance(top_dims, bool) or not isinstance(top_dims, int) or not 1 <= top_dims <= d:
        raise ValueError(f"top_dims must be an int in 1..{d} (D), got {top_dims!r}")
    kept = _unit_rows64(features)[:, global_top_dims(features, top_dims)]
    return retrieval_precision(kept.to(features.dtype if features.is_floating_point() else torch.float32),
                               labels, k)


def knn_top1(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (%) of the weighted cosine k-NN classifier used in self-supervised learning.

    For each test row, the k training rows of highest cosine similarity s vote for their labels
    with weight ``exp(s / temperature)`` (Wu et al. 2018, InstDisc; the solo-learn evaluator);
    the class with the largest total vote is the prediction (ties go to the lower class index).
    A test label that never occurs in the training labels is always counted wrong.

    train_features: [N, D]; train_labels: [N]; test_features: [M, D]; test_labels: [M];
    1 <= k <= N; temperature > 0. Test rows are processed in chunks.
    """
    _check_features(train_features, "train_features")
    _check_features(test_features, "test_features")
    _check_labels(train_labels, train_features.shape[0], "train_labels", "train_features")
    _check_labels(test_labels, test_features.shape[0], "test_labels", "test_features")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train_features has {train_features.shape[1]} columns but test_features has "
            f"{test_features.shape[1]}; they must match"
        )
    n_train = train_features.shape[0]
    _check_k(k, n_train, "number of training rows")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")

    train = _unit_rows_search(train_features)
    test = _unit_rows_search(test_features).to(device=train.device, dtype=train.dtype)
    device = train.device
    classes, train_index = torch.unique(train_labels.to(device), return_inverse=True)
    n_classes = int(classes.numel())
    test_labels = test_labels.to(device)
    chunk = _chunk_rows(n_train)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, test.shape[0], chunk):
        stop = min(start + chunk, test.shape[0])
        similarity = test[start:stop] @ train.T
        top_similarity, neighbours = similarity.topk(k, dim=1)
        weights = (top_similarity.to(torch.float64) / temperature).exp()
        votes = torch.zeros(stop - start, n_classes, dtype=torch.float64, device=device)
        votes.scatter_add_(1, train_index[neighbours], weights)
        predicted = classes[votes.argmax(dim=1)]
        correct += (predicted == test_labels[start:stop]).sum()
    return float(correct.to(torch.float64) / test.shape[0] * 100.0)
