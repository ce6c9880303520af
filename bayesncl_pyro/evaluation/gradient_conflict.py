"""The paper's "optimisation conflict", measured: per output dimension, the InfoNCE gradient split
into what the positive pairs and what the negative pairs ask of it.

The paper's mechanism (SPEC §1): a dimension that most images share (a "sky" background) is
pulled up in every positive pair and pushed down in every negative pair at once, so its gradient
is a tug of war; the gates close such dimensions before the similarity is taken and end it.

**The split.** For rows z̃ [R, D] (the training objective's z̃ = normalize(normalize(z) ⊙ m), or
normalize(z) without gates) let S = z̃ z̃ᵀ and P(i) the rows sharing row i's instance id (its
positives). The project's InfoNCE is

    L = (1/R) Σ_i [ −log Σ_{j∈P(i)} exp(S_ij/τ) + log Σ_{j≠i} exp(S_ij/τ) ],

so dL = Σ_ij G_ij dS_ij with G = ∂L/∂S: G_ij = (w_ij − π_ij) / (R τ), where w_ij = softmax over
j ≠ i of S_ij/τ and π_ij the softmax over the positives only (one positive: π_ij = 1[j = p(i)]).
The **positive part** g⁺ = ∂/∂z Σ_{j∈P(i)} G_ij S_ij(z) (G held fixed) is the gradient that flows
through the positive pairs' similarities: the −S_ip/τ term together with the positive pair's
share w_ip of the log-sum-exp (G_ip = −(1 − w_ip)/(Rτ) ≤ 0: a pull). The **negative part**
g⁻ = ∂/∂z Σ_{j∉P(i), j≠i} G_ij S_ij(z) flows through the negatives' similarities
(G_ij = w_ij/(Rτ) ≥ 0: a push). Both count every place z_i enters S (as row i and as the
partner/negative j of other rows), and g⁺ + g⁻ = ∂L/∂z exactly.

**Why the gradient on z, not on z̃.** z is the non-negative projector output, the last tensor
before the normalisation (and the gates) that the network's parameters see: its gradient is what
training applies. On z̃ itself every non-negative dimension would show a conflict by
construction: ∂/∂z̃_i of the pull is −(1 − w_ip) z̃_p/τ ≤ 0 and of the push Σ w_ij z̃_j/τ ≥ 0,
entry by entry, whatever the dimension encodes. Most of that is the radial component, which the
normalisation discards: its Jacobian (I − z̃ z̃ᵀ)/‖z‖ keeps only the change of direction, and
there a dimension shared by the partner and the negatives alike is still pulled and pushed
(opposite signs), while a dimension that the partner has and the negatives lack is pulled by
both (same sign). With gates, a closed entry (m = 0) passes no gradient to z: both parts are 0.

**Where the gradient reaches the network.** An entry whose non-negativity map has zero slope
(ReLU at z = 0) passes no gradient to the projector whatever its value; the statistics count
only entries that are ``live`` there (slope ≠ 0). A closed gate's entry is live but gets no
gradient, so it counts as "no conflict".

**The statistics** (per dimension d, over the live entries of the rows i of a batch):

- ``opposite``: share of live entries whose two parts have strictly opposite signs (closed
  gates count as not opposite: their gradient is zero);
- ``opposite_open``: the same share among the live entries whose gate is open (= ``opposite``
  without gates): whether a dimension is still pulled and pushed where the gate lets it through;
- ``cancellation``: 1 − Σ_i |g⁺ + g⁻| / Σ_i (|g⁺| + |g⁻|), the share of the gradient's magnitude
  that the two parts cancel (0: they agree or one is zero, 1: they cancel exactly), weighted by
  magnitude so tiny entries do not dominate;
- ``summed_cancellation``: the same on the dimension's gradient summed over the batch's live rows
  (the gradient on the pre-activation shift of d, i.e. the last projector layer's bias), per batch:
  1 − |Σg⁺ + Σg⁻| / (|Σg⁺| + |Σg⁻|), mean over batches: the conflict at the parameter the dimension
  owns;
- ``sign_disagreement``: over the fixed batches, the share of pairs of batches whose summed
  gradient Σ(g⁺ + g⁻) has opposite signs: how often two steps at the same weights push the
  dimension's bias in opposite directions (the "oscillation" the paper names, at fixed weights);
- ``pull``, ``push``: mean |g⁺| and |g⁻| over live entries (for scale), ``open``: share of
  live entries with an open gate (1 without gates), and ``active``: share of rows on which the
  entry is live (for ReLU: the share of images on which the dimension fires, how shared it is).

Pure tensor functions, plus :func:`measure_network` that runs a network on fixed two-view batches
(:func:`fixed_batches`) and :func:`dimension_labels` that labels the dimensions with the
ground-truth factor check of ``scenes``.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bayesncl_pyro.config import Config
from bayesncl_pyro.config.errors import ConfigError, DataError
from bayesncl_pyro.data.augment import BatchAugment
from bayesncl_pyro.data.dataset import ImageDataset
from bayesncl_pyro.data.sources import load_split
from bayesncl_pyro.evaluation.factor_check import OBJECT_FACTORS, check_factors, scene_factor_codes
from bayesncl_pyro.evaluation.features import extract
from bayesncl_pyro.inference.bayesncl import BayesNCL
from bayesncl_pyro.inference.contrastive import gated_rows, two_view_ids
from bayesncl_pyro.inference.trained_network import run_eval_transform
from bayesncl_pyro.storage import run_directory

STATISTICS = ("opposite", "opposite_open", "cancellation", "summed_cancellation", "sign_disagreement", "pull", "push",
              "open", "active")
"""Per-dimension statistics of :func:`conflict_statistics`, in the order they are reported."""
GROUPS = ("background", "object", "class")
"""Dimension groups compared: the factor check's ``background`` label, any object factor
(``OBJECT_FACTORS``: class, colour, position, scale, rotation), and ``class`` alone."""


@dataclass
class GradientParts:
    """∂InfoNCE/∂z split by the pairs it flows through: ``positive`` and ``negative`` [R, D]."""

    positive: Tensor
    negative: Tensor

    @property
    def total(self) -> Tensor:
        return self.positive + self.negative


def similarity_gradient(similarity: Tensor, ids: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """G = ∂L/∂S of the InfoNCE above for similarities S [R, R] and instance ids [R], and the
    positive-pair mask P [R, R] (same id, not the diagonal). Computed in closed form:
    G_ij = (w_ij − π_ij)/(Rτ), 0 on the diagonal."""
    rows = similarity.shape[0]
    is_self = torch.eye(rows, dtype=torch.bool, device=similarity.device)
    positive = (ids[:, None] == ids[None, :]) & ~is_self
    logits = (similarity / temperature).masked_fill(is_self, -math.inf)
    w = torch.softmax(logits, dim=1)
    pi = torch.softmax(logits.masked_fill(~positive, -math.inf), dim=1)
    pi = torch.where(positive, pi, torch.zeros_like(pi))
    return (w - pi) / (rows * temperature), positive


def gradient_parts(z: Tensor, ids: Tensor, temperature: float, gate: Tensor | None = None) -> GradientParts:
    """The positive and negative parts of ∂InfoNCE(z̃)/∂z (module docstring), z [R, D] the
    non-negative projector output, ids [R], ``gate`` [R, D] the hard gate (None: no gates).
    z̃ = normalize(normalize(z) ⊙ gate) as in training; the gate is held fixed (its own gradient
    goes to the gate network, not to z). Float64 inside, so the identity g⁺ + g⁻ = ∂L/∂z holds to
    rounding."""
    z = z.detach().to(torch.float64).requires_grad_(True)
    gate = None if gate is None else gate.detach().to(torch.float64)
    with torch.enable_grad():
        rows = gated_rows(z, gate)
        similarity = rows @ rows.T
        weights, positive = similarity_gradient(similarity.detach(), ids, temperature)
        negative = ~positive & ~torch.eye(len(ids), dtype=torch.bool, device=z.device)
        g_pos, = torch.autograd.grad(similarity, z, weights * positive, retain_graph=True)
        g_neg, = torch.autograd.grad(similarity, z, weights * negative)
    if gate is not None:
        # A closed entry reaches z̃ only through the first normalisation's common scale 1/‖z‖,
        # which the second one removes: its gradient is 0 analytically, ~1e-19 in floating point.
        # Set it to 0 exactly, so that rounding noise is not read as a sign.
        closed = gate == 0
        g_pos, g_neg = g_pos.masked_fill(closed, 0.0), g_neg.masked_fill(closed, 0.0)
    return GradientParts(g_pos, g_neg)


def _batch_statistics(parts: GradientParts, live: Tensor) -> dict[str, Tensor]:
    """Sums over the rows of one batch that the per-dimension statistics are built from."""
    pos, neg = parts.positive * live, parts.negative * live
    return {
        "live": live.sum(0),
        "opposite": ((pos * neg) < 0).to(pos.dtype).sum(0),
        "abs_sum": (pos.abs() + neg.abs()).sum(0),
        "abs_total": (pos + neg).abs().sum(0),
        "pull": pos.abs().sum(0),
        "push": neg.abs().sum(0),
        "summed_pos": pos.sum(0),
        "summed_neg": neg.sum(0),
    }


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, NaN where the denominator is 0 (no live entry, no gradient)."""
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300),
                       torch.full_like(numerator, math.nan))


def conflict_statistics(parts: list[GradientParts], live: list[Tensor],
                        open_gates: list[Tensor] | None = None) -> dict[str, Tensor]:
    """Per-dimension statistics (module docstring) over batches: ``parts[k]`` the gradient parts
    of batch k, ``live[k]`` [R, D] bool, where the non-negativity map passes gradient, and
    ``open_gates[k]`` [R, D] the hard gate (None: no gates). Returns [D] float64 tensors keyed by
    :data:`STATISTICS` (NaN for a dimension with no live entry or no gradient)."""
    sums = [_batch_statistics(p, m.to(p.positive.dtype)) for p, m in zip(parts, live)]
    total = {key: sum(s[key] for s in sums) for key in sums[0]}
    summed_pos = torch.stack([s["summed_pos"] for s in sums])
    summed_neg = torch.stack([s["summed_neg"] for s in sums])
    summed_abs = summed_pos.abs() + summed_neg.abs()
    per_batch = 1 - _ratio((summed_pos + summed_neg).abs(), summed_abs)
    signs = torch.sign(summed_pos + summed_neg)
    pairs = list(itertools.combinations(range(len(parts)), 2))
    if pairs:
        disagree = torch.stack([(signs[a] * signs[b] < 0) for a, b in pairs]).to(torch.float64).mean(0)
        disagree = torch.where((signs != 0).all(0), disagree, torch.full_like(disagree, math.nan))
    else:
        disagree = torch.full_like(summed_pos[0], math.nan)
    if open_gates is None:
        open_live = total["live"]
    else:
        open_live = sum((g.to(torch.float64) * m.to(torch.float64)).sum(0) for g, m in zip(open_gates, live))
    return {
        "opposite": _ratio(total["opposite"], total["live"]),
        "opposite_open": _ratio(total["opposite"], open_live),
        "cancellation": 1 - _ratio(total["abs_total"], total["abs_sum"]),
        "summed_cancellation": torch.nanmean(per_batch, dim=0),
        "sign_disagreement": disagree,
        "pull": _ratio(total["pull"], total["live"]),
        "push": _ratio(total["push"], total["live"]),
        "open": _ratio(open_live, total["live"]),
        "active": total["live"] / sum(m.shape[0] for m in live),
    }


def group_means(statistics: dict[str, Tensor], dim_labels: list[str]) -> dict[str, dict[str, float]]:
    """Mean of each statistic over the dimensions of each group of :data:`GROUPS` (NaN entries
    left out), with ``dims``: how many dimensions the group has. An empty group gives None (so
    that the result stays strict JSON)."""
    members = {
        "background": [label == "background" for label in dim_labels],
        "object": [label in OBJECT_FACTORS for label in dim_labels],
        "class": [label == "class" for label in dim_labels],
    }
    result: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        mask = torch.tensor(members[group], dtype=torch.bool)
        entry = {"dims": float(mask.sum())}
        for name, values in statistics.items():
            chosen = values.detach().cpu()[mask]
            chosen = chosen[~torch.isnan(chosen)]
            entry[name] = float(chosen.mean()) if chosen.numel() else None
        result[group] = entry
    return result


# ----------------------------------------------------------------------------- on a network

def fixed_batches(train_set: ImageDataset, augment: BatchAugment, count: int, batch_size: int,
                  seed: int) -> list[tuple[Tensor, Tensor]]:
    """``count`` two-view batches of ``batch_size`` training images, the images and both views
    drawn from a generator seeded with ``seed``: the same batches for every run and checkpoint on
    the same data, so runs compare on identical inputs."""
    if count < 1 or batch_size < 2 or batch_size > len(train_set):
        raise ConfigError(f"count={count}, batch_size={batch_size} are not allowed; allowed: count >= 1 and "
                         f"2 <= batch_size <= {len(train_set)} (the training split's size)")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_set), generator=generator)
    batches = []
    for k in range(count):
        index = order[(k * batch_size) % len(train_set):][:batch_size]
        if len(index) < batch_size:
            index = torch.cat([index, order[: batch_size - len(index)]])
        images = train_set.images[index]
        batches.append((augment(images, generator=generator), augment(images, generator=generator)))
    return batches


def dimension_labels(net, test_set: ImageDataset, batch_size: int = 500) -> dict[str, Any]:
    """The factor check of ``test_set`` (SPEC §8) on ``net``'s normalised ungated z, as
    ``bayesncl-eval`` computes it: ``dim_labels`` (one label per dimension) and the shares the
    gates close/keep open (``background_closed_share``, ``object_open_share``)."""
    device = next(net.parameters()).device
    test = extract(net, net.eval_transform, test_set, device, batch_size)
    codes = scene_factor_codes(test["labels"], test_set.factors)
    open_rate = test["gate"].mean(dim=0) if "gate" in test else None
    check = check_factors(F.normalize(test["z"], dim=1), codes, open_rate)
    return {"dim_labels": check.dim_labels, "background_closed_share": check.background_closed_share,
            "object_open_share": check.object_open_share}


def _local_slope(nonneg, pre: Tensor) -> Tensor:
    """Where the elementwise non-negativity map passes gradient: d nonneg(p)/dp ≠ 0, [R, D] bool."""
    pre = pre.detach().requires_grad_(True)
    with torch.enable_grad():
        slope, = torch.autograd.grad(nonneg(pre).sum(), pre)
    return slope != 0


@torch.no_grad()
def network_parts(net, x1: Tensor, x2: Tensor) -> tuple[GradientParts, Tensor, Tensor | None]:
    """One batch of two views [B, 3, S, S] through ``net`` (a BayesNCL) in training mode (batch
    statistics in BatchNorm, as in the step that trains it; the running statistics are put back
    afterwards): the gradient parts on z, the live mask and the hard gate (None without gates)."""
    was_training = net.training
    buffers = {name: value.clone() for name, value in net.named_buffers()}
    net.train()
    try:
        x = torch.cat([x1, x2])
        h = net.backbone(x)
        pre = net.projector(h)
        z = net.nonneg(pre)
        logits = net.guide.gate_logits(h)
    finally:
        net.train(was_training)
        for name, value in net.named_buffers():  # BatchNorm's running statistics stay as loaded
            value.copy_(buffers[name])
    gate = None if logits is None else net.guide.posterior(logits).hard_gate()
    ids = two_view_ids(x1.shape[0], device=x.device)
    parts = gradient_parts(z.float(), ids, net.cfg.model.temperature, gate)
    return parts, _local_slope(net.nonneg, pre.float()), gate


def measure_network(net, batches: list[tuple[Tensor, Tensor]], dim_labels: list[str]) -> dict[str, Any]:
    """The conflict statistics of ``net`` on ``batches``: per dimension (``per_dimension``:
    statistic -> list of D floats, None for NaN) and per group (``groups``, :func:`group_means`)."""
    parts, live, gates = [], [], []
    for x1, x2 in batches:
        p, m, g = network_parts(net, x1, x2)
        parts.append(p)
        live.append(m)
        gates.append(g)
    stats = conflict_statistics(parts, live, None if gates[0] is None else gates)
    return {
        "per_dimension": {name: [None if math.isnan(v) else v for v in values.tolist()]
                          for name, values in stats.items()},
        "groups": group_means(stats, dim_labels),
    }


# ----------------------------------------------------------------------------- over a run's training

BATCHES = 4
"""Fixed two-view batches per checkpoint (at the run's batch size)."""
BATCH_SEED = 0
"""Seed of the fixed batches: every run and checkpoint on the same data sees the same ones."""


def method_name(cfg: Config) -> str:
    """A short name of the method a run trains: ``ncl`` (no gates, ReLU), ``simclr`` (no map),
    ``bayesncl_<estimator>`` (Bernoulli prior), else ``<prior>_<estimator>``."""
    gate, nonneg = cfg.gate, cfg.model.nonneg
    if gate.prior == "none":
        return {"relu": "ncl", "none": "simclr"}.get(nonneg, f"ungated_{nonneg}")
    if gate.prior == "bernoulli":
        return f"bayesncl_{gate.estimator}"
    return f"{gate.prior}_{gate.estimator}"


def run_checkpoints(run) -> list[tuple[int, str | None]]:
    """(epoch, checkpoint name) of a run's per-epoch checkpoints, oldest first, preceded by
    (0, None): the network at its seeded initialisation."""
    numbered = sorted((int(p.stem[len("epoch_"):]), p.name) for p in run_directory.epoch_checkpoints(run))
    return [(0, None)] + numbered


def initial_network(run, cfg: Config) -> BayesNCL:
    """The run's network at its seeded initialisation (as ``bayesncl-eval --untrained`` builds it),
    in eval mode, with the run's evaluation transform."""
    torch.manual_seed(cfg.train.seed)
    net = BayesNCL(cfg, load_weights=True)
    net.eval_transform = run_eval_transform(run, cfg)
    return net.eval()


def checkpoint_stamp(run: Path, name: str | None) -> list[int] | None:
    """[size, modification time in ns] of a checkpoint file (None for the initial network): a
    measurement of a checkpoint is reused only while its file is the same."""
    if name is None:
        return None
    stat = (run / name).stat()
    return [stat.st_size, stat.st_mtime_ns]


def measure_run(run, batches: int = BATCHES, batch_size: int | None = None, seed: int = BATCH_SEED,
                progress=None, known: list[dict[str, Any]] | None = None, epochs: Sequence[int] | None = None,
                measured_one: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The conflict statistics of every checkpoint of the run directory ``run`` (read only):
    the initial network and each ``epoch_NNNN.pt``, each on the same fixed batches (``batch_size``
    defaults to the run's), with the dimensions labelled by that checkpoint's factor check.
    ``known``: checkpoint entries of an earlier result with the same batch settings; those whose
    checkpoint file is unchanged are kept, not measured again. ``epochs`` keeps only those epochs
    (0 = the initial network; default all). ``progress`` wraps the list of checkpoints to measure
    (e.g. tqdm); ``measured_one`` is called with each new checkpoint entry as soon as it is
    measured (to save partial work). Needs a dataset with factors (``scenes``)."""
    run = Path(run)
    cfg = run_directory.read_config(run)
    train_set, test_set = load_split(cfg.data, "train"), load_split(cfg.data, "test")
    if "background" not in test_set.factors:
        raise DataError(f"data.name={cfg.data.name} records no generating factors; allowed: scenes")
    transform = run_eval_transform(run, cfg)
    augment = BatchAugment(cfg.data.augment, cfg.data.image_size, tuple(transform.mean.tolist()),
                           tuple(transform.std.tolist()))
    size = batch_size or min(cfg.data.batch_size, len(train_set))
    fixed = fixed_batches(train_set, augment, batches, size, seed)
    checkpoints = [(epoch, name, checkpoint_stamp(run, name)) for epoch, name in run_checkpoints(run)
                   if epochs is None or epoch in epochs]
    kept = {(entry["checkpoint"], _hashable(entry.get("stamp"))): entry for entry in known or ()}
    todo = [c for c in checkpoints if (c[1], _hashable(c[2])) not in kept]
    measured = {}
    for epoch, name, stamp in (progress(todo) if progress else todo):
        net = initial_network(run, cfg) if name is None else BayesNCL.from_run(run, name)
        labels = dimension_labels(net, test_set)
        measured[name] = {"epoch": epoch, "checkpoint": name, "stamp": stamp, **labels,
                          **measure_network(net, fixed, labels["dim_labels"])}
        if measured_one is not None:
            measured_one(measured[name])
    results = [measured[name] if name in measured else kept[(name, _hashable(stamp))]
               for _, name, stamp in checkpoints]
    return {
        "run": str(run),
        "method": method_name(cfg),
        "seed": cfg.train.seed,
        "dataset": cfg.data.name,
        "batches": batches,
        "batch_size": size,
        "batch_seed": seed,
        "statistics": list(STATISTICS),
        "checkpoints": results,
    }


def _hashable(stamp: list[int] | None) -> tuple[int, ...] | None:
    """A checkpoint stamp as a dictionary key (JSON turns the tuple into a list)."""
    return None if stamp is None else tuple(stamp)
