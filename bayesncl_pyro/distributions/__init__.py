"""Distributions of our own: the gate estimators' variational Bernoullis and the hard concrete."""
from .gates import (
    BernoulliGatePrior,
    ConcreteBernoulli,
    GateBernoulli,
    ScoreBernoulli,
    SoftBernoulli,
    StraightThroughBernoulli,
    clamped_bernoulli_kl,
)
from .hard_concrete import HardConcrete

__all__ = [
    "BernoulliGatePrior", "ConcreteBernoulli", "GateBernoulli", "HardConcrete", "ScoreBernoulli", "SoftBernoulli",
    "StraightThroughBernoulli", "clamped_bernoulli_kl",
]
