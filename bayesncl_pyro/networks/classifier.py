"""The online linear classifier on h.detach() (the authors' training-time probe)."""
from __future__ import annotations

import torch
from torch import nn


def online_classifier(in_dim: int, num_classes: int, seed: int) -> nn.Linear:
    """A linear layer [in_dim] -> [num_classes] initialised from ``seed`` alone, so that runs of
    different methods with one seed start it alike (the global random state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_dim, num_classes)
