"""Downstream evaluation of one run (SPEC §6): linear probe, k-NN and every interpretability metric
on h, z and the gated features, plus, on ``scenes``, the ground-truth gate check.

Features are taken on the test split (and, for the probe and k-NN, the training split) with the
evaluation transform: ``h`` (backbone), ``z`` (projector after the non-negativity map),
``gated`` = normalize(z ⊙ hard gate) — normalize(z) for an ungated run — and ``gated_sampled`` =
normalize(z ⊙ m) with the gates drawn from q, m ~ Bern(q(gate = 1 | x)) (seed
``GATE_DRAW_SEED``; the same as ``gated`` for an ungated run), as ``BayesNCL.features`` defines
them: every gated run is measured with the thresholded test-time gate and with draws from its
posterior. The result goes to ``eval.json`` and ``eval.md`` in the run directory
(``eval_init.*`` for the network at its seeded initialisation).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from bayesncl_pyro.data.dataset import ImageDataset
from bayesncl_pyro.data.progress import progress as progress_bar, silenced
from bayesncl_pyro.evaluation import glossary, metrics
from bayesncl_pyro.evaluation.factor_check import check_factors, scene_factor_codes
from bayesncl_pyro.evaluation.features import extract
from bayesncl_pyro.evaluation.glossary import NOT_CONVERGED_MARK
from bayesncl_pyro.evaluation.linear_probe import RECIPE, probe_accuracy
from bayesncl_pyro.evaluation.markdown import markdown_table
from bayesncl_pyro.evaluation.run_summary import lookup
from bayesncl_pyro.evaluation.trained_run import TrainedRun, load_trained
from bayesncl_pyro.storage.atomic import atomic_write_json, atomic_write_text

FEATURE_SETS = ("h", "z", "gated", "gated_sampled")
GATE_DRAW_SEED = 0
"""Seed of the gate draws of ``gated_sampled`` (training split first, then test)."""
KNN_K = 20
KNN_TEMPERATURE = 0.07
RETRIEVAL_K = (1, 5, 10)
RETRIEVAL_TOP_DIMS = 32
"""Each query keeps its 32 largest dimensions in the "top dims" retrieval (all of them when D ≤ 32);
the "global dims" retrieval (the authors') keeps the split's 32 dimensions of largest column sum,
in queries and database alike."""
EXTRACT_CHUNK_BATCHES = 8


def result_files(init: bool) -> tuple[str, str]:
    """(JSON name, Markdown name) of an evaluation in the run directory."""
    stem = "eval_init" if init else "eval"
    return f"{stem}.json", f"{stem}.md"


def extract_split(run: TrainedRun, data: ImageDataset, desc: str, progress: bool,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """``features.extract`` over a whole split in chunks, with a progress bar counting images;
    CPU tensors. ``generator`` (on the run's device) draws the gates of ``gated_sampled``."""
    chunk = run.cfg.data.eval_batch_size * EXTRACT_CHUNK_BATCHES
    parts: list[dict[str, Tensor]] = []
    with progress_bar(total=len(data), enabled=progress, desc=f"{desc} (h, z, gates)", unit="img", unit_scale=True,
                      leave=False) as bar:
        for start in range(0, len(data), chunk):
            index = torch.arange(start, min(start + chunk, len(data)))
            parts.append(extract(run.net, run.eval_transform, data.subset(index), run.device,
                                 run.cfg.data.eval_batch_size, run.classifier, generator))
            bar.update(len(index))
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _metric_table() -> dict[str, Callable[[Tensor, Tensor], float]]:
    """name -> metric(features [N, D], labels [N]) of every per-feature-set metric but k-NN."""
    table: dict[str, Callable[[Tensor, Tensor], float]] = {
        "semantic_consistency": metrics.semantic_consistency,
        "semantic_consistency_supported": metrics.semantic_consistency_supported,
        "semantic_consistency_weighted": metrics.semantic_consistency_weighted,
        "semantic_entropy_sum": metrics.semantic_entropy_sum,
        "semantic_entropy_mean": metrics.semantic_entropy_mean,
        "semantic_entropy_frequency": metrics.semantic_entropy_frequency,
        "sparsity": metrics.sparsity,
        "active_dims": metrics.active_dims,
        "effective_rank": metrics.effective_rank,
        "orthogonality": metrics.orthogonality,
        "orthogonality_authors": metrics.orthogonality_authors,
    }
    for k in RETRIEVAL_K:
        table[f"retrieval_p{k}"] = lambda f, y, k=k: metrics.retrieval_precision(f, y, k)
        table[f"retrieval_topdims_p{k}"] = lambda f, y, k=k: metrics.retrieval_precision(
            f, y, k, top_dims=min(RETRIEVAL_TOP_DIMS, f.shape[1]))
        table[f"retrieval_globaldims_p{k}"] = lambda f, y, k=k: metrics.retrieval_precision_global_dims(
            f, y, k, top_dims=min(RETRIEVAL_TOP_DIMS, f.shape[1]))
    return table


def metric_names() -> list[str]:
    """The per-feature-set metrics of ``feature_metrics``, in reading order."""
    return [*_metric_table(), "knn_top1"]


def feature_metrics(features: Tensor, labels: Tensor, train_features: Tensor, train_labels: Tensor) -> dict[str, float]:
    """Every SPEC §6 metric of test ``features`` [N, D] with ``labels`` [N], plus k-NN top-1 (%)
    against the training split's features [M, D]. Precision@k is nan when N ≤ k (too few
    other samples)."""
    too_few = {f"{prefix}_p{k}" for k in RETRIEVAL_K if k > features.shape[0] - 1
               for prefix in ("retrieval", "retrieval_topdims", "retrieval_globaldims")}
    result = {name: math.nan if name in too_few else metric(features, labels)
              for name, metric in _metric_table().items()}
    result["knn_top1"] = metrics.knn_top1(train_features, train_labels, features, labels,
                                          k=min(KNN_K, train_features.shape[0]), temperature=KNN_TEMPERATURE)
    return result


def gate_statistics(gate: Tensor, gate_probs: Tensor) -> dict[str, float]:
    """Hard test-time gates and q(gate = 1 | x), both [N, D] -> the shares a reader checks first."""
    per_dim = gate.to(torch.float64).mean(dim=0)
    return {
        "open_rate": float(per_dim.mean()),
        "mean_gate_prob": float(gate_probs.to(torch.float64).mean()),
        "dims_never_open": float((per_dim == 0).sum()),
        "dims_always_open": float((per_dim == 1).sum()),
    }


def evaluate(run: TrainedRun, untrained: bool = False, progress: bool = True) -> dict[str, Any]:
    """The whole evaluation of a loaded run (``untrained``: loaded at its initialisation), as a
    dict of floats (nan where a metric is undefined)."""
    generator = torch.Generator(device=run.device).manual_seed(GATE_DRAW_SEED)
    train = extract_split(run, run.train_set, "train features", progress, generator)
    test = extract_split(run, run.test_set, "test features", progress, generator)
    device = run.device
    labels, train_labels = test["labels"].to(device), train["labels"].to(device)
    probe = probe_accuracy(train["h"].to(device), train_labels, test["h"].to(device), labels,
                           run.train_set.num_classes, progress=progress)
    predictions = probe.pop("predictions")
    feature_results = {}
    for name in progress_bar(FEATURE_SETS, enabled=progress, desc=f"metrics on {', '.join(FEATURE_SETS)}",
                             unit="feature set", leave=False):
        feature_results[name] = feature_metrics(test[name].to(device), labels, train[name].to(device), train_labels)
    result: dict[str, Any] = {
        "run": str(run.path),
        "step": run.step,
        "untrained": untrained,
        "dataset": run.cfg.data.name,
        "prior": run.cfg.gate.prior,
        "estimator": run.cfg.gate.estimator,
        "nonneg": run.cfg.model.nonneg,
        "num_train": len(run.train_set),
        "num_test": len(run.test_set),
        "output_dims": int(test["z"].shape[1]),
        "linear_probe": {**probe, "recipe": RECIPE},
        "online_probe_top1": float((test["logits"].argmax(1) == test["labels"]).double().mean() * 100),
        "knn": {"k": min(KNN_K, len(run.train_set)), "temperature": KNN_TEMPERATURE, "on": "each feature set"},
        "retrieval_top_dims": RETRIEVAL_TOP_DIMS,
        "gate_draw_seed": GATE_DRAW_SEED,
        "metrics": feature_results,
        "gates": gate_statistics(test["gate"], test["gate_probs"]) if "gate" in test else None,
        "factor_check": None,
        "background_pairing": background_pairing(run.test_set.factors, test["labels"], predictions,
                                                 run.cfg.data.scenes.background_class_rate),
    }
    if "background" in run.test_set.factors:
        codes = scene_factor_codes(test["labels"], run.test_set.factors)
        open_rate = test["gate"].mean(dim=0) if "gate" in test else None
        result["factor_check"] = check_factors(F.normalize(test["z"], dim=1), codes, open_rate).to_dict()
    return result


def background_pairing(factors: dict[str, Tensor], labels: Tensor, predictions: Tensor,
                       training_rate: float | None) -> dict[str, Any] | None:
    """Linear-probe top-1 (%) apart on the test images whose background agrees with the training
    pairing (it is their class's paired background) and on those whose background does not;
    None when the dataset records no pairing (``paired_background``). ``gap`` = agrees − disagrees:
    how much the probe leans on the background the training split tied to the class."""
    if "paired_background" not in factors:
        return None
    agrees = (factors["background"] == factors["paired_background"]).cpu()
    correct = (predictions.cpu() == labels.cpu()).double()

    def top1(mask: Tensor) -> float:
        return float(correct[mask].mean() * 100) if bool(mask.any()) else math.nan

    result = {"training_rate": training_rate, "test_agrees": int(agrees.sum()), "test_disagrees": int((~agrees).sum()),
              "linear_top1_agrees": top1(agrees), "linear_top1_disagrees": top1(~agrees)}
    result["linear_top1_gap"] = result["linear_top1_agrees"] - result["linear_top1_disagrees"]
    return result


def background_pairing_line(pairing: dict[str, Any] | None) -> str:
    """The eval.md line of :func:`background_pairing` (empty without a pairing)."""
    if pairing is None:
        return ""

    def pct(value: float | None) -> str:
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f} %"

    gap = pairing.get("linear_top1_gap")
    gap_text = "–" if gap is None or (isinstance(gap, float) and math.isnan(gap)) else f"{gap:+.2f} points"
    return (f"Spurious backgrounds (training split: background tied to the class at rate "
            f"{pairing.get('training_rate')}; test split independent): linear-probe top-1 on test images whose "
            f"background agrees with the training pairing {pct(pairing.get('linear_top1_agrees'))} "
            f"({pairing['test_agrees']} images), disagrees {pct(pairing.get('linear_top1_disagrees'))} "
            f"({pairing['test_disagrees']} images); gap {gap_text}.\n")


def _json_ready(value: Any) -> Any:
    """nan/inf -> None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def format_markdown(result: dict[str, Any]) -> str:
    """eval.json as a page a person reads: downstream numbers, metrics per feature set, gates,
    factor check. Shares are shown in %, each count of dimensions names the features it is taken
    on, in the words of :mod:`.glossary`. A metric stored as null (nan: it cannot be computed) reads
    ``not defined: <reason>``; one never measured reads ``–``."""
    state = "at initialisation (untrained)" if result["untrained"] else f"after {result['step']} steps"
    probe = result["linear_probe"]
    gates = result["gates"]
    counts = glossary.dimension_counts(result.get("output_dims"), lookup(result, "metrics", "z", "active_dims"),
                                       lookup(result, "metrics", "gated", "active_dims"), gates)
    parts = [
        f"# Evaluation of `{result['run']}` {state}\n",
        f"dataset `{result['dataset']}` (train {result['num_train']}, test {result['num_test']}), "
        f"prior `{result['prior']}`, estimator `{result['estimator']}`, nonneg `{result['nonneg']}`; "
        f"shares in %; the words (dead, never open, never active, ...) as in the README's Glossary\n",
        "## Downstream (test split)\n",
        markdown_table(["measure", "value"], [
            ["linear probe top-1 (h, %)", probe["top1"]],
            ["linear probe top-5 (h, %)", probe["top5"]],
            ["online probe top-1 (h, %)", result["online_probe_top1"]],
            [f"k-NN top-1 (h, k={result['knn']['k']}, %)", result["metrics"]["h"]["knn_top1"]],
        ]),
        probe_convergence_line(probe),
        background_pairing_line(result.get("background_pairing")),
        f"## Metrics on h, z and gated z (test split; gated: the test-time gate, gated_sampled: drawn gates; "
        f"top-dims retrieval keeps {result['retrieval_top_dims']} dims)\n",
        markdown_table(["metric", *FEATURE_SETS],
                       [[glossary.metric_label(name),
                         *(glossary.shown_value(name, glossary.measured(result["metrics"][s], name))
                           for s in FEATURE_SETS)]
                        for name in metric_names()]),
        "## Dimensions (test split)\n",
        markdown_table(["count", "dims"], [["output dimensions (z)", counts["dims"]],
                                           *([label, counts[key]] for key, label in glossary.COUNT_LABELS.items()
                                             if counts[key] is not None)]),
    ]
    if gates is not None:
        parts += ["## Gates (hard test-time gate)\n",
                  markdown_table(["measure", "value"], [
                      ["hard-gate open share (open_rate, %)", glossary.shown_value("open_rate", gates["open_rate"])],
                      ["mean q(gate = 1 | x) = mean posterior open share (mean_gate_prob, %)",
                       glossary.shown_value("mean_gate_prob", gates["mean_gate_prob"])],
                  ])]
    check = result["factor_check"]
    if check is not None:
        has_gate = gates is not None
        rows = [[_factor_label(label), int(entry["dims"]),
                 glossary.shown_value("mean_open_rate", glossary.measured(entry, "mean_open_rate")),
                 glossary.shown_value("share_kept_open", glossary.measured(entry, "share_kept_open"))]
                for label, entry in check["by_label"].items()]
        parts += ["## Ground-truth factor check (what each dimension of z encodes)\n",
                  markdown_table(["label", "dims", "mean hard-gate open share (%)", "share kept open (%)"], rows)]
        if has_gate:
            def share(key: str) -> str:
                return glossary.percent(glossary.measured(check, key), name=key)

            parts.append(f"Background dimensions the gate closes: {share('background_closed_share')}; "
                         f"class dimensions it keeps open: {share('class_open_share')}; "
                         f"object dimensions (class, colour, position, scale, rotation) it keeps open: "
                         f"{share('object_open_share')}.\n")
    return "\n".join(parts)


def _factor_label(label: str) -> str:
    """A factor-check label as tables show it (``dead`` says that it is a dimension of z)."""
    return "dead (z)" if label == "dead" else label


def probe_convergence_line(probe: dict[str, Any]) -> str:
    """One line of eval.md saying whether the linear probe met its tolerance (and so whether its
    top-1 is the probe's optimum), with the weight decay its validation split chose."""
    iterations = probe.get("iterations")
    if probe.get("grad_norm") is None or probe.get("tolerance") is None:
        return (f"Linear probe: {'converged' if probe.get('converged') else '**not converged**'} after {iterations} "
                "L-BFGS iterations (fitted before the validated protocol: no gradient norm recorded).\n")
    gradient = f"max |gradient| {probe['grad_norm']:.2e}, tolerance {probe['tolerance']:.2e}, {iterations} L-BFGS iterations"
    grid = ", ".join(f"{v['weight_decay']:g}: {v['top1']:.2f}" for v in probe.get("validation") or []
                     if v.get("top1") is not None)
    chosen = (f"; weight decay {probe['weight_decay']:g} chosen on {probe.get('num_validation')} validation "
              f"images of the training split (validation top-1 per decay: {grid})") if grid else ""
    if probe.get("converged"):
        return f"Linear probe: converged ({gradient}){chosen}.\n"
    return (f"{NOT_CONVERGED_MARK} **Linear probe NOT converged** ({gradient}): its top-1 is not the optimum of "
            f"the stated protocol{chosen}.\n")


def evaluate_run(path: str | Path, device: str | None = None, init: bool = False,
                 progress: bool = True) -> tuple[dict[str, Any], Path, Path]:
    """Evaluate the run in ``path`` (``init``: its network at the seeded initialisation) and write
    the JSON and Markdown files; returns (result, JSON path, Markdown path). Without ``progress``,
    nothing shows progress, the decode of the run's data included."""
    with silenced(not progress):
        run = load_trained(path, device=device, untrained=init)
        result = _json_ready(evaluate(run, untrained=init, progress=progress))
    json_name, md_name = result_files(init)
    json_path = atomic_write_json(Path(path) / json_name, result)
    md_path = atomic_write_text(Path(path) / md_name, format_markdown(result))
    return result, json_path, md_path
