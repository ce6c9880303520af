"""The offline linear probe: multinomial logistic regression on frozen, cached backbone features h.

Recipe (fixed, so that two runs' probe numbers compare):

1. Standardise h with the training split's per-feature mean and standard deviation (a constant
   feature is centred to zero and stays zero; the deviation is clamped at 1e-6).
2. Minimise mean cross-entropy + ``weight_decay`` / 2 · ||W||² (the bias is not penalised) over
   the whole training split at once, from W = 0, b = 0, with full-batch L-BFGS (strong-Wolfe line
   search, history 20) until the gradient or the change in the loss falls below tolerance, or
   ``max_iter`` iterations have run. The objective is strictly convex, so "trained to
   convergence" has one answer, and full batch plus a zero start make the result deterministic:
   there is no seed to fix.
3. Report top-1 and top-k accuracy (%) on the test split.

This is the usual "L-BFGS logistic regression on frozen features" evaluation of self-supervised
learning, rather than the authors' online probe (which is logged during training as ``probe_acc``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

WEIGHT_DECAY = 1e-4
MAX_ITER = 1000
ITER_PER_ROUND = 50
"""L-BFGS iterations between two progress-bar updates (the optimizer keeps its history)."""


@dataclass
class LinearProbe:
    """A fitted probe. mean, std: [F]; weight: [C, F]; bias: [C]; ``iterations`` run by L-BFGS;
    ``converged``: whether it stopped on tolerance before ``max_iter``."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor
    iterations: int
    converged: bool

    def logits(self, h: Tensor) -> Tensor:
        """h: [N, F] -> logits [N, C]."""
        h = h.to(device=self.weight.device, dtype=self.weight.dtype)
        return ((h - self.mean) / self.std) @ self.weight.T + self.bias


def probe_objective(weight: Tensor, bias: Tensor, x: Tensor, labels: Tensor, weight_decay: float) -> Tensor:
    """Mean cross-entropy of standardised x [N, F] under (W [C, F], b [C]) + wd/2 ||W||²."""
    return F.cross_entropy(x @ weight.T + bias, labels) + 0.5 * weight_decay * weight.pow(2).sum()


def fit_linear_probe(h: Tensor, labels: Tensor, num_classes: int, weight_decay: float = WEIGHT_DECAY,
                     max_iter: int = MAX_ITER, tolerance_grad: float = 1e-6, progress: bool = False) -> LinearProbe:
    """Fit the probe of this module's recipe on training features h [N, F] and labels [N] (0..C-1).

    Runs on h's device in float32 (float64 when h is float64).
    """
    if h.dim() != 2 or labels.shape != (h.shape[0],):
        raise ValueError(f"h must be [N, F] and labels [N]; got {tuple(h.shape)} and {tuple(labels.shape)}")
    dtype = torch.float64 if h.dtype == torch.float64 else torch.float32
    h = h.to(dtype)
    labels = labels.to(h.device)
    mean = h.mean(dim=0)
    std = h.std(dim=0, unbiased=False).clamp_min(1e-6)
    x = (h - mean) / std
    weight = torch.zeros(num_classes, h.shape[1], dtype=dtype, device=h.device, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=dtype, device=h.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=ITER_PER_ROUND, max_eval=10 * ITER_PER_ROUND,
                                  history_size=20,
                                  tolerance_grad=tolerance_grad, tolerance_change=1e-10,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = probe_objective(weight, bias, x, labels, weight_decay)
        loss.backward()
        return loss

    iterations, converged = 0, False
    rounds = -(-max_iter // ITER_PER_ROUND)
    with tqdm(total=max_iter, disable=not progress, desc="linear probe", unit="it", leave=False) as bar:
        for _ in range(rounds):
            optimizer.step(closure)
            ran = optimizer.state[weight]["n_iter"] - iterations
            iterations += ran
            bar.update(ran)
            if ran < ITER_PER_ROUND:  # stopped early: on tolerance, or the line search ran dry
                closure()
                grad = torch.cat([weight.grad.flatten(), bias.grad.flatten()])
                converged = bool(grad.abs().max() <= tolerance_grad * 10)
                break
    return LinearProbe(mean, std, weight.detach(), bias.detach(), iterations, converged)


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Share (%) of rows whose label is among the k largest logits; k is capped at C."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels.to(top.device)[:, None]).any(dim=1).double().mean() * 100.0)


def probe_accuracy(train_h: Tensor, train_labels: Tensor, test_h: Tensor, test_labels: Tensor,
                   num_classes: int, progress: bool = False) -> dict[str, float | int | bool]:
    """Fit on train, score on test: ``top1``, ``top5`` (%), ``iterations``, ``converged``."""
    probe = fit_linear_probe(train_h, train_labels, num_classes, progress=progress)
    logits = probe.logits(test_h)
    return {"top1": topk_accuracy(logits, test_labels, 1), "top5": topk_accuracy(logits, test_labels, 5),
            "iterations": probe.iterations, "converged": probe.converged}


RECIPE = {
    "features": "backbone h, standardised with the training split's mean and std",
    "objective": "mean cross-entropy + weight_decay/2 * ||W||^2 (bias not penalised)",
    "optimizer": "full-batch L-BFGS, strong-Wolfe line search, history 20, from zero",
    "weight_decay": WEIGHT_DECAY,
    "max_iter": MAX_ITER,
}
"""What ``probe_accuracy`` does, written into eval.json next to the numbers."""
