"""bayesncl_pyro: Bayesian gated non-negative contrastive learning as a Pyro program.

    from bayesncl_pyro import Config, BayesNCL, load_config
    cfg = load_config("configs/scenes_quick.yaml", overrides=["gate.prior=bernoulli"])
    net = BayesNCL(cfg)
    loss = net.loss(x1, x2)     # negative ELBO of one batch of two views
"""
from .config import Config, load_config
from .errors import BayesNCLError, CheckpointError, ConfigError, DataError
from .network import BayesNCL

__version__ = "0.1.0"

__all__ = ["BayesNCL", "BayesNCLError", "CheckpointError", "Config", "ConfigError", "DataError", "load_config"]
