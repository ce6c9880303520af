"""Reading what a finished run left in its directory, for the tables of grids and suites."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bayesncl_pyro.evaluation.glossary import NOT_CONVERGED_MARK
from bayesncl_pyro.storage.metrics_log import read_metrics


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or not JSON (a run in progress)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _records(directory: Path) -> list[dict[str, Any]]:
    try:
        return read_metrics(directory)
    except (OSError, ValueError):
        return []


def final_loss(directory: Path, summary: dict[str, Any]) -> float | None:
    """The summary's final loss or, when it has none (a run resumed at its last step ran no
    step), the loss of the last line of the metrics log."""
    if summary.get("final_loss") is not None:
        return summary["final_loss"]
    losses = [record["loss"] for record in _records(directory) if "loss" in record]
    return losses[-1] if losses else None


def kl_share(directory: Path) -> float | None:
    """Mean of kl / loss over the last tenth of the logged steps (how much the prior weighs)."""
    records = [r for r in _records(directory) if "kl" in r and r.get("loss")]
    if not records:
        return None
    tail = records[-max(1, len(records) // 10):]
    return sum(r["kl"] / r["loss"] for r in tail) / len(tail)


def probe_not_converged(row: dict[str, Any]) -> bool:
    """Whether a table row has a linear-probe top-1 whose probe did not converge (an eval.json
    without the flag counts as not converged: nothing says it did)."""
    return row.get("linear_top1") is not None and row.get("linear_converged") is not True


def probe_mark(rows: list[dict[str, Any]]) -> str:
    """`` †`` when any of ``rows`` has a non-converged linear probe, else empty."""
    return f" {NOT_CONVERGED_MARK}" if any(probe_not_converged(r) for r in rows) else ""


def probe_note(rows: list[dict[str, Any]], name_key: str) -> str:
    """The footnote of the mark: which runs' probes did not converge (empty when none)."""
    names = [str(r[name_key]) for r in rows if probe_not_converged(r)]
    if not names:
        return ""
    return (f"{NOT_CONVERGED_MARK} linear probe not converged (its top-1 is not the probe's optimum) in "
            f"{len(names)} run(s): {', '.join(names)}.")
