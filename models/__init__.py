"""Pyro models: a gate prior plus the contrastive likelihood, one module per prior family.

Installed as ``bayesncl_pyro.models`` (the repository keeps the folder at the top level).
Importing this package registers every family in ``bayesncl_pyro.config.choices.PRIORS``; the
registry imports it on first look-up. Models may import guides (each family names its guide),
inference pieces (plates, the contrastive rows), distributions and config; never the reverse.
"""
from . import (  # noqa: F401  (registration)
    bernoulli,
    beta_bernoulli,
    frequency_bernoulli,
    hard_concrete,
    learned_mask,
    negatives_gated,
    ungated,
)
from .family import PriorFamily

__all__ = ["PriorFamily"]
