"""Configuration: the typed schema, reading YAML and ``key=value`` overrides, validation, the
registries of named choices, device and precision, and the errors a user can act on.

The bottom of the import graph: modules here import nothing else of ``bayesncl_pyro``. The
registries name the modules that fill them as strings and import them on first look-up.
"""
from bayesncl_pyro.config.errors import BayesNCLError, CheckpointError, ConfigError, DataError, StorageError
from bayesncl_pyro.config.parsing import (
    check_override_key,
    config_from_dict,
    flatten,
    load_config,
    parse_override,
    read_yaml_mapping,
)
from bayesncl_pyro.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    GateConfig,
    ModelConfig,
    OptimConfig,
    ScenesConfig,
    TrainConfig,
)
from bayesncl_pyro.config.validation import validate

__all__ = [
    "AugmentConfig", "BayesNCLError", "CheckpointError", "Config", "ConfigError", "DataConfig", "DataError",
    "GateConfig", "ModelConfig", "OptimConfig", "ScenesConfig", "StorageError", "TrainConfig", "check_override_key",
    "config_from_dict", "flatten", "load_config", "parse_override", "read_yaml_mapping", "validate",
]
