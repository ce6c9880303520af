"""A prior family: the Pyro model with its gate sites and the guide that matches its sites."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class PriorFamily:
    """``model(gate_cfg)`` builds the Pyro model ``(z, gate_logits, contrastive) -> None``;
    ``guide(in_dim, out_dim, gate_cfg)`` builds the guide module with the same call signature,
    which also owns the amortized gate network (``guide.gate_logits(h)``)."""

    model: Callable[[Any], Callable]
    guide: Callable[[int, int, Any], Any]
