"""Distributions of our own: the gate estimators' variational Bernoullis and the hard concrete."""
from .gates import ConcreteBernoulli, GateBernoulli, StraightThroughBernoulli, clamped_bernoulli_kl

__all__ = ["ConcreteBernoulli", "GateBernoulli", "StraightThroughBernoulli", "clamped_bernoulli_kl"]
