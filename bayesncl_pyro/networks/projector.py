"""The projection head g: h -> z before the non-negativity map (SPEC: 512 -> 2048 -> 256)."""
from torch import nn


def projector(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear, as in SimCLR/solo-learn."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )
