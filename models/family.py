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

    @property
    def uses_gate_estimator(self) -> bool:
        """Whether ``gate.estimator`` applies: the guide draws Bernoulli gates through an
        estimator (its class says so with ``uses_gate_estimator = True``). Hard-concrete gates are
        pathwise by construction and ungated models have no gates."""
        return bool(getattr(self.guide, "uses_gate_estimator", False))

    @property
    def has_prior(self) -> bool:
        """Whether the model draws its gates from a prior (a latent ``gate`` site), so that prior
        draws exist to compare the posterior with; a model class without one says so with
        ``has_prior = False`` (the plain learned mask of the ablations)."""
        return bool(getattr(self.model, "has_prior", True))
