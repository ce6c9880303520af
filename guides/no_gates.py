"""The guide of the ungated model: nothing to infer."""
from __future__ import annotations

import torch
from torch import nn


class NoGates(nn.Module):
    def __init__(self, in_dim: int = 0, out_dim: int = 0, gate_cfg=None):
        super().__init__()

    def gate_logits(self, h: torch.Tensor) -> None:
        return None

    def posterior(self, gate_logits) -> None:
        return None

    def forward(self, z, gate_logits, contrastive) -> None:
        return None
