"""bayesncl_pyro: Bayesian gated non-negative contrastive learning as a Pyro program.

    from bayesncl_pyro import Config, BayesNCL, load_config
    cfg = load_config("configs/scenes_quick.yaml", overrides=["gate.prior=bernoulli"])
    net = BayesNCL(cfg)
    loss = net.loss(x1, x2)     # negative ELBO of one batch of two views

Subpackages by role, imports pointing one way (each ``__init__`` says what it may import):
``config`` (schema, parsing, validation, registries, errors) at the bottom; ``networks``,
``distributions``, ``data`` and ``storage`` on it; ``inference`` (the network, likelihood and
ELBOs) and the prior families ``models`` and ``guides``; ``evaluation``; ``training``;
``experiments``; ``cli`` at the top. The names below are imported on first use, so a console
command's ``--help`` does not wait for torch and Pyro.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "bayesncl_pyro.config.schema",
    "load_config": "bayesncl_pyro.config.parsing",
    "BayesNCLError": "bayesncl_pyro.config.errors",
    "CheckpointError": "bayesncl_pyro.config.errors",
    "ConfigError": "bayesncl_pyro.config.errors",
    "DataError": "bayesncl_pyro.config.errors",
    "StorageError": "bayesncl_pyro.config.errors",
    "BayesNCL": "bayesncl_pyro.inference.bayesncl",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bayesncl_pyro' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
