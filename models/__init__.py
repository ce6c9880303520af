"""Pyro models: a gate prior plus the contrastive likelihood, one module per prior family.

Importing this package registers every family in ``bayesncl_pyro.registries.PRIORS``.
"""
from . import bernoulli, ungated  # noqa: F401  (registration)
from .family import PriorFamily

__all__ = ["PriorFamily"]
