"""Training: the session built from a config, one optimisation step, the loop with its logging,
checkpoints and signal handling, optimizers and schedules, mini-batches, and data-parallel
training under torchrun.

May import ``config``, ``data``, ``networks``, ``inference``, ``storage`` and the pure pieces of
``evaluation`` (feature extraction and metrics, for the end-of-run summary).
"""
