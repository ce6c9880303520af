"""Variational gate distributions q(m | x) = Bernoulli(α), one class per gradient estimator.

The variational family is Bernoulli(α) for every estimator; the estimators differ only in how a
gate value is drawn and how gradients flow back to α (``rsample``):

- ``ste`` (the paper's default): m = 1[α > threshold] + (α − sg(α)): deterministic hard gate,
  straight-through gradient.
- ``concrete`` (the paper's "GS" variant): a Binary-Concrete draw s = σ((logit α + L)/λ) with
  Logistic noise L = log u − log(1 − u), hard-thresholded, straight-through through s. The
  authors' code adds a single Gumbel draw instead of L; a single Gumbel is not the difference of
  two Gumbels, so its relaxed sample is biased towards 1 and it is not the Binary-Concrete of
  Maddison et al. We implement the correct noise.
- ``sampled_ste``: m ~ Bern(α) drawn exactly, with the gradient of α (m + α − sg(α)): the gate
  the training loss sees is a draw from q, as in the ELBO, while the gradient is the same
  straight-through one as ``ste``'s. It separates "hard gates drawn from the posterior" from "the
  deterministic thresholded gate" when asking what carries ``ste``'s gain.
- ``soft`` (the paper's "soft gating" ablation): m = α itself, no threshold and no noise.
- ``score``: exact draws m ~ Bern(α) with a score-function gradient and a leave-one-out baseline
  over ``gate.particles`` draws (:class:`bayesncl_pyro.inference.leave_one_out.LeaveOneOutELBO`): the unbiased
  reference the biased estimators above are measured against.

Their KL to a Bernoulli(ρ) prior is analytic and clamped as in the paper (α, ρ ∈ [0.01, 0.99]);
it is registered so that ``TraceMeanField_ELBO`` uses it. Which ELBO trains an estimator follows
from ``has_rsample`` (:func:`bayesncl_pyro.inference.elbo.make_elbo`): ``TraceMeanField_ELBO`` for
the pathwise ones, the leave-one-out score-function ELBO for ``score``.
"""
from __future__ import annotations

import torch
from pyro.distributions import Bernoulli
from torch.distributions import constraints, kl_divergence, register_kl

from bayesncl_pyro.config.choices import ESTIMATORS

KL_CLAMP = (0.01, 0.99)


def clamped_bernoulli_kl(alpha: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """KL(Bern(α) || Bern(ρ)) with both probabilities clamped to [0.01, 0.99] (SPEC §3)."""
    alpha = alpha.clamp(*KL_CLAMP)
    rho = rho.clamp(*KL_CLAMP)
    return alpha * (alpha.log() - rho.log()) + (1 - alpha) * ((1 - alpha).log() - (1 - rho).log())


class GateBernoulli(Bernoulli):
    """Bernoulli(α) whose ``rsample`` is a gradient estimator; subclasses define ``_draw``.

    ``threshold`` turns a probability (or a relaxed draw) into a hard gate.
    """

    has_rsample = True

    def __init__(self, probs=None, logits=None, threshold: float = 0.5, validate_args=None):
        self.threshold = threshold
        super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    @classmethod
    def from_config(cls, logits: torch.Tensor, gate_cfg) -> "GateBernoulli":
        return cls(logits=logits, threshold=gate_cfg.threshold)

    def _copy_extra(self, new: "GateBernoulli") -> None:
        new.threshold = self.threshold

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        self._copy_extra(new)
        return super().expand(batch_shape, _instance=new)

    def hard_gate(self) -> torch.Tensor:
        """The deterministic test-time gate 1[α > threshold]."""
        return (self.probs > self.threshold).to(self.probs.dtype)

    def _draw(self, shape: torch.Size) -> torch.Tensor:
        raise NotImplementedError

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._draw(self._extended_shape(sample_shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Value of ``hard``, gradient of ``soft``; the zero is added last so the value stays exact."""
    return hard + (soft - soft.detach())


@ESTIMATORS.register("ste")
class StraightThroughBernoulli(GateBernoulli):
    """m = 1[α > threshold] with the gradient of α (deterministic; the paper's default)."""

    def _draw(self, shape: torch.Size) -> torch.Tensor:
        probs = self.probs.expand(shape)
        return straight_through((probs > self.threshold).to(probs.dtype), probs)


@ESTIMATORS.register("sampled_ste")
class SampledStraightThroughBernoulli(GateBernoulli):
    """m ~ Bern(α) exactly, with the gradient of α: m + α − sg(α) (straight-through through a draw).

    The value is a true Bernoulli draw (P(m = 1) = α; the threshold plays no part in training),
    so the loss is a one-sample estimate of E_q[InfoNCE(m)] + λ·KL; its gradient ∂/∂α is taken as
    if m were α, which is biased, like ``ste``'s.
    """

    def _draw(self, shape: torch.Size) -> torch.Tensor:
        probs = self.probs.expand(shape)
        return straight_through(torch.bernoulli(probs.detach()), probs)


@ESTIMATORS.register("concrete")
class ConcreteBernoulli(GateBernoulli):
    """Binary-Concrete draw with Logistic noise at ``relax_temperature`` λ, hard-thresholded,
    straight-through (the paper's "GS" estimator, with the correct noise)."""

    def __init__(self, probs=None, logits=None, threshold: float = 0.5, relax_temperature: float = 1.0,
                 validate_args=None):
        self.relax_temperature = relax_temperature
        super().__init__(probs=probs, logits=logits, threshold=threshold, validate_args=validate_args)

    @classmethod
    def from_config(cls, logits: torch.Tensor, gate_cfg) -> "ConcreteBernoulli":
        return cls(logits=logits, threshold=gate_cfg.threshold, relax_temperature=gate_cfg.relax_temperature)

    def _copy_extra(self, new: "GateBernoulli") -> None:
        super()._copy_extra(new)
        new.relax_temperature = self.relax_temperature

    def _draw(self, shape: torch.Size) -> torch.Tensor:
        logits = self.logits.expand(shape)
        tiny = torch.finfo(logits.dtype).tiny
        u = torch.rand(shape, dtype=logits.dtype, device=logits.device).clamp(tiny, 1 - 1e-7)
        noise = u.log() - (-u).log1p()
        soft = torch.sigmoid((logits + noise) / self.relax_temperature)
        return straight_through((soft > self.threshold).to(soft.dtype), soft)


@ESTIMATORS.register("soft")
class SoftBernoulli(GateBernoulli):
    """m = α exactly: no threshold, no noise (the paper's "soft gating" ablation).

    The value is a probability, not a draw from {0, 1}, so the support is the closed unit
    interval: Pyro validates every site value against the support of the guide's and the model's
    distribution, and ``log_prob`` (the Bernoulli cross-entropy m log α + (1 − m) log(1 − α)) is
    well defined there. The model's prior must accept such values too: the gate priors are
    :class:`BernoulliGatePrior`. The loss never evaluates either log-density: the KL between them
    is the registered analytic one. The test-time gate stays 1[α > threshold] (SPEC §6).
    """

    support = constraints.unit_interval

    def _draw(self, shape: torch.Size) -> torch.Tensor:
        return self.probs.expand(shape)


@ESTIMATORS.register("score")
class ScoreBernoulli(GateBernoulli):
    """Exact draws m ~ Bern(α), no reparameterisation: the gradient is the score function's.

    Trained by :class:`bayesncl_pyro.inference.leave_one_out.LeaveOneOutELBO` with ``gate.particles`` draws per step;
    its value is the Monte-Carlo estimate of the true objective E_q[InfoNCE(m)] + λ·KL.
    """

    has_rsample = False

    def _draw(self, shape: torch.Size) -> torch.Tensor:
        return torch.bernoulli(self.probs.detach().expand(shape))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        raise NotImplementedError("ScoreBernoulli has no reparameterised sample; use sample()")

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._draw(self._extended_shape(sample_shape))


class BernoulliGatePrior(Bernoulli):
    """Bernoulli(ρ) prior of a gate whose log-density also accepts relaxed gate values m ∈ [0, 1]:

        log p(m) = m log ρ + (1 − m) log(1 − ρ),

    the Bernoulli pmf on {0, 1} (nothing changes for hard gates) and its continuous extension in
    between, so that a soft gate (m = α) passes Pyro's support validation of the model site.
    On (0, 1) it is not a normalised density; it is never used as one: the loss takes the
    registered analytic KL to the guide's Bernoulli(α).
    """

    support = constraints.unit_interval


@register_kl(GateBernoulli, Bernoulli)
def _kl_gate_bernoulli(q: GateBernoulli, p: Bernoulli) -> torch.Tensor:
    return clamped_bernoulli_kl(q.probs, p.probs)


__all__ = [
    "BernoulliGatePrior", "GateBernoulli", "StraightThroughBernoulli", "SampledStraightThroughBernoulli",
    "ConcreteBernoulli", "SoftBernoulli", "ScoreBernoulli", "clamped_bernoulli_kl", "straight_through", "kl_divergence",
]
