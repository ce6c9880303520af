"""The projection head g: h -> z before the non-negativity map (SPEC: 512 -> 2048 -> 256)."""
from torch import nn


def projector(in_dim: int, hidden: int, out_dim: int, batchnorm: bool = True) -> nn.Sequential:
    """Linear-BN-ReLU-Linear as in SimCLR/solo-learn, or Linear-ReLU-Linear (``batchnorm=False``),
    the head of the authors' BayesNCL code."""
    middle = [nn.BatchNorm1d(hidden)] if batchnorm else []
    return nn.Sequential(nn.Linear(in_dim, hidden), *middle, nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
