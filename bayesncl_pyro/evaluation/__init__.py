"""Evaluation of trained runs: loading a run, test-time features, the SPEC §6 metrics, the linear
probe, the ground-truth factor check on ``scenes``, the ranking of dimensions, the ArviZ export of
the gate posterior and prior, plots, the HTML report and the headline of a run, with the words
and units they all use (:mod:`.glossary`).

May import ``config``, ``data``, ``inference`` and ``storage``; never ``training`` (which uses the
metrics and feature extraction here for its end-of-run summary).
"""
