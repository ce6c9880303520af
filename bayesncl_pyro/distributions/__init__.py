"""Distributions of our own: the gate estimators' variational Bernoullis (registered by name as
``gate.estimator``) and the hard concrete of Louizos et al. Pyro distributions with their
tests; they may import only ``config``."""
from bayesncl_pyro.distributions.gates import (
    BernoulliGatePrior,
    ConcreteBernoulli,
    GateBernoulli,
    SampledStraightThroughBernoulli,
    ScoreBernoulli,
    SoftBernoulli,
    StraightThroughBernoulli,
    clamped_bernoulli_kl,
)
from bayesncl_pyro.distributions.hard_concrete import HardConcrete

__all__ = [
    "BernoulliGatePrior", "ConcreteBernoulli", "GateBernoulli", "HardConcrete", "SampledStraightThroughBernoulli", "ScoreBernoulli", "SoftBernoulli",
    "StraightThroughBernoulli", "clamped_bernoulli_kl",
]
