"""Pyro models: a gate prior plus the contrastive likelihood, one module per prior family.

Importing this package registers every family in ``bayesncl_pyro.registries.PRIORS``.
"""
from bayesncl_pyro.registries import PRIORS
from guides.amortized_gates import AmortizedGates

from . import bernoulli, beta_bernoulli, hard_concrete, ungated  # noqa: F401  (registration)
from .family import PriorFamily


def uses_gate_estimator(prior: str) -> bool:
    """Whether ``gate.estimator`` applies to the prior ``prior``: its guide draws Bernoulli gates
    through an estimator (it is an :class:`AmortizedGates`). Hard-concrete gates are pathwise by
    construction and ungated models have no gates, so for them the setting is unused."""
    guide = PRIORS.get(prior).guide
    return isinstance(guide, type) and issubclass(guide, AmortizedGates)


__all__ = ["PriorFamily", "uses_gate_estimator"]
