"""Non-negativity maps applied to the projector output (SPEC §2); ``none`` gives plain SimCLR."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bayesncl_pyro.config.choices import NONNEG


def rep_relu(z: torch.Tensor) -> torch.Tensor:
    """ReLU in the forward pass, GELU's gradient in the backward pass (no dead units)."""
    soft = F.gelu(z)
    return soft - soft.detach() + F.relu(z).detach()


NONNEG.register("relu", F.relu)
NONNEG.register("rep_relu", rep_relu)
NONNEG.register("gelu", F.gelu)
NONNEG.register("softplus", F.softplus)
NONNEG.register("sigmoid", torch.sigmoid)
NONNEG.register("exp", torch.exp)
NONNEG.register("none", lambda z: z)
