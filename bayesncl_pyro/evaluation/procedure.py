"""The evaluation procedure as a choice: how BatchNorm is normalised at test time, and in what
order and batch size the test split is fed.

``bayesncl-eval`` measures a run in eval mode (BatchNorm with its running statistics), so a test
image's features do not depend on the images beside it. The authors' evaluation never calls
``model.eval()``: BatchNorm normalises each test batch with that batch's own statistics, and
ImageNet-100's validation ImageFolder is read in class order, 128 images a batch, so a batch
holds two or three classes and an image's features depend on which classes share its batch. A
procedure here reproduces either, on any dataset:

* ``batchnorm``: ``running`` (eval mode) or ``batch`` (every BatchNorm layer normalises with the
  statistics of the batch at hand; the network's own running statistics are left untouched);
* ``order``: ``given`` (the split's order), ``shuffled`` (a seeded permutation) or
  ``class_blocks`` (runs of ``batch_size / classes_per_batch`` images of one class, the classes in
  turn, so that every batch is drawn from about ``classes_per_batch`` classes, as a class-sorted
  ImageNet-100 validation split with 50 images a class and batches of 128 is);
* ``batch_size``: images per test batch.

The features are those of :meth:`BayesNCL.features` (``gated`` = normalize(z ⊙ hard gate)); the
measures are the three semantic consistencies and the open share of the gates.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.evaluation import metrics
from bayesncl_pyro.evaluation.trained_run import load_trained, read_checkpoint
from bayesncl_pyro.storage.atomic import atomic_write_json, read_json

BATCHNORM = ("running", "batch")
ORDERS = ("given", "shuffled", "class_blocks")


@dataclass(frozen=True)
class EvalProcedure:
    """One way of feeding the test split through the network (module docstring)."""

    batchnorm: str = "running"
    order: str = "given"
    batch_size: int = 128
    classes_per_batch: float = 2.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batchnorm not in BATCHNORM:
            raise ConfigError(f"batchnorm={self.batchnorm!r} is not allowed; allowed: {', '.join(BATCHNORM)}")
        if self.order not in ORDERS:
            raise ConfigError(f"order={self.order!r} is not allowed; allowed: {', '.join(ORDERS)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size!r} is not allowed; allowed: an integer >= 2")
        if not (isinstance(self.classes_per_batch, (int, float)) and math.isfinite(self.classes_per_batch)
                and 1.0 <= self.classes_per_batch
                and (self.order != "class_blocks" or self.classes_per_batch <= self.batch_size)):
            raise ConfigError(f"classes_per_batch={self.classes_per_batch!r} is not allowed; allowed: a number "
                              f"from 1 to batch_size={self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROCEDURES: dict[str, EvalProcedure] = {
    "running": EvalProcedure("running", "given"),
    "batch_shuffled": EvalProcedure("batch", "shuffled"),
    "batch_class_blocks": EvalProcedure("batch", "class_blocks", classes_per_batch=2.5),
}
"""The three procedures RESULTS compares: (a) ours; (b) the authors' batch statistics on a mixed
order (their CIFAR situation); (c) batch statistics on batches of ~2.5 classes (their ImageNet-100
situation)."""


def named_procedure(name: str) -> EvalProcedure:
    if name not in PROCEDURES:
        raise ConfigError(f"procedure {name!r} is not known; allowed: {', '.join(PROCEDURES)}")
    return PROCEDURES[name]


def batch_order(labels: Tensor, procedure: EvalProcedure) -> Tensor:
    """The order [N] in which the test split is fed (indices into it)."""
    n = labels.shape[0]
    if procedure.order == "given":
        return torch.arange(n)
    if procedure.order == "shuffled":
        return torch.randperm(n, generator=torch.Generator().manual_seed(procedure.seed))
    block = max(1, round(procedure.batch_size / procedure.classes_per_batch))
    per_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    rounds = max(math.ceil(len(rows) / block) for rows in per_class)
    pieces = [rows[r * block:(r + 1) * block] for r in range(rounds) for rows in per_class]
    return torch.cat([p for p in pieces if len(p)])


def batches(order: Tensor, batch_size: int) -> list[Tensor]:
    """``order`` cut into batches; a last batch of a single image joins the one before it, since
    batch statistics of one row are undefined for BatchNorm1d."""
    cuts = list(order.split(batch_size))
    if len(cuts) > 1 and len(cuts[-1]) < 2:
        last = cuts.pop()
        cuts[-1] = torch.cat([cuts[-1], last])
    return cuts


def mean_classes_per_batch(labels: Tensor, procedure: EvalProcedure) -> float:
    """How many distinct classes a batch of the procedure holds, on average."""
    parts = batches(batch_order(labels, procedure), procedure.batch_size)
    return float(sum(len(torch.unique(labels[p])) for p in parts) / len(parts))


def _with_batch_statistics(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in eval mode except for its BatchNorm layers, which normalise with the
    statistics of each batch (the copy's running statistics change; the network's do not)."""
    net = copy.deepcopy(net).eval()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    return net


@torch.no_grad()
def procedure_features(net: nn.Module, transform: nn.Module, images: Tensor, labels: Tensor,
                       procedure: EvalProcedure, device: torch.device) -> dict[str, Tensor]:
    """``net.features`` of every test image under ``procedure``, back in the split's order (CPU
    tensors ``gated`` and, for gated networks, ``gate``)."""
    was_training = net.training
    model = _with_batch_statistics(net) if procedure.batchnorm == "batch" else net.eval()
    try:
        order = batch_order(labels, procedure)
        parts: dict[str, list[Tensor]] = {}
        for index in batches(order, procedure.batch_size):
            out = model.features(transform(images[index].to(device)))
            for key in ("gated", "gate"):
                if key in out:
                    parts.setdefault(key, []).append(out[key].float().cpu())
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return {key: torch.cat(values)[inverse] for key, values in parts.items()}
    finally:
        net.train(was_training)


def procedure_measures(features: dict[str, Tensor], labels: Tensor) -> dict[str, float]:
    """The semantic consistencies (%) of ``gated`` and the open share of the gates (0–1; None
    for an ungated network)."""
    gated = features["gated"]
    return {
        "semantic_consistency": metrics.semantic_consistency(gated, labels),
        "semantic_consistency_supported": metrics.semantic_consistency_supported(gated, labels),
        "semantic_consistency_weighted": metrics.semantic_consistency_weighted(gated, labels),
        "open_rate": float(features["gate"].double().mean()) if "gate" in features else None,
    }


PROCEDURE_FILE = "eval_procedure.json"
"""Per run: {name: {"procedure": settings, "step": checkpoint step, "trained": measures,
"init": measures, "mean_classes_per_batch": float}}."""


def evaluate_procedures(path: str | Path, names: Sequence[str], device: str | None = None) -> dict[str, Any]:
    """Measure the run in ``path`` under each named procedure, trained and at its seeded
    initialisation, and keep the results in ``eval_procedure.json`` (written atomically). A stored
    entry is reused only when its settings and its checkpoint step are those of now; otherwise it
    is measured again. The checkpoint is read (once) either way, so a checkpoint that no longer
    fits the run's ``config.yaml`` is refused, not answered from the stored entries."""
    procedures = {name: named_procedure(name) for name in names}
    path = Path(path).expanduser()
    file = path / PROCEDURE_FILE
    stored = read_json(file, "procedure results") or {}
    checkpoint = read_checkpoint(path)
    step = checkpoint.step
    wanted = {name: p for name, p in procedures.items()
              if (stored.get(name) or {}).get("procedure") != p.to_dict()
              or (stored.get(name) or {}).get("step") != step}
    if not wanted:
        return {name: stored[name] for name in names}
    trained = load_trained(path, device=device, checkpoint=checkpoint)
    del checkpoint  # restored: the file's optimiser state need not stay in memory while measuring
    init = load_trained(path, device=device, untrained=True, like=trained)
    images, labels = trained.test_set.images, trained.test_set.labels
    for name, procedure in wanted.items():
        entry: dict[str, Any] = {"procedure": procedure.to_dict(), "step": trained.step,
                                 "mean_classes_per_batch": mean_classes_per_batch(labels, procedure)}
        for key, run in (("trained", trained), ("init", init)):
            features = procedure_features(run.net, run.eval_transform, images, labels, procedure, run.device)
            entry[key] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                          for k, v in procedure_measures(features, labels).items()}
        stored[name] = entry
    atomic_write_json(file, stored)
    return {name: stored[name] for name in names}
