"""The gate-posterior draws the browser shows, read from a run's ArviZ export (``gates.nc``).

Only the accessors here know where ``bayesncl-inspect`` keeps each variable: a variable is looked
up by name in whichever group holds it, so a renamed group does not reach the rest of the browser.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

OPEN_RATE = "open_rate"
CLASS_OPEN_RATE = "class_open_rate"
GLOBAL_RATE = "pi"
GATE_PROB = "gate_prob"


@dataclass
class PosteriorDraws:
    """Independent draws from the variational gate posterior.

    open_rate: [chains, draws, D] test-set open rate per dimension; class_open_rate:
    [chains, draws, C, D] the same within each class; pi: [chains, draws, D] draws of a global
    per-dimension rate (``beta_bernoulli``) or None; step: the training step they were drawn at
    (None when unknown); num_images: how many test images they average over (None when unknown).
    """

    open_rate: np.ndarray
    class_open_rate: np.ndarray
    pi: np.ndarray | None = None
    step: int | None = None
    num_images: int | None = None

    def fits(self, step: int, num_dims: int, num_classes: int, num_images: int) -> bool:
        """Whether these draws belong to a run at ``step`` with this many dims, classes and images."""
        return (self.open_rate.shape[-1] == num_dims and self.class_open_rate.shape[-2:] == (num_classes, num_dims)
                and self.step in (None, step) and self.num_images in (None, num_images))


def variable(idata: Any, name: str) -> Any | None:
    """The xarray variable ``name`` from the first group of ``idata`` that holds it, or None."""
    for group in idata.groups():
        dataset = getattr(idata, group)
        if name in dataset.data_vars:
            return dataset[name]
    return None


def attribute(idata: Any, name: str) -> Any | None:
    """The attribute ``name`` of the first group of ``idata`` that has it, or None."""
    for group in idata.groups():
        attrs = getattr(idata, group).attrs
        if name in attrs:
            return attrs[name]
    return None


def read_draws(idata: Any) -> PosteriorDraws | None:
    """The draws in ``idata`` (None when it holds no ``open_rate``), dims ordered as documented."""
    open_rate = variable(idata, OPEN_RATE)
    class_open_rate = variable(idata, CLASS_OPEN_RATE)
    if open_rate is None or class_open_rate is None:
        return None
    pi = variable(idata, GLOBAL_RATE)
    gate_prob = variable(idata, GATE_PROB)
    step = attribute(idata, "step")
    return PosteriorDraws(
        open_rate=open_rate.transpose("chain", "draw", "dim").values,
        class_open_rate=class_open_rate.transpose("chain", "draw", "class", "dim").values,
        pi=None if pi is None else pi.transpose("chain", "draw", "dim").values,
        step=None if step is None else int(step),
        num_images=None if gate_prob is None else int(gate_prob.shape[0]),
    )
