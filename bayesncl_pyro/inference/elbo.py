"""Which ELBO trains a run.

The default is ``TraceMeanField_ELBO``: analytic KLs where registered, pathwise gradients through
the guide's ``rsample`` (``ste``, ``concrete``, ``soft``, hard concrete, Beta). A gate estimator
without a reparameterised sample (``has_rsample = False``: ``score``) is trained by the
leave-one-out score-function ELBO of :mod:`.leave_one_out`, or, for an estimator drawn in antithetic
pairs (``antithetic = True``: ``disarm``), the DisARM ELBO of :mod:`.disarm`.
"""
from __future__ import annotations

from typing import Any

from pyro.infer import TraceMeanField_ELBO

from bayesncl_pyro.inference.disarm import DisarmELBO
from bayesncl_pyro.inference.leave_one_out import LeaveOneOutELBO

MAX_PLATE_NESTING = 1


def mean_field_elbo() -> TraceMeanField_ELBO:
    """Analytic KL where registered, pathwise gradients; one plate level (the gate rows)."""
    return TraceMeanField_ELBO(max_plate_nesting=MAX_PLATE_NESTING)


def make_elbo(guide, gate_cfg) -> Any:
    """The ELBO for the guide's gate estimator: the score-function ELBO with ``gate.particles``
    draws for an estimator without ``rsample``, else :func:`mean_field_elbo` (also for guides
    without an estimator: no gates, hard concrete)."""
    estimator = getattr(guide, "estimator", None)
    if estimator is not None and getattr(estimator, "antithetic", False):
        return DisarmELBO()
    if estimator is not None and not estimator.has_rsample:
        return LeaveOneOutELBO(particles=gate_cfg.particles)
    return mean_field_elbo()
