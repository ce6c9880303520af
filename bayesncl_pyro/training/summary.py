"""The end-of-run summary: the few numbers a person looks at first."""
from __future__ import annotations

import torch

from bayesncl_pyro.evaluation.features import extract
from bayesncl_pyro.evaluation.glossary import is_undefined, not_defined
from bayesncl_pyro.evaluation.metrics import semantic_consistency, sparsity


def test_summary(session, final_loss: float | None) -> dict[str, float | None]:
    """:func:`summarize` of a training session's network (and online probe) on its test split."""
    features = extract(session.net, session.eval_transform, session.test_set, session.device,
                       session.cfg.data.eval_batch_size, session.classifier)
    return summarize(features, final_loss)


def summarize(features: dict[str, torch.Tensor], final_loss: float | None) -> dict[str, float | None]:
    """``features`` from :func:`bayesncl_pyro.evaluation.features.extract` on the test split."""
    labels = features["labels"]
    summary: dict[str, float | None] = {"final_loss": final_loss}
    if "logits" in features:
        summary["probe_top1"] = 100.0 * (features["logits"].argmax(1) == labels).float().mean().item()
    summary["open_rate"] = features["gate"].mean().item() if "gate" in features else None
    summary["semantic_consistency"] = semantic_consistency(features["gated"], labels)
    summary["sparsity"] = sparsity(features["gated"])
    return summary


def format_summary(summary: dict[str, float | None]) -> str:
    """The summary as aligned lines, shares in % (``summary.json`` keeps ``open_rate`` and
    ``sparsity`` as fractions, ``probe_top1`` and ``semantic_consistency`` in %). A number that
    cannot be computed reads ``not defined: <reason>``, not ``nan``; one not measured (no gate,
    no probe) reads ``-``."""
    labels = {
        "final_loss": ("final loss (negative ELBO, nats per row)", 1.0, 4),
        "probe_top1": ("online-probe top-1 (h, test, %)", 1.0, 2),
        "open_rate": ("hard-gate open share (test, %)", 100.0, 2),
        "semantic_consistency": ("semantic consistency of gated z (test, %)", 1.0, 2),
        "sparsity": ("sparsity of gated z (test, %)", 100.0, 2),
    }
    lines = []
    for key, (label, factor, digits) in labels.items():
        value = summary.get(key)
        if value is None:
            shown = "-"
        elif is_undefined(value):
            shown = not_defined(key)
        else:
            shown = f"{value * factor:.{digits}f}"
        lines.append(f"{label:<50} {shown}")
    return "\n".join(lines)
