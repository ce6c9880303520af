"""The amortized hard-concrete guide: q(m | h) = HardConcrete(log_alpha = ℓ(h) / T, β).

ℓ comes from the same gate MLP on ``h.detach()`` as the Bernoulli guide (gradient isolation), β is
``gate.hard_concrete_temperature``. The gate is reparameterised through the stretched and clamped
Binary-Concrete sample, so ``gate.estimator`` does not apply.

How the gates enter the objective is ``gate.hard_concrete_mode`` (the ``HARD_CONCRETE_MODES``
registry, filled here):

- ``l0`` (Louizos, Welling and Kingma 2018): the gate sites are masked out of the KL and the guide
  adds the expected L0 norm as a factor, so the loss is InfoNCE + λ · mean_rows Σ_d P(m_{i,d} ≠ 0).
- ``mc``: the gate sites keep a hard-concrete prior (see ``models.hard_concrete``) and the KL,
  which has no closed form, is the one-sample Monte-Carlo estimate log q(m) − log p(m) on the
  mixed measure of :class:`HardConcrete`. Its value is unbiased; its pathwise gradient misses the
  term from the point masses' boundaries moving with log_alpha, so it is biased (a known property
  of reparameterising a clamped variable).

The test-time gate is 1[P(m ≠ 0) > threshold], the same rule as 1[α > threshold] for the
Bernoulli gates with "open" meaning "non-zero"; Louizos' deterministic gate is available as
``posterior(...).deterministic_gate()``.
"""
from __future__ import annotations

import pyro
import torch
from torch import nn

from bayesncl_pyro.config.choices import HARD_CONCRETE_MODES
from bayesncl_pyro.distributions.hard_concrete import HardConcrete
from bayesncl_pyro.guides.amortized_gates import gate_network
from bayesncl_pyro.inference.plates import at_least_float32, gate_rows


class HardConcreteGate(HardConcrete):
    """HardConcrete with the interface the network reads: ``probs`` = P(m ≠ 0) and ``hard_gate()``."""

    def __init__(self, log_alpha, temperature=2.0 / 3.0, threshold: float = 0.5, validate_args=None):
        self.threshold = threshold
        super().__init__(log_alpha, temperature=temperature, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HardConcreteGate, _instance)
        new.threshold = self.threshold
        return super().expand(batch_shape, _instance=new)

    @property
    def probs(self) -> torch.Tensor:
        """P(m ≠ 0): the probability that the gate is open, batch shape."""
        return self.prob_nonzero()

    def hard_gate(self) -> torch.Tensor:
        """The test-time gate 1[P(m ≠ 0) > threshold], batch shape."""
        return (self.probs > self.threshold).to(self.log_alpha.dtype)


class L0Penalty:
    """Gate sites out of the KL; the expected L0 norm Σ_d P(m ≠ 0) per row as a guide-side factor,
    scaled by the gate plate to λ · mean_rows."""

    gate_site_in_kl = False

    def guide_factor(self, posterior: HardConcreteGate) -> None:
        pyro.factor("l0_penalty", posterior.prob_nonzero().sum(-1), has_rsample=True)


class MonteCarloKL:
    """Gate sites in the ELBO with their hard-concrete prior; Monte-Carlo KL, no extra factor."""

    gate_site_in_kl = True

    def guide_factor(self, posterior: HardConcreteGate) -> None:
        return None


HARD_CONCRETE_MODES.register("l0", L0Penalty())
HARD_CONCRETE_MODES.register("mc", MonteCarloKL())


class HardConcreteGates(nn.Module):
    """Guide for the local ``gate`` site, shape [rows, D], event dim D (plus ``l0_penalty`` in l0 mode)."""

    def __init__(self, in_dim: int, out_dim: int, gate_cfg):
        super().__init__()
        self.net = gate_network(in_dim, gate_cfg.hidden, out_dim, gate_cfg.layers)
        self.mode = HARD_CONCRETE_MODES.get(gate_cfg.hard_concrete_mode)
        self.gate_cfg = gate_cfg

    def gate_logits(self, h: torch.Tensor) -> torch.Tensor:
        """ℓ: [rows, D] logits from ``h.detach()``."""
        return self.net(h.detach())

    def posterior(self, gate_logits: torch.Tensor) -> HardConcreteGate:
        """q(m | x) for every row and dimension, batch shape [rows, D]."""
        g = self.gate_cfg
        return HardConcreteGate(at_least_float32(gate_logits) / g.temperature, temperature=g.hard_concrete_temperature,
                                threshold=g.threshold)

    def forward(self, z, gate_logits, contrastive) -> None:
        posterior = self.posterior(gate_logits)
        with gate_rows(z.shape[0], self.gate_cfg.kl_weight):
            with pyro.poutine.mask(mask=self.mode.gate_site_in_kl):
                pyro.sample("gate", posterior.to_event(1))
            self.mode.guide_factor(posterior)
