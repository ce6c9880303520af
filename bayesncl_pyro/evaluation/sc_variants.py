"""Supported and weighted semantic consistency for runs evaluated before eval.json held them.

``bayesncl-eval`` computes every metric of :mod:`.metrics`, the supported and weighted SC included.
A run evaluated by an earlier version has eval.json files without them; rather than evaluate such a
run again (the linear probe is most of that cost), this module computes just these two metrics
on the same features — the same test-time gates, and the drawn gates from the same seeded
generator in the same order (training split first, then test) — and keeps them beside the
evaluation in ``sc_variants.json``. Readers take eval.json's value when it has one.

Each stage records the checkpoint ``step`` it was computed at; a stage whose step is not that of
the evaluation it completes (a run resumed and evaluated again) is computed again, and readers
never pair it with an evaluation of another step.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from bayesncl_pyro.evaluation import metrics
from bayesncl_pyro.evaluation.evaluate import GATE_DRAW_SEED, extract_split, result_files
from bayesncl_pyro.evaluation.glossary import measured
from bayesncl_pyro.evaluation.trained_run import load_trained
from bayesncl_pyro.storage.atomic import atomic_write_json, read_json

SC_VARIANTS_FILE = "sc_variants.json"
VARIANT_METRICS = {
    "semantic_consistency_supported": metrics.semantic_consistency_supported,
    "semantic_consistency_weighted": metrics.semantic_consistency_weighted,
}
FEATURES = ("gated", "gated_sampled")


def _stage(init: bool) -> str:
    return "init" if init else "trained"


def compute_sc_variants(path: str | Path, init: bool, device: str | None = None) -> dict[str, Any]:
    """{feature set: {metric: value}} of the run in ``path`` (``init``: at its initialisation),
    with the checkpoint ``step`` the features were taken at."""
    run = load_trained(path, device=device, untrained=init)
    generator = torch.Generator(device=run.device).manual_seed(GATE_DRAW_SEED)
    extract_split(run, run.train_set, "train features", False, generator)  # the evaluation's draw order
    test = extract_split(run, run.test_set, "test features", False, generator)
    values = {name: {key: metric(test[name], test["labels"]) for key, metric in VARIANT_METRICS.items()}
              for name in FEATURES}
    return {"step": run.step, **{name: {key: (v if math.isfinite(v) else None) for key, v in row.items()}
                                 for name, row in values.items()}}


def _same_step(stage: Any, evaluation: Any) -> bool:
    """Whether a stored stage was computed at the step of ``evaluation`` (parsed eval.json); a
    stage or evaluation without a step (an earlier version) is taken as it is."""
    if not isinstance(stage, dict) or not isinstance(evaluation, dict):
        return False
    ours, theirs = stage.get("step"), evaluation.get("step")
    return ours is None or theirs is None or ours == theirs


def ensure_sc_variants(path: str | Path, device: str | None = None) -> dict[str, Any]:
    """Compute what eval.json / eval_init.json of ``path`` lack and write ``sc_variants.json``
    (atomically; stages already there are kept). Returns the file's content."""
    path = Path(path)
    target = path / SC_VARIANTS_FILE
    stored = read_sc_variants(path)
    changed = False
    for init in (True, False):
        evaluation = path / result_files(init)[0]
        if not evaluation.is_file():
            continue
        result = read_json(evaluation, "evaluation")
        if _stage(init) in stored and _same_step(stored[_stage(init)], result):
            continue
        gated = (((result if isinstance(result, dict) else {}).get("metrics") or {}).get("gated")) or {}
        if all(key in gated for key in VARIANT_METRICS):
            continue
        stored[_stage(init)] = compute_sc_variants(path, init, device)
        changed = True
    if changed:
        atomic_write_json(target, stored)
    return stored


def read_sc_variants(path: str | Path) -> dict[str, Any]:
    """The content of ``sc_variants.json`` in the run directory ``path`` ({} when there is none)."""
    return read_json(Path(path) / SC_VARIANTS_FILE, "SC variants") or {}


def sc_variant(evaluation: dict[str, Any], variants: dict[str, Any], init: bool, key: str,
               features: str = "gated") -> float | None:
    """``key`` of ``features`` from a loaded eval.json, else from the run's loaded ``sc_variants.json``
    (:func:`read_sc_variants`); None if neither has it, nan where one stores it as null (not defined)."""
    value = measured((evaluation.get("metrics") or {}).get(features), key)
    if value is not None:
        return value
    stage = variants.get(_stage(init))
    if not _same_step(stage, evaluation):
        return None
    return measured(stage.get(features), key)
