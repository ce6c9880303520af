"""The words and units that every page, table and figure of the project uses for its numbers.

The terms are defined once here and in the README's Glossary (which says the same); eval.md,
gates_summary.md, the HTML report, the end-of-run summary and the suite and ablation tables take
their wording from this module. **Pages, tables and figures show shares as percentages**; the
JSON, CSV and NetCDF files keep the values as computed, and the keys say which is which
(:data:`PERCENT_KEYS` are stored in %, :data:`FRACTION_KEYS` as fractions 0–1).
"""
from __future__ import annotations

import math
import re
from typing import Any

from bayesncl_pyro.evaluation.markdown import NOT_DEFINED
from bayesncl_pyro.evaluation.metrics import UNDEFINED_WHEN as METRIC_UNDEFINED_WHEN

TERMS = {
    "semantic consistency": "SC: the mean over the active dimensions of the share of a dimension's active images "
                            "that belong to its majority class, in % (semantic_consistency); 100 % when every "
                            "dimension fires for one class only, 100 / C % for a dense code over C balanced classes",
    "active": "a dimension is active on an image when its value there is non-zero; an active dimension "
              "(of h, z or gated z) is active on at least one test image (the active_dims metric)",
    "dead": "a dimension of z that is zero on every test image (its unit never fires); said of z only",
    "never active": "a dimension of gated z that is zero on every test image: dead in z, or its gate never "
                    "open, or never open where z fires",
    "open": "a gate is open when the hard test-time gate is 1 (q(gate = 1 | x) above gate.threshold)",
    "hard-gate open share": "the share of test images on which a dimension's hard test-time gate is open; for a "
                            "whole run (open_rate in eval.json) the share of open (image, dimension) pairs",
    "posterior open share": "the share of test images on which a gate drawn from q is open (drawn gates), per "
                            "dimension; bayesncl-inspect draws it (open_rate in gates.nc, also per class), pages "
                            "show its posterior mean, which is the mean of q(gate = 1 | x) over the test images, and "
                            "94 % HDI. A gate with q = 0.6 on every image has a posterior open share of 60 % and a "
                            "hard-gate open share of 100 %",
    "never open": "a dimension whose gate is closed on every test image",
    "always open": "a dimension whose gate is open on every test image",
    "kept open": "a dimension whose gate is open on at least half of the test images (factor check)",
    "drawn gates": "gates drawn from q, m ~ Bern(q(gate = 1 | x)) per image and dimension with a fixed seed, "
                   "instead of the thresholded test-time gate; the feature set gated_sampled is gated z with "
                   "drawn gates, normalize(z ⊙ m) (the same as gated for an ungated run)",
    "background agrees": "a test image of a dataset whose training split ties the background to the class "
                         "(data.scenes.background_class_rate) has a background that agrees with that pairing "
                         "when it is its class's paired background, and disagrees otherwise",
    "supported SC": "semantic consistency over the dimensions active on at least 1 % of the test images "
                    "(semantic_consistency_supported): the plain SC counts a dimension that fires on three images "
                    "like one that fires on thousands, and few active images give a high majority share by chance",
    "weighted SC": "the share of active (image, dimension) entries that belong to their dimension's majority class "
                   "(semantic_consistency_weighted): SC with each dimension weighted by its number of active images",
    "unsure": "a gate is unsure on an image when q(gate = 1 | x) lies strictly between 0.2 and 0.8; the feature "
              "browser's unsure column is the share of test images on which a dimension's gate is unsure",
    "not defined": "said of a number that cannot be computed, with the reason: e.g. semantic consistency when no "
                   "test image has an active dimension (eval.json stores null)",
    "†": "after a linear-probe number: the probe (of some of its runs) did not converge, its gradient stayed "
         "above the tolerance, so the number is not the probe's optimum",
}
"""Term -> its one definition, as the README's Glossary states it."""

NOT_CONVERGED_MARK = "†"
"""Put after a linear-probe number when the probe of (some of) its runs did not meet its tolerance."""


def unconverged_mark(linear_probe: dict[str, Any] | None) -> str:
    """`` †`` after the top-1 of an eval.json linear probe that did not converge (a probe without
    the ``converged`` flag counts as not converged: nothing says it did); empty otherwise."""
    if not linear_probe or linear_probe.get("top1") is None or linear_probe.get("converged") is True:
        return ""
    return f" {NOT_CONVERGED_MARK}"


PERCENT_KEYS = ("semantic_consistency", "semantic_consistency_supported", "semantic_consistency_weighted", "knn_top1", "top1", "top5", "online_probe_top1", "probe_top1",
                "retrieval_p1", "retrieval_p5", "retrieval_p10", "retrieval_topdims_p1", "retrieval_topdims_p5",
                "retrieval_topdims_p10", "retrieval_globaldims_p1", "retrieval_globaldims_p5",
                "retrieval_globaldims_p10", "linear_top1_agrees", "linear_top1_disagrees")
"""Keys whose stored value is already a percentage (0–100)."""

FRACTION_KEYS = ("open_rate", "mean_gate_prob", "sparsity", "probe_acc", "background_closed_share",
                 "class_open_share", "object_open_share", "mean_open_rate", "share_kept_open", "kl_share")
"""Keys whose stored value is a fraction (0–1); shown ×100 with a % sign."""

COUNT_KEYS = ("active_dims", "dims", "dims_never_open", "dims_always_open")
"""Keys whose values are counts: shown without decimals."""

METRIC_UNITS = {
    "semantic_consistency": "%",
    "semantic_consistency_supported": "%",
    "semantic_consistency_weighted": "%",
    "semantic_entropy_sum": "nats",
    "semantic_entropy_mean": "nats",
    "semantic_entropy_frequency": "nats",
    "sparsity": "%",
    "active_dims": "count",
    "effective_rank": "nats, ln of the effective number of dims",
    "orthogonality": "mean |CᵀC − I|",
    "orthogonality_authors": "mean |CᵀC − I| / (d(d − 1)) over all d² entries",
    "knn_top1": "%",
}
"""Unit of each per-feature-set metric of ``bayesncl-eval`` as a table shows it (retrieval: %)."""


def metric_unit(name: str) -> str:
    """The unit a table shows for metric ``name`` (retrieval precision is a percentage)."""
    return "%" if name.startswith("retrieval") else METRIC_UNITS.get(name, "")


def metric_label(name: str) -> str:
    """``name (unit)``: the metric's key, as in eval.json, with the unit its table shows."""
    unit = metric_unit(name)
    return f"{name} ({unit})" if unit else name


UNDEFINED_WHEN = {
    **METRIC_UNDEFINED_WHEN,
    "linear_top1_agrees": "no test image's background agrees with the training pairing",
    "linear_top1_disagrees": "no test image's background disagrees with the training pairing",
    "linear_top1_gap": "the test images whose background agrees, or those whose background disagrees, are none",
    "background_closed_share": "no dimension of z encodes the background",
    "class_open_share": "no dimension of z encodes the class",
    "object_open_share": "no dimension of z encodes the object",
    "orthogonality_authors": METRIC_UNDEFINED_WHEN["orthogonality"],
    "final_loss": "the loss is not a finite number (training diverged)",
    "majority_share": "the dimension is never active",
    "entropy": "the dimension is never active",
    "mean_activation": "the dimension is never active",
}
"""Key -> the case in which its value is nan (null in the JSON files), for "not defined: ..."."""


def undefined_reason(name: str) -> str | None:
    """Why the value of key ``name`` can be undefined, or None when nothing says so."""
    if name in UNDEFINED_WHEN:
        return UNDEFINED_WHEN[name]
    if match := re.fullmatch(r"retrieval(?:_[a-z]+)?_p(\d+)", name):
        k = int(match.group(1))
        return f"the test split has at most {k} images (precision@{k} needs {k} others)"
    return None


def not_defined(name: str) -> str:
    """``not defined: <reason>`` for key ``name`` (``not defined`` alone when no reason is known)."""
    reason = undefined_reason(name)
    return f"{NOT_DEFINED}: {reason}" if reason else NOT_DEFINED


def is_undefined(value: Any) -> bool:
    """Whether ``value`` is a number that is not defined (nan)."""
    return isinstance(value, float) and math.isnan(value)


def measured(values: dict[str, Any] | None, name: str) -> Any:
    """``values[name]``, with a stored null read as nan (not defined: the JSON files store nan as
    null) and a missing key as None (not measured)."""
    if not isinstance(values, dict) or name not in values:
        return None
    value = values[name]
    return math.nan if value is None else value


def shown_value(name: str, value: Any) -> Any:
    """``value`` of key ``name`` as tables show it: fractions ×100 (to 0.01), nan as
    ``not defined: <reason>``, everything else as stored."""
    if is_undefined(value):
        return not_defined(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name in FRACTION_KEYS:
        return round(100.0 * value, 2)
    if name in COUNT_KEYS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def percent(value: float | None, digits: int = 1, name: str = "") -> str:
    """A fraction 0–1 as ``"12.3 %"``; None as ``"–"``, nan as ``not defined`` (with the reason
    for key ``name``)."""
    if value is None:
        return "–"
    if is_undefined(value):
        return not_defined(name)
    return f"{100.0 * value:.{digits}f} %"


def dimension_counts(dims: int | None, active_z: float | None, active_gated: float | None,
                     gates: dict[str, float] | None) -> dict[str, int | None]:
    """The counts of dimensions a reader compares, each on the features it is taken on:
    ``dead_z`` (dead dimensions of z), ``never_active_gated`` (never active in gated z),
    ``never_open`` and ``always_open`` (the gate). From the number of output dimensions, the
    ``active_dims`` metric of z and gated z, and the gate statistics of eval.json (None when
    ungated). A count whose inputs are missing is None."""
    def rest(active: float | None) -> int | None:
        return None if dims is None or active is None else int(dims - active)

    return {
        "dims": dims,
        "dead_z": rest(active_z),
        "never_active_gated": rest(active_gated) if gates is not None else None,
        "never_open": None if gates is None else int(gates["dims_never_open"]),
        "always_open": None if gates is None else int(gates["dims_always_open"]),
    }


COUNT_LABELS = {
    "dead_z": "dead dims (z)",
    "never_open": "dims never open (gate)",
    "always_open": "dims always open (gate)",
    "never_active_gated": "dims never active (gated z)",
}
"""How tables name the counts of :func:`dimension_counts`."""


FACTOR_NAMES = {
    "color": "colour",
    "x": "x (px)",
    "y": "y (px)",
    "scale": "scale (% of the image side)",
    "rotation": "rotation (°)",
}
"""How pages name a scene factor (the key as the dataset stores it -> name with unit): x and y are
the object's centre in pixels, scale its enclosing circle's diameter over the image side, rotation
counter-clockwise (stored in radians, shown in degrees)."""


def factor_name(key: str) -> str:
    """The page's name of the scene factor (or factor-check label) ``key``."""
    return FACTOR_NAMES.get(key, key)
