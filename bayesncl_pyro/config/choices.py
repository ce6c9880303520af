"""The tables of named choices, one per config key that selects an implementation.

Each table is filled by the modules that implement its entries (named here as strings and
imported on first look-up), so this module imports none of them and the config layer stays at
the bottom of the import graph. Plugin packages fill the same tables through the entry-point group
``bayesncl_pyro.plugins`` (:data:`.registry.PLUGIN_GROUP`).
"""
from bayesncl_pyro.config.registry import Registry

NONNEG = Registry("model.nonneg", plugins=["bayesncl_pyro.networks.nonneg"])
BACKBONES = Registry("model.backbone", plugins=["bayesncl_pyro.networks.backbones",
                                                 "bayesncl_pyro.networks.torchvision_backbones"])
DATASETS = Registry("data.name", plugins=["bayesncl_pyro.data.sources"])
ESTIMATORS = Registry("gate.estimator", plugins=["bayesncl_pyro.distributions.gates", "bayesncl_pyro.distributions.disarm"])
PRIORS = Registry("gate.prior", plugins=["bayesncl_pyro.models"])
HARD_CONCRETE_MODES = Registry("gate.hard_concrete_mode", plugins=["bayesncl_pyro.guides.hard_concrete_gates"])
OPTIMIZERS = Registry("optim.name", plugins=["bayesncl_pyro.training.optimizers"])
SCHEDULERS = Registry("optim.scheduler", plugins=["bayesncl_pyro.training.schedules"])
