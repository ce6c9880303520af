"""The offline linear probe: multinomial logistic regression on frozen, cached backbone features h.

Protocol (fixed and stated, so that two runs' probe numbers compare; ``RECIPE`` writes it into
eval.json next to the numbers):

1. **Features.** h standardised with the training split's per-feature mean and standard deviation
   (a constant feature is centred to zero and stays zero; the deviation is clamped at 1e-6).
2. **Objective.** Mean cross-entropy + ``weight_decay`` / 2 · ||W||² (the bias is not penalised):
   strictly convex in W, so "solved" has one answer.
3. **Solver.** Full-batch L-BFGS in float64 (strong-Wolfe line search, history 20, shortened for a
   probe so large that its history would pass ``HISTORY_BYTES``: :func:`history_size`), run until the
   largest absolute entry of the gradient is at most ``GRAD_RTOL`` times its value at W = 0, b = 0
   (a scale fixed by the data, the same for every fit of one probe), or ``max_iter`` iterations.
   ``converged`` says whether that tolerance was met; ``grad_norm`` is the final max |gradient|.
4. **Weight decay.** Chosen from ``WEIGHT_DECAYS`` (decades from 1e-6 to 1e-1) on a validation split
   of the training features: ``VALIDATION_FRACTION`` of every class, drawn with the fixed seed
   ``VALIDATION_SEED``. For each decay, from the largest to the smallest, the probe is fitted on
   the rest of the training split, warm-started from the previous decay's solution (a
   continuation path: each start is close to the next optimum); the decay with the best
   validation top-1 wins, a tie going to the larger decay.
5. **Refit** on the whole training split with the chosen decay, warm-started from its fit on the
   smaller part, solved to the same tolerance; top-1 and top-k accuracy (%) on the test split.
   When no class has two training images there is no validation split, so nothing can choose:
   the largest decay is taken and fitted once, from zero, without the grid.

Memory: the objective and its gradient are summed over chunks of rows (at most
``LOGIT_CHUNK_ENTRIES`` logits at once), and so are the test scores, so a probe of many classes
holds W, the features and one chunk of logits rather than the [N, C] logits and their gradient
(10,000 classes of one image each: the dense form needs several 0.8 GB blocks).

Everything is full batch and deterministic: the only random choice, the validation split, has
its own seed. This is the usual "L-BFGS logistic regression on frozen features" evaluation of
self-supervised learning, rather than the authors' online probe (which is logged during training
as ``probe_acc``).

Why the earlier recipe (float32, an absolute tolerance of 1e-6 on max |gradient|, stop when the
loss changes by less than 1e-10) never reported convergence on real features: in float32 a loss
near 1.6 moves in steps of about 1e-7, so once L-BFGS is within that of the optimum two
successive losses are equal and it stops on "no change", with max |gradient| still around 1e-4,
an order above the check. Float64 and a gradient tolerance that L-BFGS itself tests (no
loss-change stop) remove both causes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bayesncl_pyro.data.progress import progress as progress_bar

WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
"""The grid, in the order it is fitted (largest first, each fit warm-starting the next)."""
VALIDATION_FRACTION = 0.2
VALIDATION_SEED = 0
GRAD_RTOL = 1e-5
"""Converged when max |gradient| <= GRAD_RTOL x max |gradient at W = 0, b = 0|."""
MAX_ITER = 5000
"""L-BFGS iterations per fit at most."""
ITER_PER_ROUND = 50
"""L-BFGS iterations between two progress-bar updates (the optimizer keeps its history)."""
HISTORY = 20
HISTORY_BYTES = 512 * 2**20
"""Memory L-BFGS may keep as history: 2 vectors of the probe's parameters (float64) per step
remembered. 20 steps fit up to about 1.7 M parameters (3,270 classes of 512 features); a larger
probe remembers fewer (10,000 classes × 512 features: 6 steps, 0.5 GB instead of 1.6 GB)."""
MIN_HISTORY = 5
MAX_STALLS = 3
STD_FLOOR = 1e-6
LOGIT_CHUNK_ENTRIES = 2**22
"""Upper bound on the [rows, C] logits held at once (32 MiB in float64)."""


@dataclass
class LinearProbe:
    """A fitted probe. mean, std: [F] (float64); weight: [C, F]; bias: [C]; ``iterations`` run by
    L-BFGS; ``grad_norm``: final max |gradient|; ``tolerance``: the max |gradient| it had to reach;
    ``converged``: whether it did."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor
    weight_decay: float
    iterations: int
    grad_norm: float
    tolerance: float
    converged: bool

    def logits(self, h: Tensor) -> Tensor:
        """h: [N, F] -> logits [N, C]."""
        h = h.to(device=self.weight.device, dtype=self.weight.dtype)
        return ((h - self.mean) / self.std) @ self.weight.T + self.bias

    def scores(self, h: Tensor, labels: Tensor, k: int = 5) -> tuple[float, float, Tensor]:
        """(top-1 %, top-k %, predictions [N]) of h [N, F] with labels [N], the logits taken in row
        chunks (:data:`LOGIT_CHUNK_ENTRIES`)."""
        labels = labels.to(self.weight.device)
        hits1 = hitsk = 0
        predictions = []
        for rows in _row_chunks(h.shape[0], self.weight.shape[0]):
            logits = self.logits(h[rows])
            top = logits.topk(min(k, logits.shape[1]), dim=1).indices
            hits1 += int((top[:, 0] == labels[rows]).sum())
            hitsk += int((top == labels[rows, None]).any(dim=1).sum())
            predictions.append(top[:, 0].cpu())
        n = max(h.shape[0], 1)
        return hits1 / n * 100.0, hitsk / n * 100.0, torch.cat(predictions)


@dataclass
class ProbeSelection:
    """The whole protocol's outcome: the final ``probe`` (refit on all training data) and, per
    decay of the grid, the fit on the smaller part with its validation top-1 (%)."""

    probe: LinearProbe
    validation: list[dict[str, Any]]
    num_validation: int


def probe_objective(weight: Tensor, bias: Tensor, x: Tensor, labels: Tensor, weight_decay: float) -> Tensor:
    """Mean cross-entropy of standardised x [N, F] under (W [C, F], b [C]) + wd/2 ||W||²
    (the dense form, all N x C logits at once; the solver uses :func:`objective_and_gradient`)."""
    return F.cross_entropy(x @ weight.T + bias, labels) + 0.5 * weight_decay * weight.pow(2).sum()


def _row_chunks(n: int, num_classes: int) -> list[slice]:
    rows = max(1, LOGIT_CHUNK_ENTRIES // max(num_classes, 1))
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def objective_and_gradient(weight: Tensor, bias: Tensor, x: Tensor, labels: Tensor,
                           weight_decay: float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`probe_objective` and its gradient (loss, ∂/∂W, ∂/∂b), summed over row chunks of
    x so that at most :data:`LOGIT_CHUNK_ENTRIES` logits exist at once."""
    w = weight.detach().requires_grad_(True)
    b = bias.detach().requires_grad_(True)
    n = x.shape[0]
    loss = weight.new_zeros(())
    grad_w, grad_b = torch.zeros_like(w), torch.zeros_like(b)
    with torch.enable_grad():
        for rows in _row_chunks(n, w.shape[0]):
            part = F.cross_entropy(x[rows] @ w.T + b, labels[rows], reduction="sum") / n
            gw, gb = torch.autograd.grad(part, [w, b])
            loss += part.detach()
            grad_w += gw
            grad_b += gb
    w = w.detach()
    return loss + 0.5 * weight_decay * w.pow(2).sum(), grad_w.add_(w, alpha=weight_decay), grad_b


def standardisation(h: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and (clamped, population) standard deviation of h [N, F], in float64."""
    h = h.to(torch.float64)
    return h.mean(dim=0), h.std(dim=0, unbiased=False).clamp_min(STD_FLOOR)


def max_abs_gradient(weight: Tensor, bias: Tensor, x: Tensor, labels: Tensor, weight_decay: float) -> float:
    """max |∂objective / ∂(W, b)| at (W, b)."""
    _, grad_w, grad_b = objective_and_gradient(weight, bias, x, labels, weight_decay)
    return float(max(grad_w.abs().max(), grad_b.abs().max()))


def stratified_split(labels: Tensor, fraction: float = VALIDATION_FRACTION,
                     seed: int = VALIDATION_SEED) -> tuple[Tensor, Tensor]:
    """(fit indices, validation indices), sorted: ``fraction`` of every class (rounded, at least
    one item when the class has two or more, never all of it) drawn with ``seed``."""
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    validation = []
    for value in labels.unique(sorted=True):
        members = (labels == value).nonzero().squeeze(1)
        count = len(members)
        take = min(max(round(fraction * count), 1 if count >= 2 else 0), count - 1)
        validation.append(members[torch.randperm(count, generator=generator)[:take]])
    chosen = torch.zeros(len(labels), dtype=torch.bool)
    chosen[torch.cat(validation)] = True
    return (~chosen).nonzero().squeeze(1), chosen.nonzero().squeeze(1)


def history_size(num_params: int) -> int:
    """L-BFGS steps remembered for a probe of ``num_params`` parameters: ``HISTORY``, fewer when
    its 2 × steps × parameters float64 values would pass ``HISTORY_BYTES``, never below
    ``MIN_HISTORY`` (a solver with almost no history converges too slowly to be worth the memory)."""
    return max(MIN_HISTORY, min(HISTORY, HISTORY_BYTES // (2 * 8 * max(1, num_params))))


def _solve(x: Tensor, labels: Tensor, weight: Tensor, bias: Tensor, weight_decay: float, tolerance: float,
           max_iter: int, on_round=None) -> tuple[Tensor, Tensor, int, float]:
    """L-BFGS from (weight, bias) until max |gradient| <= tolerance or ``max_iter`` iterations;
    returns (weight, bias, iterations, final max |gradient|). ``on_round(iterations, grad)`` is
    called every ``ITER_PER_ROUND`` iterations."""
    weight = weight.detach().clone().requires_grad_(True)
    bias = bias.detach().clone().requires_grad_(True)
    # tolerance_change=0: no stop on "the loss did not change"; only the gradient, a zero step
    # (the line search found nothing better: the optimum to float64 precision) or the budget
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=ITER_PER_ROUND, max_eval=4 * ITER_PER_ROUND,
                                  history_size=history_size(weight.numel() + bias.numel()),
                                  tolerance_grad=tolerance, tolerance_change=0.0,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        loss, weight.grad, bias.grad = objective_and_gradient(weight, bias, x, labels, weight_decay)
        return loss

    iterations, stalls = 0, 0
    while iterations < max_iter:
        budget = min(ITER_PER_ROUND, max_iter - iterations)
        optimizer.param_groups[0]["max_iter"] = budget
        optimizer.step(closure)
        ran = optimizer.state[weight]["n_iter"] - iterations
        iterations += ran
        grad = max_abs_gradient(weight, bias, x, labels, weight_decay)
        if on_round is not None:
            on_round(iterations, grad)
        if grad <= tolerance:
            break
        # a round that ends early above tolerance ran out of line-search evaluations or found no
        # better point; give up after a few in a row (the result then says converged: false)
        stalls = stalls + 1 if ran < budget else 0
        if stalls >= MAX_STALLS:
            break
    return weight.detach(), bias.detach(), iterations, max_abs_gradient(weight, bias, x, labels, weight_decay)


def _fit(x: Tensor, labels: Tensor, num_classes: int, weight_decay: float, tolerance: float, max_iter: int,
         start: tuple[Tensor, Tensor] | None, on_round=None) -> tuple[Tensor, Tensor, int, float]:
    if start is None:
        start = (x.new_zeros(num_classes, x.shape[1]), x.new_zeros(num_classes))
    return _solve(x, labels, *start, weight_decay, tolerance, max_iter, on_round)


def _check_inputs(h: Tensor, labels: Tensor) -> None:
    if h.dim() != 2 or labels.shape != (h.shape[0],):
        raise ValueError(f"h must be [N, F] and labels [N]; got {tuple(h.shape)} and {tuple(labels.shape)}")


def _tolerance(x: Tensor, labels: Tensor, num_classes: int, rtol: float) -> float:
    """rtol × max |gradient at zero| (of the unpenalised loss: the penalty's gradient is 0 there)."""
    zero_w, zero_b = x.new_zeros(num_classes, x.shape[1]), x.new_zeros(num_classes)
    return rtol * max_abs_gradient(zero_w, zero_b, x, labels, 0.0)


def fit_linear_probe(h: Tensor, labels: Tensor, num_classes: int, weight_decay: float = 1e-4,
                     max_iter: int = MAX_ITER, rtol: float = GRAD_RTOL) -> LinearProbe:
    """Fit the probe of this module's recipe for one ``weight_decay`` on training features
    h [N, F] and labels [N] (0..C-1), from zero, on h's device in float64."""
    _check_inputs(h, labels)
    mean, std = standardisation(h)
    x = (h.to(torch.float64) - mean) / std
    labels = labels.to(h.device)
    tolerance = _tolerance(x, labels, num_classes, rtol)
    weight, bias, iterations, grad = _fit(x, labels, num_classes, weight_decay, tolerance, max_iter, None)
    return LinearProbe(mean, std, weight, bias, weight_decay, iterations, grad, tolerance, grad <= tolerance)


def select_linear_probe(h: Tensor, labels: Tensor, num_classes: int, weight_decays=WEIGHT_DECAYS,
                        max_iter: int = MAX_ITER, rtol: float = GRAD_RTOL, fraction: float = VALIDATION_FRACTION,
                        seed: int = VALIDATION_SEED, progress: bool = False) -> ProbeSelection:
    """The protocol of this module: choose the weight decay on a stratified validation split of
    the training features h [N, F], then refit on all of them.

    The progress bar counts fits (one per decay, then the refit) and shows the iterations and
    max |gradient| / tolerance of the fit running.
    """
    _check_inputs(h, labels)
    if not weight_decays or any(not wd > 0 for wd in weight_decays):
        raise ValueError(f"weight_decays must be a non-empty list of numbers > 0; got {weight_decays!r}")
    decays = sorted(weight_decays, reverse=True)
    mean, std = standardisation(h)
    x = (h.to(torch.float64) - mean) / std
    labels = labels.to(h.device)
    fit_index, val_index = (i.to(h.device) for i in stratified_split(labels, fraction, seed))
    x_fit, y_fit = x[fit_index], labels[fit_index]
    x_val, y_val = x[val_index], labels[val_index]
    tolerance_fit = _tolerance(x_fit, y_fit, num_classes, rtol)
    tolerance = _tolerance(x, labels, num_classes, rtol)
    validation, solutions, start = [], {}, None
    if not len(y_val):  # no class has two images: nothing to choose on, so no grid to fit
        decays = decays[:1]
        solutions[decays[0]] = None
    grid = len(decays) if len(y_val) else 0
    with progress_bar(total=grid + 1, enabled=progress, unit="fit", leave=False,
                      desc=f"linear probe (fits: {grid} weight decays on {len(y_fit)} images, then refit)") as bar:
        def show(wd):
            return lambda it, grad: bar.set_postfix_str(f"decay {wd:g}: {it} it, |g|/tol {grad / tolerance:.2g}")

        for wd in decays[:grid]:
            weight, bias, iterations, grad = _fit(x_fit, y_fit, num_classes, wd, tolerance_fit, max_iter, start,
                                                  show(wd))
            start = solutions[wd] = (weight, bias)
            correct = ((x_val @ weight.T + bias).argmax(1) == y_val).double()
            top1 = float(correct.mean() * 100) if len(y_val) else float("nan")
            validation.append({"weight_decay": wd, "top1": top1, "iterations": iterations,
                               "grad_norm": grad, "converged": grad <= tolerance_fit})
            bar.update(1)
        chosen = choose_weight_decay(validation) if validation else decays[0]
        weight, bias, iterations, grad = _fit(x, labels, num_classes, chosen, tolerance, max_iter,
                                              solutions[chosen], show(chosen))
        bar.update(1)
        bar.refresh()
    probe = LinearProbe(mean, std, weight, bias, chosen, iterations, grad, tolerance, grad <= tolerance)
    return ProbeSelection(probe, validation, len(y_val))


def choose_weight_decay(validation: list[dict[str, Any]]) -> float:
    """The decay with the best validation ``top1``; a tie goes to the larger decay, and when no
    decay has a score (an empty validation split) the largest decay is taken."""
    scored = [v for v in validation if v["top1"] == v["top1"]]  # nan: no validation images
    if not scored:
        return max(v["weight_decay"] for v in validation)
    return max(scored, key=lambda v: (v["top1"], v["weight_decay"]))["weight_decay"]


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Share (%) of rows whose label is among the k largest logits; k is capped at C."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels.to(top.device)[:, None]).any(dim=1).double().mean() * 100.0)


def probe_accuracy(train_h: Tensor, train_labels: Tensor, test_h: Tensor, test_labels: Tensor,
                   num_classes: int, progress: bool = False) -> dict[str, Any]:
    """The protocol on train, scored on test: ``top1``, ``top5`` (%), and how the probe was
    fitted: ``converged``, ``iterations``, ``grad_norm`` (final max |gradient|), ``tolerance``,
    ``weight_decay`` (chosen), ``validation`` (per decay: validation top-1, iterations,
    converged), ``num_validation``. ``predictions`` [N_test] is returned for per-group scores and
    is not meant for eval.json."""
    selection = select_linear_probe(train_h, train_labels, num_classes, progress=progress)
    probe = selection.probe
    top1, top5, predictions = probe.scores(test_h, test_labels, 5)
    return {"top1": top1, "top5": top5, "converged": probe.converged, "iterations": probe.iterations, "grad_norm": probe.grad_norm,
            "tolerance": probe.tolerance, "weight_decay": probe.weight_decay,
            "validation": selection.validation, "num_validation": selection.num_validation,
            "predictions": predictions}


RECIPE = {
    "features": "backbone h, standardised with the training split's mean and std",
    "objective": "mean cross-entropy + weight_decay/2 * ||W||^2 (bias not penalised)",
    "optimizer": (f"full-batch L-BFGS in float64, strong-Wolfe line search, history {HISTORY} (fewer, at least "
                  f"{MIN_HISTORY}, when 2 x history x parameters in float64 would pass {HISTORY_BYTES >> 20} MiB)"),
    "tolerance": f"max |gradient| <= {GRAD_RTOL:g} x max |gradient at zero|",
    "max_iter": MAX_ITER,
    "weight_decay_grid": list(WEIGHT_DECAYS),
    "selection": (f"best top-1 on a stratified validation split ({VALIDATION_FRACTION:g} of each class of the "
                  f"training split, seed {VALIDATION_SEED}; ties to the larger decay), fits warm-started from "
                  "the largest decay down; then refit on the whole training split; without a validation "
                  "split (no class with two training images) the largest decay, fitted once"),
}
"""What ``probe_accuracy`` does, written into eval.json next to the numbers."""
