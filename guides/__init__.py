"""Pyro guides: amortized gate networks for the local gates, mean-field guides for global latents.

Installed as ``bayesncl_pyro.guides`` (the repository keeps the folder at the top level). Each
guide samples the same sites in the same plates as its model in ``bayesncl_pyro.models``; guides
may import inference pieces (plates), distributions and config, never the models."""
from bayesncl_pyro.guides.amortized_gates import AmortizedGates, gate_network
from bayesncl_pyro.guides.beta_bernoulli import BetaBernoulliGates
from bayesncl_pyro.guides.hard_concrete_gates import HardConcreteGate, HardConcreteGates
from bayesncl_pyro.guides.learned_mask import MaskLogits, PointMask
from bayesncl_pyro.guides.no_gates import NoGates

__all__ = ["AmortizedGates", "BetaBernoulliGates", "HardConcreteGate", "HardConcreteGates", "MaskLogits", "NoGates", "PointMask",
           "gate_network"]
