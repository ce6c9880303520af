"""Errors a user can act on: each names the bad key, value or file and what is allowed."""


class BayesNCLError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(BayesNCLError, ValueError):
    """A configuration key or value is not allowed."""


class DataError(BayesNCLError, ValueError):
    """A dataset, image file or batch of images is not usable."""


class CheckpointError(BayesNCLError):
    """A checkpoint or run directory does not match what was asked for."""


class NonFiniteStep(BayesNCLError, FloatingPointError):
    """A training step's loss or gradient is NaN or infinite; the optimizer did not move."""


class TrainingInterrupted(BayesNCLError):
    """SIGTERM or SIGINT arrived; the run saved a checkpoint at the last finished step."""
