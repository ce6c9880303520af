"""Which checkpoint step each derived file of a run directory was made from.

``eval.json``, ``dims.json``, ``sc_variants.json`` and the browser's ``data/build.json`` record
the step of the checkpoint they were computed on. ``bayesncl-inspect`` writes many files at once
(``gates.nc``, its summary, figures, ``dims.json``): it removes its record ``inspect.json`` first
and writes it last, with the step and the SHA-256 of every file it wrote, so a file left from an
earlier inspection (an inspection killed halfway) is told apart from the new ones.

:func:`step_notes` compares them with the run's checkpoint and says, in one line each, what is
stale; a file without a step (written by an earlier version) is "step unknown", never an error.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bayesncl_pyro.config.errors import CheckpointError, StorageError
from bayesncl_pyro.storage import checkpoints
from bayesncl_pyro.storage.atomic import atomic_write_json, read_json, refuse_link
from bayesncl_pyro.storage.run_directory import LAST_CHECKPOINT

INSPECT_RECORD = "inspect.json"
BROWSER_RECORD = Path("data") / "build.json"
"""Inside a browser site: the run directories it was built from and their checkpoint steps."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def start_inspection(directory: Path) -> None:
    """Remove ``inspect.json`` before an inspection writes anything: until it is written again,
    the inspection's files are not vouched for."""
    path = Path(directory) / INSPECT_RECORD
    refuse_link(path, "replace")
    if path.exists():
        os.unlink(path)


def finish_inspection(directory: Path, step: int, files: Iterable[Path]) -> Path:
    """Write ``inspect.json``: the checkpoint step and the digest of each file the inspection wrote."""
    return atomic_write_json(Path(directory) / INSPECT_RECORD, {
        "step": int(step), "files": {Path(p).name: file_digest(Path(p)) for p in files}})


def recorded_step(record: Any) -> int | None:
    """The ``step`` of a parsed derived file, or None when it records none (an earlier version)."""
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def checkpoint_step(run: Path) -> tuple[int | None, str | None]:
    """(step of the run's ``last.pt``, None) or (None, why it is unknown)."""
    try:
        return int(checkpoints.read(Path(run) / LAST_CHECKPOINT)["step"]), None
    except (CheckpointError, StorageError, OSError, ValueError, TypeError) as error:
        return None, str(error)


@dataclass
class Provenance:
    """The steps of a run's checkpoint and derived files, and what is stale or unknown."""

    checkpoint: int | None
    evaluation: int | None = None
    inspection: int | None = None
    browser: int | None = None
    notes: list[tuple[str, str]] = field(default_factory=list)
    """(part, sentence) per derived file that is not from the checkpoint's step (or whose step is
    unknown); parts: ``evaluation``, ``inspection``, ``browser``, ``checkpoint``."""

    @property
    def stale(self) -> list[str]:
        return [text for _, text in self.notes]

    @property
    def stale_parts(self) -> set[str]:
        return {part for part, _ in self.notes}


INSPECTION_FILES = ("dims.json", "dims_best_worst.png", "gates.nc", "gates_summary.csv", "gates_summary.md",
                    "gates_forest.png", "gates_class_heatmap.png", "gates_activation_frequency.png",
                    "gates_top_images.png")


def provenance(run: Path, evaluation: dict[str, Any] | None, dims: dict[str, Any] | None,
               browser_record: dict[str, Any] | None, has_browser: bool) -> Provenance:
    """Compare the derived files of ``run`` (already parsed) with its checkpoint step."""
    run = Path(run)
    step, why = checkpoint_step(run)
    result = Provenance(step)
    at = f"the checkpoint (last.pt) is at step {step}" if step is not None else (
        "the checkpoint's step is unknown (last.pt cannot be read)")

    def note(part: str, text: str) -> None:
        result.notes.append((part, text))

    def compare(part: str, recorded: int | None, what: str, origin: str, made: str, command: str) -> None:
        """One file that records a single step (eval.json, the browser): unknown or stale, or nothing."""
        if recorded is None:
            note(part, f"{what} records no step ({made} by an earlier version): step unknown; run {command} "
                       "again to be sure it is current")
        elif step is not None and recorded != step:
            note(part, f"{what} {origin} step {recorded} but {at}: it is stale; run {command} again")

    if evaluation is not None:
        result.evaluation = recorded_step(evaluation)
        compare("evaluation", result.evaluation, "eval.json", "is from", "written", "bayesncl-eval")
    inspected = [name for name in INSPECTION_FILES if (run / name).is_file()]
    if inspected:
        record = _read_record(run / INSPECT_RECORD)
        if record is None:
            dims_step = recorded_step(dims)
            where = (f"dims.json is from step {dims_step}, the other files' step is unknown"
                     if dims_step is not None else "their step is unknown")
            note("inspection", f"the files of bayesncl-inspect ({', '.join(inspected[:3])}"
                               f"{', …' if len(inspected) > 3 else ''}) have no complete inspect.json (the "
                               f"inspection was interrupted, or made by an earlier version): {where}; run "
                               "bayesncl-inspect again")
        else:
            result.inspection = recorded_step(record)
            listed = record.get("files") if isinstance(record.get("files"), dict) else {}
            foreign = [name for name in inspected if name not in listed or listed[name] != _digest_or_none(run / name)]
            if foreign:
                note("inspection", f"{', '.join(foreign[:4])} {'was' if len(foreign) == 1 else 'were'} not written "
                                   f"by the inspection of step {result.inspection} (a file left from another "
                                   "inspection, or changed since): run bayesncl-inspect again")
            elif result.inspection is None:
                note("inspection", "inspect.json records no step: step unknown; run bayesncl-inspect again")
            elif step is not None and result.inspection != step:
                note("inspection", f"the gate posterior and dimension ranking (gates.nc, dims.json, figures) are "
                                   f"from step {result.inspection} but {at}: stale; run bayesncl-inspect again")
            if recorded_step(dims) is not None and result.inspection is not None \
                    and recorded_step(dims) != result.inspection and "dims.json" not in foreign:
                note("inspection", f"dims.json is from step {recorded_step(dims)}, the inspection of step "
                                   f"{result.inspection}: run bayesncl-inspect again")
    if has_browser:
        result.browser = recorded_step(browser_record)
        compare("browser", result.browser, "the feature browser", "was built from", "built", "bayesncl-browse")
    if step is None and (evaluation is not None or inspected or has_browser):
        note("checkpoint", f"cannot tell whether the derived files are current: {why}")
    parts = {"evaluation": result.evaluation, "inspection": result.inspection}
    known = {k: v for k, v in parts.items() if v is not None and k not in result.stale_parts}
    if len(set(known.values())) > 1:
        note("inspection", f"eval.json is from step {known['evaluation']} and the inspection from step "
                           f"{known['inspection']}: they describe different networks")
    return result


def _digest_or_none(path: Path) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = read_json(path, "inspection record")
    except StorageError:
        return None
    return record if isinstance(record, dict) else None
