"""The records of the site's data files, computed from one run's :class:`RunFeatures`.

- ``table``: one entry per dimension for the sortable table (loaded when the site opens);
- ``dims/<c>``: the details of a chunk of dimensions for their pages (loaded on demand);
- ``images/<s>``: per-image features, gates and nearest neighbours of a shard of test images
  (loaded on demand).

Every record is JSON-ready after :func:`packing.json_ready`; large arrays are packed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from bayesncl_pyro.browser import dimension_stats as stats
from bayesncl_pyro.browser.matching import DimensionMatch
from bayesncl_pyro.browser.neighbours import nearest_images, shared_dimensions
from bayesncl_pyro.browser.packing import pack_array, pack_bits, quantize
from bayesncl_pyro.browser.run_features import RunFeatures
from bayesncl_pyro.evaluation import metrics
from bayesncl_pyro.evaluation.factor_check import check_factors, scene_factor_codes

PREVIEW_IMAGES = 4
"""Top images shown in each table row."""


@dataclass(frozen=True)
class BrowserOptions:
    """How much the pages show: ``top_k`` most activating images and ``sample_k`` random activating
    images per dimension, ``coactive`` nearest dimensions, ``neighbours`` nearest images per image
    with their ``shared`` strongest shared dimensions, histogram ``bins``; file sizes
    (``dims_per_file``, ``images_per_file``) and the ``seed`` of the random samples."""

    top_k: int = 16
    sample_k: int = 16
    coactive: int = 8
    neighbours: int = 8
    shared: int = 4
    bins: int = stats.HISTOGRAM_BINS
    dims_per_file: int = 64
    images_per_file: int = 500
    seed: int = 0


@dataclass
class RunRecords:
    """The data files of one run: the table record, dimension chunks and image shards."""

    table: dict[str, Any]
    dimension_chunks: list[dict[str, Any]]
    image_shards: list[dict[str, Any]]


def factor_labels(run: RunFeatures) -> tuple[list[str], np.ndarray, list[str]] | None:
    """On ``scenes``: (label of each dimension, [F, D] scores, factor names) of the ground-truth
    factor check on z before the gate, as ``bayesncl-eval`` computes it; None elsewhere."""
    if "background" not in run.factors:
        return None
    codes = scene_factor_codes(run.labels, run.factors)
    open_rate = run.gate.float().mean(dim=0) if run.has_gates else None
    check = check_factors(F.normalize(run.z, dim=1), codes, open_rate)
    return check.dim_labels, check.scores.numpy(), check.factor_names


def table_record(run: RunFeatures, details: dict[str, Any], match: DimensionMatch | None) -> dict[str, Any]:
    """The per-dimension table: one entry per column, each a list of D values."""
    counts = details["class_counts"]
    majority, share = stats.majority_class(counts)
    active = details["active"]
    frequency = active.double().mean(dim=0).numpy()
    gated = run.gated.double()
    active_sum = torch.where(active, gated, torch.zeros_like(gated)).sum(dim=0).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_activation = np.where(frequency > 0, active_sum / active.sum(dim=0).numpy(), np.nan)
    columns: dict[str, Any] = {
        "frequency": frequency,
        "majority": majority,
        "majority_share": share,
        "entropy": stats.class_entropy(counts),
        "mean_activation": mean_activation,
        "max_activation": gated.max(dim=0).values.numpy(),
        "dead": frequency == 0,
    }
    if run.has_gates:
        gate_open = run.gate.double().mean(dim=0).numpy()
        columns["gate_open"] = gate_open
        columns["always_open"] = gate_open == 1
        columns["gate_prob"] = run.gate_probs.double().mean(dim=0).numpy()
        columns["unsure"] = stats.unsure_share(run.gate_probs)
    if run.draws is not None:
        columns["open_mean"], columns["open_lo"], columns["open_hi"] = stats.posterior_interval(run.draws.open_rate)
        if run.draws.pi is not None:
            columns["pi_mean"], columns["pi_lo"], columns["pi_hi"] = stats.posterior_interval(run.draws.pi)
    factors = details["factors"]
    if factors is not None:
        labels, scores, _ = factors
        columns["factor"] = labels
        best = np.where(np.isnan(scores), -np.inf, scores).max(axis=0)
        columns["factor_score"] = np.where(np.isfinite(best), best, np.nan)
    if match is not None:
        columns["partner"], columns["partner_r"], columns["partner_mutual"] = (
            match.partner, match.correlation, match.mutual)
    labels = run.labels
    summary = {
        "dims": run.num_dims,
        "dead": int(columns["dead"].sum()),
        "always_open": int(columns["always_open"].sum()) if run.has_gates else None,
        "gate_open": float(columns["gate_open"].mean()) if run.has_gates else None,
        "semantic_consistency": metrics.semantic_consistency(run.gated, labels),
        "semantic_entropy_frequency": metrics.semantic_entropy_frequency(run.gated, labels),
        "sparsity": metrics.sparsity(run.gated),
    }
    return {
        "label": run.label, "info": run.info, "num_dims": run.num_dims, "has_gates": run.has_gates,
        "has_draws": run.draws is not None, "has_pi": run.draws is not None and run.draws.pi is not None,
        "factor_names": factors[2] if factors is not None else None,
        "columns": columns, "preview": details["top"][:, :PREVIEW_IMAGES], "summary": summary,
    }


def dimension_chunks(run: RunFeatures, details: dict[str, Any], options: BrowserOptions) -> Iterator[dict[str, Any]]:
    """The details of each dimension's page, ``options.dims_per_file`` dimensions per record."""
    gated = run.gated
    top_values = np.take_along_axis(gated.T.numpy(), np.maximum(details["top"], 0), axis=1)
    top_z = stats.top_images(run.z, options.top_k)
    top_z_values = np.take_along_axis(run.z.T.numpy(), np.maximum(top_z, 0), axis=1)
    edges, histogram, inactive = stats.class_histograms(gated, run.labels, len(run.classes), options.bins)
    coactive, coactive_similarity = stats.coactivation_neighbours(gated, options.coactive)
    class_open = None
    if run.draws is not None:
        class_open = stats.posterior_interval(run.draws.class_open_rate)
    class_prob = probability_histogram = None
    if run.has_gates:
        probability_histogram = stats.probability_histograms(run.gate_probs, options.bins)
        sizes = torch.bincount(run.labels, minlength=len(run.classes)).double().clamp(min=1)
        class_prob = (torch.zeros(len(run.classes), run.num_dims, dtype=torch.float64)
                      .index_add_(0, run.labels, run.gate_probs.double()) / sizes[:, None]).numpy()
    factors = details["factors"]
    for start in range(0, run.num_dims, options.dims_per_file):
        dims = []
        for d in range(start, min(start + options.dims_per_file, run.num_dims)):
            top = details["top"][d]
            entry = {
                "top": top[top >= 0], "top_values": top_values[d][top >= 0],
                "sample": details["sample"][d][details["sample"][d] >= 0],
                "top_z": top_z[d][top_z[d] >= 0], "top_z_values": top_z_values[d][top_z[d] >= 0],
                "histogram": {"edges": edges[d], "counts": histogram[d], "inactive": inactive[d]},
                "coactive": {"dims": coactive[d][coactive[d] >= 0],
                             "similarity": coactive_similarity[d][coactive[d] >= 0]},
                "class_counts": details["class_counts"][:, d],
            }
            if class_open is not None:
                mean, lower, upper = (values[:, d] for values in class_open)
                entry["class_open"] = {"mean": mean, "lo": lower, "hi": upper}
            if class_prob is not None:
                entry["class_gate_prob"] = class_prob[:, d]
                entry["gate_prob_histogram"] = probability_histogram[d]
            if factors is not None:
                entry["factor_scores"] = factors[1][:, d]
            dims.append(entry)
        yield {"start": start, "dims": dims}


def image_shards(run: RunFeatures, options: BrowserOptions, progress: bool = False) -> Iterator[dict[str, Any]]:
    """Per-image data, ``options.images_per_file`` images per record: quantised gated features,
    gate probabilities and hard gates, nearest images with their shared dimensions, factors."""
    nearest, similarity = nearest_images(run.gated, options.neighbours, progress)
    shared, shares = shared_dimensions(run.gated, nearest, options.shared)
    for start in range(0, run.num_images, options.images_per_file):
        rows = slice(start, min(start + options.images_per_file, run.num_images))
        record: dict[str, Any] = {
            "start": start, "count": rows.stop - start,
            "gated": quantize(run.gated[rows].numpy()),
            "neighbours": pack_array(nearest[rows], "i32"),
            "similarity": pack_array(similarity[rows], "f32"),
            "shared": pack_array(shared[rows], "i32"),
            "shares": pack_array(shares[rows], "f32"),
            "factors": {name: values[rows].tolist() for name, values in run.factors.items()},
        }
        if run.has_gates:
            record["gate_probs"] = quantize(run.gate_probs[rows].numpy())
            record["gate"] = pack_bits(run.gate[rows].numpy() > 0.5)
        yield record


def run_records(run: RunFeatures, options: BrowserOptions, match: DimensionMatch | None = None,
                progress: bool = False) -> RunRecords:
    active = stats.activity(run.gated)
    details = {
        "active": active,
        "class_counts": stats.class_counts(active, run.labels, len(run.classes)),
        "top": stats.top_images(run.gated, options.top_k, active),
        "sample": stats.activating_sample(active, options.sample_k, options.seed),
        "factors": factor_labels(run),
    }
    return RunRecords(table_record(run, details, match), list(dimension_chunks(run, details, options)),
                      list(image_shards(run, options, progress)))
