"""The linear-probe protocol: the optimum against scikit-learn, the stated tolerance, the
validation split and the choice of weight decay, and the progress bar."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from bayesncl_pyro.data.progress import progress
from bayesncl_pyro.evaluation import linear_probe
from bayesncl_pyro.evaluation.linear_probe import (
    choose_weight_decay,
    fit_linear_probe,
    max_abs_gradient,
    probe_accuracy,
    select_linear_probe,
    standardisation,
    stratified_split,
)

sklearn_linear = pytest.importorskip("sklearn.linear_model")


def noisy_classes(n: int, dims: int, classes: int, seed: int, spread: float = 1.0):
    """Gaussian classes around random centres: overlapping, so the optimum is finite and the
    weight decay matters."""
    gen = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(classes, dims, generator=gen)
    labels = torch.arange(n) % classes
    x = centres[labels] + torch.randn(n, dims, generator=gen) + 3.0
    return x.to(torch.float64), labels


def sklearn_probabilities(x: torch.Tensor, labels: torch.Tensor, weight_decay: float, test: torch.Tensor):
    """scikit-learn's multinomial logistic regression on the same standardised features.

    Its objective, 0.5 ||W||² + C Σ_i CE_i, divided by C·N is mean CE + 1/(2CN) ||W||²: the
    probe's objective at C = 1 / (N · weight_decay); it does not penalise the intercept either.
    """
    mean, std = standardisation(x)
    model = sklearn_linear.LogisticRegression(C=1.0 / (len(x) * weight_decay), tol=1e-12, max_iter=100_000)
    model.fit(((x - mean) / std).numpy(), labels.numpy())
    return model.predict_proba(((test - mean) / std).numpy()), model.coef_


@pytest.mark.parametrize("weight_decay", [1e-1, 1e-3])
def test_probe_reaches_the_optimum_scikit_learn_finds(weight_decay):
    x, y = noisy_classes(300, 6, 3, seed=0)
    test, _ = noisy_classes(100, 6, 3, seed=1)
    reference, coef = sklearn_probabilities(x, y, weight_decay, test)
    # solved far below the default tolerance: the two solvers must agree on the optimum itself
    probe = fit_linear_probe(x, y, 3, weight_decay=weight_decay, rtol=1e-8, max_iter=20_000)
    assert probe.converged
    ours = torch.softmax(probe.logits(test), dim=1).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-6)
    # W is identified (the penalty fixes the softmax's free shift; the bias's shift is free)
    np.testing.assert_allclose(probe.weight.numpy(), coef, atol=1e-4)


def test_probe_at_its_default_tolerance_is_close_to_the_optimum():
    """The stated tolerance (max |gradient| <= 1e-5 x its value at zero) leaves the predicted
    probabilities within 1e-3 of the exact optimum."""
    x, y = noisy_classes(400, 8, 4, seed=2)
    reference, _ = sklearn_probabilities(x, y, 1e-3, x)
    probe = fit_linear_probe(x, y, 4, weight_decay=1e-3)
    assert probe.converged and probe.grad_norm <= probe.tolerance
    np.testing.assert_allclose(torch.softmax(probe.logits(x), 1).numpy(), reference, atol=1e-3)


def test_converged_is_true_when_the_tolerance_is_met_and_false_when_max_iter_is_too_small():
    x, y = noisy_classes(300, 6, 3, seed=3)
    solved = fit_linear_probe(x, y, 3, weight_decay=1e-4)
    mean, std = standardisation(x)
    # the recorded gradient is the true gradient at the returned parameters
    assert solved.grad_norm == pytest.approx(
        max_abs_gradient(solved.weight, solved.bias, (x - mean) / std, y, 1e-4), rel=1e-9)
    assert solved.converged and solved.grad_norm <= solved.tolerance and solved.iterations > 2
    cut = fit_linear_probe(x, y, 3, weight_decay=1e-4, max_iter=2)
    assert cut.iterations == 2 and not cut.converged and cut.grad_norm > cut.tolerance


def test_the_tolerance_is_relative_to_the_gradient_at_zero():
    x, y = noisy_classes(200, 5, 3, seed=4)
    probe = fit_linear_probe(x, y, 3, weight_decay=1e-2)
    mean, std = standardisation(x)
    at_zero = max_abs_gradient(torch.zeros(3, 5, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                               (x - mean) / std, y, 1e-2)
    assert probe.tolerance == pytest.approx(linear_probe.GRAD_RTOL * at_zero)


def test_validation_split_is_stratified_disjoint_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3] * 1)
    fit, val = stratified_split(labels, 0.2, seed=7)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[val], minlength=4).tolist() == [10, 6, 4, 0]  # a lone item stays to fit
    again_fit, again_val = stratified_split(labels, 0.2, seed=7)
    assert torch.equal(val, again_val) and torch.equal(fit, again_fit)
    assert not torch.equal(stratified_split(labels, 0.2, seed=8)[1], val)


def test_weight_decay_choice_takes_the_best_validation_score_and_breaks_ties_to_the_larger():
    table = [{"weight_decay": wd, "top1": top1} for wd, top1 in [(1e-1, 50.0), (1e-2, 61.0), (1e-3, 61.0),
                                                                  (1e-4, 60.0)]]
    assert choose_weight_decay(table) == 1e-2
    assert choose_weight_decay([{"weight_decay": 1e-3, "top1": float("nan")},
                                {"weight_decay": 1e-2, "top1": float("nan")}]) == 1e-2


def test_selection_refits_with_the_decay_of_the_best_validation_score():
    x, y = noisy_classes(300, 20, 3, seed=5, spread=0.4)
    selection = select_linear_probe(x, y, 3)
    table = selection.validation
    assert [v["weight_decay"] for v in table] == sorted(linear_probe.WEIGHT_DECAYS, reverse=True)
    best = max(v["top1"] for v in table)
    assert selection.probe.weight_decay == max(v["weight_decay"] for v in table if v["top1"] == best)
    assert all(v["converged"] for v in table) and selection.probe.converged
    assert selection.num_validation == 60
    # the refit is on every training item: its optimum is the one a fit from zero reaches
    direct = fit_linear_probe(x, y, 3, weight_decay=selection.probe.weight_decay)
    np.testing.assert_allclose(torch.softmax(selection.probe.logits(x), 1).numpy(),
                               torch.softmax(direct.logits(x), 1).numpy(), atol=1e-3)


def test_probe_progress_bar_counts_fits_and_ends_full_when_fits_converge_early(monkeypatch):
    bars = []

    def recording(*args, **kwargs):
        bars.append(progress(*args, **{**kwargs, "enabled": True, "stream": io.StringIO()}))
        return bars[-1]

    monkeypatch.setattr(linear_probe, "progress_bar", recording)
    x, y = noisy_classes(120, 4, 3, seed=6)
    result = probe_accuracy(x, y, x, y, 3, progress=True)
    assert result["converged"] and result["iterations"] < linear_probe.MAX_ITER
    (bar,) = bars
    assert bar.closed and (bar.n, bar.total) == (len(linear_probe.WEIGHT_DECAYS) + 1,) * 2
    assert bar.unit == "fit" and "weight decays" in bar.desc


def test_probe_accuracy_reports_how_the_probe_was_fitted():
    x, y = noisy_classes(150, 4, 3, seed=8)
    result = probe_accuracy(x, y, x, y, 3)
    for key in ("top1", "top5", "converged", "iterations", "grad_norm", "tolerance", "weight_decay",
                "validation", "num_validation"):
        assert key in result
    assert result["weight_decay"] in linear_probe.WEIGHT_DECAYS
    assert result["predictions"].shape == (150,)
    assert result["top1"] == pytest.approx(float((result["predictions"] == y).double().mean() * 100))


def test_history_is_shortened_only_where_it_would_pass_its_memory_budget():
    per_step = 2 * 8  # two float64 vectors per remembered step
    assert linear_probe.history_size(10 * 512 + 10) == linear_probe.HISTORY
    largest = linear_probe.HISTORY_BYTES // (per_step * linear_probe.HISTORY)
    assert linear_probe.history_size(largest) == linear_probe.HISTORY
    assert linear_probe.history_size(largest + 1) == linear_probe.HISTORY - 1
    many = 10_000 * 512 + 10_000  # 10,000 classes of 512 features: 6 steps, 0.49 GB instead of 1.64 GB
    assert linear_probe.history_size(many) == 6
    assert linear_probe.history_size(many) * per_step * many <= linear_probe.HISTORY_BYTES
    assert linear_probe.history_size(10**12) == linear_probe.MIN_HISTORY


def test_a_probe_with_a_short_history_reaches_the_optimum_scikit_learn_finds(monkeypatch):
    x, y = noisy_classes(300, 6, 3, seed=0)
    test, _ = noisy_classes(100, 6, 3, seed=1)
    reference, _ = sklearn_probabilities(x, y, 1e-3, test)
    sizes = []
    original = torch.optim.LBFGS

    def spy(*args, **kwargs):
        sizes.append(kwargs["history_size"])
        return original(*args, **kwargs)

    monkeypatch.setattr(linear_probe, "HISTORY_BYTES", 2 * 8 * (6 * 3 + 3) * 5)  # room for 5 steps
    monkeypatch.setattr(torch.optim, "LBFGS", spy)
    probe = fit_linear_probe(x, y, 3, weight_decay=1e-3, rtol=1e-8, max_iter=20_000)
    assert sizes == [5] and probe.converged
    np.testing.assert_allclose(torch.softmax(probe.logits(test), dim=1).numpy(), reference, atol=1e-6)
