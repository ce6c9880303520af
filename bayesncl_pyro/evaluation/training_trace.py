"""SC over training: the epoch checkpoints a run kept (``train.keep``), each measured on the test
split — the three semantic consistencies of the gated features, the open share of the gates and
k-NN top-1 on h — so that a reader sees how they move as the encoder improves, not only where a
run ends. Checkpoints along one schedule are not shorter runs: the learning rate at epoch 10 of a
40-epoch cosine schedule is still high.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

from bayesncl_pyro.config.errors import CheckpointError, RunWarning
from bayesncl_pyro.evaluation import metrics
from bayesncl_pyro.evaluation.evaluate import KNN_K, KNN_TEMPERATURE, extract_split
from bayesncl_pyro.evaluation.procedure import procedure_measures
from bayesncl_pyro.evaluation.trained_run import TrainedRun, load_trained, read_checkpoint
from bayesncl_pyro.storage import run_directory
from bayesncl_pyro.storage.atomic import atomic_write_json, read_json

TRACE_FILE = "sc_over_training.json"
"""Per run: {checkpoint file name: {"step", "epoch", measures...}}."""
EPOCH_CHECKPOINT = re.compile(r"epoch_(\d{4,})\.pt")


def epoch_checkpoints(path: str | Path) -> list[tuple[int, str]]:
    """(epoch, file name) of every epoch checkpoint in the run directory, in epoch order."""
    found = [(int(m.group(1)), p.name) for p in Path(path).iterdir() if (m := EPOCH_CHECKPOINT.fullmatch(p.name))]
    return sorted(found)


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def trace_run(path: str | Path, device: str | None = None, every: int = 1) -> dict[str, dict[str, Any]]:
    """Measure the epoch checkpoints of the run in ``path`` whose epoch is a multiple of ``every``
    and that are not measured yet at their step, and keep the results in
    ``sc_over_training.json`` (written atomically after each checkpoint). The run's data is read
    once, and not at all when every wanted checkpoint is measured already. A checkpoint that
    cannot be used (damaged, holding non-finite weights, or written for another configuration
    than the run's ``config.yaml``) is named in a warning and left out, its stored entry with it:
    one bad file does not stop the trace of the others. A ``config.yaml`` that cannot be read
    refuses the whole trace (CheckpointError) and leaves the stored one as it is."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    path = Path(path).expanduser()
    cfg = run_directory.read_config(path)  # a run whose config cannot be read is refused whole, its trace kept
    file = path / TRACE_FILE
    stored: dict[str, dict[str, Any]] = read_json(file, "training trace") or {}
    run: TrainedRun | None = None
    for epoch, name in epoch_checkpoints(path):
        if epoch % every:
            continue
        try:
            checkpoint = read_checkpoint(path, name, cfg)
            if (stored.get(name) or {}).get("step") == checkpoint.step:
                continue
            run = load_trained(path, device=device, checkpoint_name=name, like=run, checkpoint=checkpoint)
            del checkpoint  # restored: the file's optimiser state need not stay in memory while measuring
        except CheckpointError as error:
            warnings.warn(f"SC over training of {path}: {name} is left out: {error}", RunWarning, stacklevel=2)
            if stored.pop(name, None) is not None:
                atomic_write_json(file, stored)
            continue
        train = extract_split(run, run.train_set, "train features", False)
        test = extract_split(run, run.test_set, "test features", False)
        labels = test["labels"]
        stored[name] = {
            "epoch": epoch,
            "step": run.step,
            **{key: _finite_or_none(value) for key, value in procedure_measures(test, labels).items()},
            "knn_top1": metrics.knn_top1(train["h"], train["labels"], test["h"], labels,
                                         k=min(KNN_K, len(run.train_set)), temperature=KNN_TEMPERATURE),
        }
        atomic_write_json(file, stored)
    return stored
