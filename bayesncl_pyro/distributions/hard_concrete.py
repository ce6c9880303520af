"""The hard-concrete gate distribution of Louizos, Welling and Kingma (ICLR 2018).

A Binary-Concrete variable s in (0, 1) with location alpha = exp(log_alpha) and temperature beta
(Maddison et al. 2017) is stretched to the interval (gamma, zeta) with gamma < 0 < 1 < zeta and
then clamped to [0, 1]:

    u ~ U(0, 1),  s = sigmoid((log u - log(1 - u) + log_alpha) / beta),
    t = s (zeta - gamma) + gamma,  m = min(1, max(0, t)).

The clamp folds the stretched tails onto the end points, so m is exactly 0 or exactly 1 with
non-zero probability while staying reparameterisable in between. The law of m is a mixture: a
point mass at 0, a point mass at 1 and a density on (0, 1). ``log_prob`` is taken with respect to
the base measure "delta_0 + delta_1 + Lebesgue on (0, 1)", so for two hard-concrete laws (say a
prior and a guide) the log-ratio of ``log_prob`` is a valid Radon-Nikodym derivative.

Everything follows from the cdf of the unclamped stretched variable t, for gamma < t < zeta,

    Q(t) = P(t_sample <= t) = sigmoid(beta * log((t - gamma) / (zeta - t)) - log_alpha),

because logit(s) = (L + log_alpha) / beta with L standard logistic, and at
s = (t - gamma) / (zeta - gamma) the logit is log((t - gamma) / (zeta - t)). Hence

    P(m = 0) = Q(0) = sigmoid(beta * log(-gamma / zeta) - log_alpha),
    P(m = 1) = 1 - Q(1) = sigmoid(log_alpha - beta * log((1 - gamma) / (zeta - 1))),
    P(m != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))   (the expected L0 penalty),

and on (0, 1) the density is dQ/dt. With z(t) = beta * log((t - gamma) / (zeta - t)) - log_alpha,

    log q(t) = logsigmoid(z) + logsigmoid(-z) + log(beta) + log(zeta - gamma)
               - log(t - gamma) - log(zeta - t),

which is the Binary-Concrete density beta alpha s^(-beta-1) (1-s)^(-beta-1) /
(alpha s^(-beta) + (1-s)^(-beta))^2 at s = (t - gamma) / (zeta - gamma), divided by the
Jacobian (zeta - gamma), written in a form that never overflows: on [0, 1] both t - gamma and
zeta - t are at least min(-gamma, zeta - 1) > 0, and logsigmoid is stable for any z.
"""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all, clamp_probs

from bayesncl_pyro.config.errors import ConfigError


class HardConcrete(TorchDistribution):
    """Stretched and clamped Binary-Concrete gate m in [0, 1] with exact zeros and ones.

    Args:
        log_alpha: location logits, any shape; the batch shape is ``log_alpha.shape``.
        temperature: beta > 0; the paper uses 2/3.
        lower: gamma < 0, the left end of the stretch interval; the paper uses -0.1.
        upper: zeta > 1, the right end of the stretch interval; the paper uses 1.1.

    ``mean`` and ``entropy`` are not implemented: neither has a closed form.
    """

    arg_constraints = {"log_alpha": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, log_alpha, temperature=2.0 / 3.0, lower=-0.1, upper=1.1, validate_args=None):
        temperature, lower, upper = float(temperature), float(lower), float(upper)
        if not temperature > 0.0:
            raise ConfigError(f"HardConcrete temperature={temperature!r} is not allowed; it must be > 0")
        if not lower < 0.0:
            raise ConfigError(f"HardConcrete lower={lower!r} is not allowed; it must be < 0")
        if not upper > 1.0:
            raise ConfigError(f"HardConcrete upper={upper!r} is not allowed; it must be > 1")
        (self.log_alpha,) = broadcast_all(log_alpha)
        self.temperature = temperature
        self.lower = lower
        self.upper = upper
        super().__init__(self.log_alpha.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HardConcrete, _instance)
        batch_shape = torch.Size(batch_shape)
        new.log_alpha = self.log_alpha.expand(batch_shape)
        new.temperature = self.temperature
        new.lower = self.lower
        new.upper = self.upper
        super(HardConcrete, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _stretched_cdf_logit(self, value):
        """z(t) = logit Q(t) for t in [0, 1]; same shape as ``value`` broadcast with log_alpha."""
        inside = value.clamp(0.0, 1.0)
        log_ratio = torch.log(inside - self.lower) - torch.log(self.upper - inside)
        return self.temperature * log_ratio - self.log_alpha

    def rsample(self, sample_shape=torch.Size()):
        """Reparameterised gates, shape ``sample_shape + batch_shape``; d m / d log_alpha is zero
        where the clamp is active, as in the paper."""
        shape = self._extended_shape(sample_shape)
        uniform = clamp_probs(torch.rand(shape, dtype=self.log_alpha.dtype, device=self.log_alpha.device))
        logistic_noise = torch.log(uniform) - torch.log1p(-uniform)
        concrete = torch.sigmoid((logistic_noise + self.log_alpha) / self.temperature)
        stretched = concrete * (self.upper - self.lower) + self.lower
        return stretched.clamp(0.0, 1.0)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value):
        """log P(0) at 0, log P(1) at 1, log density on (0, 1), -inf outside [0, 1] (mixed measure)."""
        value = torch.as_tensor(value, dtype=self.log_alpha.dtype, device=self.log_alpha.device)
        if self._validate_args:
            self._validate_sample(value)
        z = self._stretched_cdf_logit(value)
        inside = value.clamp(0.0, 1.0)
        log_density = (
            torch.nn.functional.logsigmoid(z)
            + torch.nn.functional.logsigmoid(-z)
            + math.log(self.temperature)
            + math.log(self.upper - self.lower)
            - torch.log(inside - self.lower)
            - torch.log(self.upper - inside)
        )
        result = torch.where(value == 1.0, self.log_prob_one(), log_density)
        result = torch.where(value == 0.0, self.log_prob_zero(), result)
        outside = (value < 0.0) | (value > 1.0)
        return result.masked_fill(outside, -math.inf)

    def cdf(self, value):
        """P(m <= value): 0 below 0, jumps to P(0) at 0, Q(value) on (0, 1), 1 from 1 on."""
        value = torch.as_tensor(value, dtype=self.log_alpha.dtype, device=self.log_alpha.device)
        inner = torch.sigmoid(self._stretched_cdf_logit(value))
        result = torch.where(value >= 1.0, torch.ones_like(inner), inner)
        return result.masked_fill(value < 0.0, 0.0)

    def log_prob_zero(self):
        """log P(m = 0), shape ``batch_shape``."""
        return torch.nn.functional.logsigmoid(self._logit_zero_threshold() - self.log_alpha)

    def log_prob_one(self):
        """log P(m = 1), shape ``batch_shape``."""
        return torch.nn.functional.logsigmoid(self.log_alpha - self._logit_one_threshold())

    def prob_zero(self):
        """P(m = 0), shape ``batch_shape``."""
        return torch.sigmoid(self._logit_zero_threshold() - self.log_alpha)

    def prob_one(self):
        """P(m = 1), shape ``batch_shape``."""
        return torch.sigmoid(self.log_alpha - self._logit_one_threshold())

    def prob_nonzero(self):
        """P(m != 0) = 1 - P(m = 0): the expected L0 norm of one gate, shape ``batch_shape``."""
        return torch.sigmoid(self.log_alpha - self._logit_zero_threshold())

    def deterministic_gate(self):
        """The paper's test-time gate min(1, max(0, sigmoid(log_alpha) (zeta - gamma) + gamma)),
        shape ``batch_shape``."""
        return (torch.sigmoid(self.log_alpha) * (self.upper - self.lower) + self.lower).clamp(0.0, 1.0)

    def _logit_zero_threshold(self):
        return self.temperature * math.log(-self.lower / self.upper)

    def _logit_one_threshold(self):
        return self.temperature * math.log((1.0 - self.lower) / (self.upper - 1.0))
