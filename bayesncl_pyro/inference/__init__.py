"""Inference: the BayesNCL network (encoder, projector and the Pyro model/guide pair of the
gates), the contrastive likelihood and where its negatives come from, the gate plate that
carries λ, the ELBOs that train it and the Monte-Carlo true ELBO that checks it.

May import ``config``, ``networks`` and ``distributions``; the prior families (``models``,
``guides``) are reached through the ``PRIORS`` registry, never imported here. A trained network
loads itself from its run directory (``BayesNCL.from_run``), so this layer may also import
``storage`` (the run's config and checkpoint) and ``data`` (the evaluation transform that
``BayesNCL.preprocess`` applies to raw images); neither of them imports anything above ``storage``,
so the graph stays one-way.
"""
