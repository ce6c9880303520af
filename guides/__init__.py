"""Pyro guides: amortized gate networks for the local gates, mean-field guides for global latents."""
from .amortized_gates import AmortizedGates, gate_network
from .beta_bernoulli import BetaBernoulliGates
from .hard_concrete_gates import HardConcreteGate, HardConcreteGates
from .no_gates import NoGates

__all__ = ["AmortizedGates", "BetaBernoulliGates", "HardConcreteGate", "HardConcreteGates", "NoGates", "gate_network"]
