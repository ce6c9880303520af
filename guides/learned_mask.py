"""The "guide" of the learned-mask control: no latent to infer, only the mask's parameters.

One logit θ_d per output dimension (:mod:`bayesncl_pyro.models.learned_mask` says why the control
exists). The logits start at small random values, θ_d ~ N(0, 0.1²), so that about half of the
dimensions start open, as the amortized gates do at initialisation (their logits start near
zero); they train with the gate parameters (``optim.gate_lr``). The guide samples nothing, so the
ELBO of the model/guide pair is the contrastive term alone.

``posterior`` returns the mask as a point mass (``probs`` = the 0/1 mask): the test-time gate,
the gate statistics, the inspection's draws and the evaluation's "drawn" gates are all the mask
itself, since there is nothing random about it.
"""
from __future__ import annotations

import torch
from torch import nn

from bayesncl_pyro.inference.plates import at_least_float32

INIT_SCALE = 0.1


class PointMask:
    """A deterministic gate with the interface the network reads: ``probs`` (0/1, [rows, D]) and
    ``hard_gate()`` (the same)."""

    def __init__(self, mask: torch.Tensor):
        self.probs = mask

    def hard_gate(self) -> torch.Tensor:
        return self.probs


class MaskLogits(nn.Module):
    """θ [D]: the learned mask's logits; ``gate_logits(h)`` repeats them for every row of h."""

    def __init__(self, in_dim: int, out_dim: int, gate_cfg):
        super().__init__()
        self.mask_logits = nn.Parameter(INIT_SCALE * torch.randn(out_dim))
        self.gate_cfg = gate_cfg

    def gate_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[rows, D]: θ for every row (not a function of the image)."""
        return self.mask_logits.expand(h.shape[0], -1)

    def posterior(self, gate_logits: torch.Tensor) -> PointMask:
        """The mask 1[σ(θ / T) > threshold] as a point mass, [rows, D]."""
        g = self.gate_cfg
        probs = torch.sigmoid(at_least_float32(gate_logits) / g.temperature)
        return PointMask((probs > g.threshold).to(probs.dtype))

    def forward(self, z, gate_logits, contrastive) -> None:
        return None
