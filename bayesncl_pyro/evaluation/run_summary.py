"""The headline of one run: what was trained on what, and the few numbers a reader looks at first,
with their units. The HTML report's opening summary and the text that ``bayesncl-report`` prints
(the end of ``make demo``) are both made from :func:`headline`.

Inputs are what a run directory holds, already parsed: the config (dict), ``eval.json`` and
``eval_init.json`` (or None), ``dims.json`` (or None) and the last logged step.
"""
from __future__ import annotations

import math
from typing import Any

from bayesncl_pyro.evaluation import glossary


def lookup(tree: Any, *keys: str) -> Any:
    """``tree[k1][k2]...`` of parsed JSON/YAML, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def method_name(config: dict[str, Any]) -> str:
    """``BayesNCL (bernoulli prior, ste gates)``, ``NCL (relu, no gates)`` or ``SimCLR (no gates)``."""
    prior, nonneg = lookup(config, "gate", "prior"), lookup(config, "model", "nonneg")
    if prior and prior != "none":
        estimator = lookup(config, "gate", "estimator")
        gates = "hard-concrete gates" if prior == "hard_concrete" else f"{estimator} gates"
        return f"BayesNCL ({prior} prior, {gates}, {nonneg})"
    if nonneg == "none":
        return "SimCLR (no gates)"
    return f"NCL ({nonneg}, no gates)"


def _number(value: Any, digits: int = 1, unit: str = " %", name: str = "") -> str:
    """``value`` with its unit; nan as ``not defined: <reason>`` (of key ``name``), anything else
    that is not a finite number as "–"; text (:func:`glossary.shown_value`'s) as it is."""
    if isinstance(value, str):
        return value
    if glossary.is_undefined(value):
        return glossary.not_defined(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}{unit}"


def _of(count: int | None, total: int | None) -> str:
    return "–" if count is None else (f"{count} of {total}" if total else str(count))


def headline(config: dict[str, Any], evaluation: dict[str, Any] | None, evaluation_init: dict[str, Any] | None,
             last_step: int | None) -> dict[str, str]:
    """Label -> the value as text with its unit, in reading order. Missing parts show "–", numbers
    that are not defined (null in eval.json) ``not defined: <reason>``."""
    data = lookup(config, "data", "name")
    rows = {
        "method": method_name(config),
        "data": (f"{data}: {evaluation['num_train']:,} train / {evaluation['num_test']:,} test images"
                 if evaluation else str(data)),
        "network": (f"{lookup(config, 'model', 'backbone')} backbone, {lookup(config, 'model', 'proj_dim')} output "
                    f"dims; {last_step if last_step is not None else '–'} steps "
                    f"({lookup(config, 'train', 'epochs')} epochs)"),
    }
    e = evaluation or {}
    gates = e.get("gates")
    gated = lookup(e, "metrics", "gated")
    init_sc = glossary.measured(lookup(evaluation_init, "metrics", "gated"), "semantic_consistency")
    rows["linear probe top-1 after training (h)"] = (_number(lookup(e, "linear_probe", "top1"))
                                                     + glossary.unconverged_mark(e.get("linear_probe")))
    rows["k-NN top-1 (h)"] = _number(glossary.measured(lookup(e, "metrics", "h"), "knn_top1"), name="knn_top1")
    sc = _number(glossary.measured(gated, "semantic_consistency"), name="semantic_consistency")
    if init_sc is not None:
        sc += f" (at initialisation {_number(init_sc, name='semantic_consistency')})"
    rows["semantic consistency of gated z" if gates or evaluation is None else
         "semantic consistency of z, no gates"] = sc
    rows["hard-gate open share (test)"] = (_number(glossary.shown_value("open_rate", gates["open_rate"]))
                                           if gates else "no gates")
    dims = e.get("output_dims") or lookup(config, "model", "proj_dim")
    counts = glossary.dimension_counts(dims, lookup(e, "metrics", "z", "active_dims"),
                                       lookup(gated, "active_dims"), gates)
    for key, label in glossary.COUNT_LABELS.items():
        if evaluation is None or gates is not None or key == "dead_z":
            rows[label] = _of(counts[key], dims)
    check = e.get("factor_check")
    if check and gates:
        for label, key in (("background dims the gate closes (factor check)", "background_closed_share"),
                           ("object dims the gate keeps open (factor check)", "object_open_share")):
            rows[label] = _number(glossary.shown_value(key, glossary.measured(check, key)))
    return rows


def format_headline(label: str, rows: dict[str, str]) -> str:
    """The headline as aligned text lines under the run's label."""
    width = max(len(key) for key in rows)
    return "\n".join([label, *(f"  {key:<{width}}  {value}" for key, value in rows.items())])
