"""Inference: the BayesNCL network (encoder, projector and the Pyro model/guide pair of the
gates), the contrastive likelihood and where its negatives come from, the gate plate that
carries λ, the ELBOs that train it and the Monte-Carlo true ELBO that checks it.

May import ``config``, ``networks`` and ``distributions``; the prior families (``models``,
``guides``) are reached through the ``PRIORS`` registry, never imported here.
"""
