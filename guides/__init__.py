"""Pyro guides: amortized gate networks for the local gates, mean-field guides for global latents."""
from .amortized_gates import AmortizedGates, gate_network
from .no_gates import NoGates

__all__ = ["AmortizedGates", "NoGates", "gate_network"]
