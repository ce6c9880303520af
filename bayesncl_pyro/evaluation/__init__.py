"""Evaluation of trained runs: loading a run, test-time features, the SPEC §6 metrics, the linear
probe, the ground-truth factor check on ``scenes``, the ArviZ export of the gate posterior, plots
and the HTML report.

May import ``config``, ``data``, ``inference`` and ``storage``; never ``training`` (which uses the
metrics and feature extraction here for its end-of-run summary).
"""
