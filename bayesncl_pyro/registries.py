"""The tables of named choices. Each is filled by the modules that implement its entries."""
from .registry import Registry

NONNEG = Registry("model.nonneg", plugins=["bayesncl_pyro.nonneg"])
BACKBONES = Registry("model.backbone", plugins=["bayesncl_pyro.backbones"])
DATASETS = Registry("data.name", plugins=["bayesncl_pyro.data.sources"])
ESTIMATORS = Registry("gate.estimator", plugins=["bayesncl_pyro.distributions.gates"])
PRIORS = Registry("gate.prior", plugins=["models"])
OPTIMIZERS = Registry("optim.name", plugins=["bayesncl_pyro.optim"])
