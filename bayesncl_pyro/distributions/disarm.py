"""The ``disarm`` gate estimator: exact Bernoulli gates drawn in antithetic pairs, with the DisARM
gradient of Dong, Mnih and Tucker (2020).

Why: the unbiased ``score`` estimator optimises the stated ELBO best but its leave-one-out
score-function gradient is noisy; DisARM is unbiased too and, from the two evaluations of one
antithetic pair, has lower variance than REINFORCE with a baseline over the same number of
evaluations — the candidate that gives the honest ELBO its best chance to be optimised well.
The draws and the gradient live in :class:`bayesncl_pyro.inference.disarm.DisarmELBO`, which
:func:`bayesncl_pyro.inference.elbo.make_elbo` chooses for an estimator with ``antithetic = True``.
"""
from __future__ import annotations

import torch

from bayesncl_pyro.config.choices import ESTIMATORS
from bayesncl_pyro.distributions.gates import ScoreBernoulli


@ESTIMATORS.register("disarm")
class DisarmBernoulli(ScoreBernoulli):
    """Exact draws m ~ Bern(α) (no reparameterisation); trained by the antithetic DisARM ELBO."""

    antithetic = True

    def antithetic_pair(self, sample_shape=torch.Size()) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, b̃) = (1[u < α], 1[1 − u < α]) from one u ~ U(0, 1): each is an exact Bern(α) draw."""
        probs = self.probs.detach().expand(self._extended_shape(sample_shape))
        u = torch.rand_like(probs)
        return (u < probs).to(probs.dtype), (1 - u < probs).to(probs.dtype)


__all__ = ["DisarmBernoulli"]
