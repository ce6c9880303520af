"""The tables of named choices, one per config key that selects an implementation.

Each table is filled by the modules that implement its entries (named here as strings and
imported on first look-up), so this module imports none of them and the config layer stays at
the bottom of the import graph. The names those modules register are declared here as well, so
that validating a config needs none of them (tests/test_registry.py keeps the two in step). Plugin packages fill the same tables through the entry-point group
``bayesncl_pyro.plugins`` (:data:`.registry.PLUGIN_GROUP`).
"""
from bayesncl_pyro.config.registry import Registry

NONNEG = Registry("model.nonneg", plugins=["bayesncl_pyro.networks.nonneg"],
                  names=["exp", "gelu", "none", "relu", "rep_relu", "sigmoid", "softplus"])
BACKBONES = Registry("model.backbone", plugins=["bayesncl_pyro.networks.backbones",
                                                 "bayesncl_pyro.networks.torchvision_backbones"],
                     names=["convnet", "resnet18", "resnet18_imagenet"], families=["torchvision"])
DATASETS = Registry("data.name", plugins=["bayesncl_pyro.data.sources"],
                    names=["cifar10", "cifar100", "fashion_mnist", "imagefolder", "scenes", "stl10"])
ESTIMATORS = Registry("gate.estimator", plugins=["bayesncl_pyro.distributions.gates", "bayesncl_pyro.distributions.disarm"],
                      names=["concrete", "disarm", "sampled_ste", "score", "soft", "ste"])
PRIORS = Registry("gate.prior", plugins=["bayesncl_pyro.models"],
                  names=["bernoulli", "beta_bernoulli", "frequency_bernoulli", "hard_concrete", "learned_mask",
                         "negatives_gated", "none"])
HARD_CONCRETE_MODES = Registry("gate.hard_concrete_mode", plugins=["bayesncl_pyro.guides.hard_concrete_gates"],
                               names=["l0", "mc"])
OPTIMIZERS = Registry("optim.name", plugins=["bayesncl_pyro.training.optimizers"], names=["adam", "lars", "sgd"])
SCHEDULERS = Registry("optim.scheduler", plugins=["bayesncl_pyro.training.schedules"],
                      names=["constant", "warmup_cosine"])
