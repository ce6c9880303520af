"""HardConcrete against independent references: Monte-Carlo frequencies of its own sampler,
Gauss-Legendre quadrature of its density, the Binary-Concrete density of Maddison et al. pushed
through the stretch, finite differences of its cdf, and hand-derived sigmoid derivatives."""

import math

import numpy as np
import pyro
import pytest
import torch

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.distributions.hard_concrete import HardConcrete

NUM_MC = 1_000_000
LOG_ALPHAS = [-2.0, 0.0, 1.5]
TEMPERATURES = [2.0 / 3.0, 0.4, 1.0]
# Dvoretzky-Kiefer-Wolfowitz: P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2) = 2 exp(-18) at n = 1e6.
KS_TOLERANCE = 3e-3


@pytest.fixture(autouse=True)
def fixed_seed():
    torch.manual_seed(0)
    pyro.set_rng_seed(0)


def monte_carlo_tolerance(probability, num_samples):
    """Five binomial standard deviations, floored so a probability of ~0 still gets a margin."""
    return 5.0 * torch.sqrt(probability * (1.0 - probability) / num_samples) + 1e-5


def gauss_legendre_unit_interval(num_nodes, dtype=torch.float64):
    """Nodes strictly inside (0, 1) and weights, so the point masses at 0 and 1 are never hit."""
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    return torch.tensor((nodes + 1.0) / 2.0, dtype=dtype), torch.tensor(weights / 2.0, dtype=dtype)


def binary_concrete_log_density(s, log_alpha, temperature):
    """Maddison et al. (2017): p(s) = b a s^(-b-1) (1-s)^(-b-1) / (a s^(-b) + (1-s)^(-b))^2."""
    alpha = math.exp(log_alpha)
    b = temperature
    numerator = b * alpha * s ** (-b - 1) * (1 - s) ** (-b - 1)
    denominator = (alpha * s ** (-b) + (1 - s) ** (-b)) ** 2
    return torch.log(numerator / denominator)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_point_masses_match_monte_carlo_frequencies(temperature):
    gate = HardConcrete(torch.tensor(LOG_ALPHAS, dtype=torch.float64), temperature=temperature)
    samples = gate.sample((NUM_MC,))
    frequencies = {
        "zero": (samples == 0.0).double().mean(0),
        "one": (samples == 1.0).double().mean(0),
        "nonzero": (samples != 0.0).double().mean(0),
    }
    closed_forms = {"zero": gate.prob_zero(), "one": gate.prob_one(), "nonzero": gate.prob_nonzero()}
    for name, closed_form in closed_forms.items():
        tolerance = monte_carlo_tolerance(closed_form, NUM_MC)
        assert torch.all(tolerance < 5e-3)
        difference = (frequencies[name] - closed_form).abs()
        assert torch.all(difference < tolerance), (name, frequencies[name], closed_form)


def test_prob_nonzero_is_one_minus_prob_zero_and_the_papers_formula():
    log_alpha = torch.linspace(-10.0, 10.0, 41, dtype=torch.float64)
    gate = HardConcrete(log_alpha)
    papers_formula = torch.sigmoid(log_alpha - (2.0 / 3.0) * math.log(0.1 / 1.1))
    torch.testing.assert_close(gate.prob_nonzero(), 1.0 - gate.prob_zero(), rtol=0, atol=1e-12)
    torch.testing.assert_close(gate.prob_nonzero(), papers_formula, rtol=0, atol=1e-12)
    torch.testing.assert_close(gate.log_prob_zero().exp(), gate.prob_zero(), rtol=1e-12, atol=0)
    torch.testing.assert_close(gate.log_prob_one().exp(), gate.prob_one(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("lower,upper", [(-0.1, 1.1), (-0.3, 1.05)])
def test_total_mass_is_one(temperature, lower, upper):
    log_alpha = torch.tensor([-4.0, -2.0, 0.0, 1.5, 4.0], dtype=torch.float64)
    gate = HardConcrete(log_alpha, temperature=temperature, lower=lower, upper=upper)
    nodes, weights = gauss_legendre_unit_interval(400)
    density = gate.log_prob(nodes.unsqueeze(-1)).exp()
    continuous_mass = (weights.unsqueeze(-1) * density).sum(0)
    total = gate.prob_zero() + gate.prob_one() + continuous_mass
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-4)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("log_alpha", LOG_ALPHAS)
def test_density_is_the_stretched_binary_concrete_density(log_alpha, temperature):
    lower, upper = -0.1, 1.1
    gate = HardConcrete(torch.tensor(log_alpha, dtype=torch.float64), temperature=temperature)
    values = torch.linspace(0.001, 0.999, 101, dtype=torch.float64)
    unstretched = (values - lower) / (upper - lower)
    reference = binary_concrete_log_density(unstretched, log_alpha, temperature) - math.log(upper - lower)
    torch.testing.assert_close(gate.log_prob(values), reference, rtol=1e-10, atol=1e-10)


def test_log_prob_uses_point_masses_at_the_end_points_and_minus_inf_outside():
    gate = HardConcrete(torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64), validate_args=False)
    torch.testing.assert_close(gate.log_prob(torch.zeros(3, dtype=torch.float64)), gate.prob_zero().log())
    torch.testing.assert_close(gate.log_prob(torch.ones(3, dtype=torch.float64)), gate.prob_one().log())
    outside = gate.log_prob(torch.tensor([-0.05, 1.05, 2.0], dtype=torch.float64))
    assert torch.all(outside == -math.inf)


def test_log_prob_outside_the_support_is_rejected_when_validating():
    gate = HardConcrete(torch.zeros(2), validate_args=True)
    with pytest.raises(ValueError):
        gate.log_prob(torch.tensor([0.5, 1.5]))


@pytest.mark.parametrize("temperature", [2.0 / 3.0, 0.4])
def test_cdf_matches_empirical_cdf(temperature):
    gate = HardConcrete(torch.tensor(LOG_ALPHAS, dtype=torch.float64), temperature=temperature)
    samples = gate.sample((NUM_MC,))
    points = torch.tensor([0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.999, 1.0], dtype=torch.float64)
    empirical = (samples.unsqueeze(0) <= points.view(-1, 1, 1)).double().mean(1)
    analytic = gate.cdf(points.unsqueeze(-1))
    assert analytic.shape == empirical.shape == (len(points), len(LOG_ALPHAS))
    assert torch.all((empirical - analytic).abs() < KS_TOLERANCE)


def test_cdf_end_points_and_monotonicity():
    gate = HardConcrete(torch.tensor(LOG_ALPHAS, dtype=torch.float64))
    torch.testing.assert_close(gate.cdf(torch.tensor(0.0, dtype=torch.float64)), gate.prob_zero())
    one = torch.tensor(1.0, dtype=torch.float64)
    torch.testing.assert_close(gate.cdf(one), torch.ones(3, dtype=torch.float64))
    just_below_one = gate.cdf(torch.tensor(1.0 - 1e-12, dtype=torch.float64))
    torch.testing.assert_close(1.0 - just_below_one, gate.prob_one(), rtol=0, atol=1e-9)
    assert torch.all(gate.cdf(torch.tensor(-0.5, dtype=torch.float64)) == 0.0)
    assert torch.all(gate.cdf(torch.tensor(1.5, dtype=torch.float64)) == 1.0)
    grid = torch.linspace(-0.2, 1.2, 1401, dtype=torch.float64).unsqueeze(-1)
    cdf_values = gate.cdf(grid)
    assert torch.all(cdf_values[1:] >= cdf_values[:-1])
    assert torch.all((cdf_values >= 0.0) & (cdf_values <= 1.0))


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_density_is_the_derivative_of_the_cdf(temperature):
    gate = HardConcrete(torch.tensor(LOG_ALPHAS, dtype=torch.float64), temperature=temperature)
    values = torch.linspace(0.01, 0.99, 99, dtype=torch.float64).unsqueeze(-1)
    step = 1e-6
    finite_difference = (gate.cdf(values + step) - gate.cdf(values - step)) / (2.0 * step)
    torch.testing.assert_close(gate.log_prob(values).exp(), finite_difference, rtol=1e-6, atol=1e-8)


def test_rsample_gradient_matches_derivative_of_the_mean():
    """E[m] = integral over [0, 1] of 1 - Q(t) dt, so d E[m] / d log_alpha = integral of
    sigmoid'(z(t)) dt; the average pathwise gradient must estimate it without bias."""
    log_alpha = torch.tensor(LOG_ALPHAS, dtype=torch.float64, requires_grad=True)
    gate = HardConcrete(log_alpha)
    num_samples = 200_000
    samples = gate.rsample((num_samples,))
    per_sample_gradient = torch.autograd.grad(samples.sum(), log_alpha)[0]
    assert torch.all(torch.isfinite(per_sample_gradient)) and torch.all(per_sample_gradient != 0.0)

    nodes, weights = gauss_legendre_unit_interval(400)
    with torch.no_grad():
        z = (2.0 / 3.0) * torch.log((nodes + 0.1) / (1.1 - nodes)).unsqueeze(-1) - log_alpha
        expected_gradient = (weights.unsqueeze(-1) * torch.sigmoid(z) * torch.sigmoid(-z)).sum(0)

    mean_gradient = per_sample_gradient / num_samples
    # per-sample gradients lie in [0, (zeta - gamma) / (4 beta)] = [0, 0.45]: sd <= 0.45 / 2.
    tolerance = 5.0 * 0.225 / math.sqrt(num_samples)
    assert torch.all((mean_gradient - expected_gradient).abs() < tolerance)


def test_prob_nonzero_gradient_is_the_sigmoid_derivative():
    log_alpha = torch.linspace(-10.0, 10.0, 21, dtype=torch.float64, requires_grad=True)
    prob_nonzero = HardConcrete(log_alpha).prob_nonzero()
    (gradient,) = torch.autograd.grad(prob_nonzero.sum(), log_alpha)
    shifted = log_alpha.detach() - (2.0 / 3.0) * math.log(0.1 / 1.1)
    analytic = torch.exp(-shifted) / (1.0 + torch.exp(-shifted)) ** 2
    torch.testing.assert_close(gradient, analytic, rtol=1e-10, atol=1e-14)


def test_sample_has_no_gradient_and_rsample_does():
    log_alpha = torch.zeros(4, requires_grad=True)
    gate = HardConcrete(log_alpha)
    assert not gate.sample((3,)).requires_grad
    assert gate.rsample((3,)).requires_grad


def test_samples_hit_zero_and_one_exactly_and_stay_in_the_unit_interval():
    gate = HardConcrete(torch.tensor([-1.0, 0.0, 1.0]))
    samples = gate.sample((100_000,))
    assert torch.all((samples >= 0.0) & (samples <= 1.0))
    assert torch.all((samples == 0.0).float().mean(0) > 0.01)
    assert torch.all((samples == 1.0).float().mean(0) > 0.01)
    strictly_inside = (samples > 0.0) & (samples < 1.0)
    assert torch.all(strictly_inside.float().mean(0) > 0.1)


def test_batch_and_sample_shapes():
    gate = HardConcrete(torch.zeros(3))
    assert gate.batch_shape == (3,) and gate.event_shape == ()
    assert gate.rsample().shape == (3,)
    assert gate.rsample((5, 2)).shape == (5, 2, 3)

    expanded = gate.expand([4, 3])
    assert expanded.batch_shape == (4, 3)
    assert expanded.temperature == gate.temperature and expanded.lower == gate.lower
    draws = expanded.sample((7,))
    assert draws.shape == (7, 4, 3)
    assert expanded.log_prob(draws).shape == (7, 4, 3)
    assert expanded.cdf(draws).shape == (7, 4, 3)
    assert expanded.prob_nonzero().shape == (4, 3)

    independent = expanded.to_event(1)
    assert independent.batch_shape == (4,) and independent.event_shape == (3,)
    assert independent.log_prob(independent.sample((2,))).shape == (2, 4)

    broadcast = HardConcrete(torch.zeros(2, 1), temperature=0.5)
    assert broadcast.log_prob(torch.full((3,), 0.5)).shape == (2, 3)
    assert HardConcrete(0.0).batch_shape == ()


def test_inside_pyro_plates_under_poutine_trace():
    log_alpha = torch.linspace(-2.0, 2.0, 3)

    def model():
        with pyro.plate("samples", 4, dim=-1):
            pyro.sample("vector_gates", HardConcrete(log_alpha).expand([4, 3]).to_event(1))
        with pyro.plate("rows", 4, dim=-2), pyro.plate("dims", 3, dim=-1):
            pyro.sample("scalar_gates", HardConcrete(0.5))

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    assert trace.nodes["vector_gates"]["value"].shape == (4, 3)
    assert trace.nodes["vector_gates"]["log_prob"].shape == (4,)
    assert trace.nodes["scalar_gates"]["value"].shape == (4, 3)
    assert trace.nodes["scalar_gates"]["log_prob"].shape == (4, 3)
    assert torch.isfinite(trace.log_prob_sum())


def test_trace_elbo_with_hard_concrete_prior_and_guide_has_finite_gradients():
    prior_log_alpha = torch.full((3,), -1.0)
    guide_log_alpha = torch.tensor([-2.0, 0.5, 3.0], requires_grad=True)

    def model():
        with pyro.plate("data", 8, dim=-1):
            pyro.sample("gates", HardConcrete(prior_log_alpha).expand([8, 3]).to_event(1))

    def guide():
        with pyro.plate("data", 8, dim=-1):
            pyro.sample("gates", HardConcrete(guide_log_alpha).expand([8, 3]).to_event(1))

    loss = pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True).differentiable_loss(model, guide)
    (gradient,) = torch.autograd.grad(loss, guide_log_alpha)
    assert torch.isfinite(loss) and torch.all(torch.isfinite(gradient)) and torch.any(gradient != 0.0)


def test_float32_is_stable_at_extreme_log_alpha():
    log_alpha = torch.tensor([-10.0, 10.0], dtype=torch.float32, requires_grad=True)
    gate = HardConcrete(log_alpha)
    samples = gate.rsample((100_000,))
    grid = torch.cat([torch.tensor([0.0, 1e-7, 0.5, 1.0 - 6e-8, 1.0]), samples.detach().flatten()[:1000]])
    grid = grid.unsqueeze(-1)
    for name, values in {
        "rsample": samples,
        "log_prob of samples": gate.log_prob(samples),
        "log_prob on grid": gate.log_prob(grid),
        "cdf": gate.cdf(grid),
        "prob_zero": gate.prob_zero(),
        "prob_one": gate.prob_one(),
        "log_prob_zero": gate.log_prob_zero(),
        "log_prob_one": gate.log_prob_one(),
    }.items():
        assert torch.all(torch.isfinite(values)), name
    (gradient,) = torch.autograd.grad(gate.log_prob(samples).sum() + samples.sum(), log_alpha)
    assert torch.all(torch.isfinite(gradient))
    assert gate.prob_zero()[0] > 0.99 and gate.prob_one()[1] > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_agree_on_closed_forms(dtype):
    log_alpha = torch.linspace(-10.0, 10.0, 21, dtype=torch.float64)
    reference = HardConcrete(log_alpha)
    gate = HardConcrete(log_alpha.to(dtype))
    values = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64).unsqueeze(-1)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    for method in ("log_prob", "cdf"):
        result = getattr(gate, method)(values.to(dtype)).double()
        expected = getattr(reference, method)(values)
        torch.testing.assert_close(result, expected, rtol=tolerance, atol=tolerance)


def test_deterministic_gate():
    gate = HardConcrete(torch.tensor([-10.0, 0.0, math.log(0.25 / 0.75), 10.0], dtype=torch.float64))
    # sigmoid = (~0, 0.5, 0.25, ~1) -> stretched (-0.1, 0.5, 0.2, 1.1) -> clamped (0, 0.5, 0.2, 1)
    expected = torch.tensor([0.0, 0.5, 0.2, 1.0], dtype=torch.float64)
    torch.testing.assert_close(gate.deterministic_gate(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "keyword,value", [("temperature", 0.0), ("temperature", -1.0), ("lower", 0.0), ("upper", 1.0)]
)
def test_invalid_hyperparameters_are_rejected(keyword, value):
    with pytest.raises(ConfigError, match=keyword):
        HardConcrete(torch.zeros(2), **{keyword: value})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_log_alpha():
    gate = HardConcrete(torch.zeros(3, device="cuda"))
    samples = gate.rsample((10,))
    assert samples.device.type == "cuda"
    assert gate.log_prob(samples).device.type == "cuda"
    assert gate.cdf(samples).device.type == "cuda"
