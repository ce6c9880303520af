"""Time the vectorised class-selectivity metrics against a per-dimension Python loop.

At N = 10,000 samples, D = 256 dimensions and C = 10 classes (random non-negative features, 70 %
zeros), semantic consistency and the three semantic entropies are computed both ways, alternating
in the same process so that both see the same machine load. Prints each time (best of the
repeats), the ratio loop / vectorised, and the difference between the two results.

    python scripts/bench_metrics.py [--repeats 5] [--device cpu] [--threads 1]
"""
from __future__ import annotations

import argparse
import functools
import math
import time

import torch
import torch.nn.functional as F

from bayesncl_pyro.evaluation import metrics

ACTIVE = metrics.ACTIVITY_THRESHOLD


def make_features(n: int, d: int, n_classes: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, d] non-negative features with 70 % zeros and [n] labels in 0..n_classes-1."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(n, d, generator=generator)
    keep = torch.rand(n, d, generator=generator) > 0.7
    labels = torch.randint(0, n_classes, (n,), generator=generator)
    return (values * keep).to(device), labels.to(device)


def column_entropy(weights: torch.Tensor) -> float:
    p = weights / weights.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def loop_semantic_consistency(features: torch.Tensor, labels: torch.Tensor) -> float:
    f = F.normalize(features.double(), dim=1)
    shares = []
    for d in range(f.shape[1]):
        column = f[:, d]
        if float(column.sum()) == 0:
            continue
        active_labels = labels[column.abs() > ACTIVE]
        if active_labels.numel() == 0:
            continue
        shares.append(float(torch.bincount(active_labels).max()) / active_labels.numel())
    return 100.0 * sum(shares) / len(shares)


def loop_semantic_entropy(features: torch.Tensor, labels: torch.Tensor, weighting: str) -> float:
    """Per-dimension loop for one entropy variant: weighting in {"sum", "mean", "frequency"}."""
    f = F.normalize(features.double(), dim=1)
    n_classes = int(labels.max()) + 1
    class_sizes = torch.bincount(labels, minlength=n_classes).double()
    entropies = []
    for d in range(f.shape[1]):
        column = f[:, d].abs()
        active = column > ACTIVE
        if not bool(active.any()):
            continue
        if weighting == "frequency":
            weights = torch.bincount(labels[active], minlength=n_classes).double()
        else:
            weights = torch.bincount(labels, weights=column, minlength=n_classes)
            if weighting == "mean":
                weights = weights / class_sizes
        entropies.append(column_entropy(weights))
    return sum(entropies) / len(entropies)


def timed(function, *args):
    if args[0].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = function(*args)
    if args[0].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    features, labels = make_features(args.n, args.d, args.classes, seed=0, device=args.device)
    pairs = {"semantic_consistency": (loop_semantic_consistency, metrics.semantic_consistency)}
    for weighting in ("sum", "mean", "frequency"):
        pairs[f"semantic_entropy_{weighting}"] = (
            functools.partial(loop_semantic_entropy, weighting=weighting),
            getattr(metrics, f"semantic_entropy_{weighting}"),
        )
    print(f"N={args.n} D={args.d} C={args.classes} device={args.device} threads={args.threads} "
          f"repeats={args.repeats} (best time of each)")
    for name, (loop, vectorised) in pairs.items():
        vectorised(features, labels)
        best_loop, best_vectorised = math.inf, math.inf
        for _ in range(args.repeats):
            t_loop, loop_result = timed(loop, features, labels)
            t_vectorised, vectorised_result = timed(vectorised, features, labels)
            best_loop, best_vectorised = min(best_loop, t_loop), min(best_vectorised, t_vectorised)
        print(f"{name}: loop {best_loop * 1e3:.1f} ms, vectorised {best_vectorised * 1e3:.1f} ms, "
              f"ratio loop/vectorised {best_loop / best_vectorised:.1f}x, "
              f"|difference| {abs(loop_result - vectorised_result):.2e}")


if __name__ == "__main__":
    main()
