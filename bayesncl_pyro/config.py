"""Typed run configuration: nested dataclasses, loaded from YAML and ``key=value`` overrides.

Every value is checked before any work starts; a bad key or value raises :class:`ConfigError`
naming the dotted key and what is allowed. The config key, the variable name in code and the
log key are the same name for the same quantity.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .data.augment import AugmentConfig
from .device import DEVICE_PATTERN
from .errors import ConfigError


@dataclass
class ScenesConfig:
    """The generated ``scenes`` dataset (SPEC §8)."""

    num_train: int = 20000
    num_test: int = 5000
    num_classes: int = 10
    shared_p: float = 0.7
    color_tied: bool = False
    seed: int = 0


@dataclass
class DataConfig:
    name: str = "scenes"
    root: str = "data"
    batch_size: int = 256
    eval_batch_size: int = 512
    image_size: int = 32
    train_subset: int = 0
    download: bool = False
    skip_corrupt: bool = False
    cache_dir: str = ""
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    backbone: str = "convnet"
    convnet_width: int = 64
    proj_hidden: int = 2048
    proj_dim: int = 256
    nonneg: str = "relu"
    temperature: float = 0.2


@dataclass
class GateConfig:
    prior: str = "bernoulli"
    prior_prob: float = 0.8
    kl_weight: float = 3e-5
    threshold: float = 0.5
    temperature: float = 1.0
    estimator: str = "ste"
    relax_temperature: float = 1.0
    particles: int = 4
    beta_a: float = 4.0
    beta_b: float = 1.0
    hard_concrete_mode: str = "l0"
    hard_concrete_temperature: float = 2 / 3
    hidden: int = 512
    layers: int = 2


@dataclass
class OptimConfig:
    name: str = "lars"
    lr: float = 0.4
    scale_lr: bool = True
    gate_lr: float = 0.1
    classifier_lr: float = 0.1
    weight_decay: float = 1e-4
    momentum: float = 0.9
    eta: float = 0.02
    clip_lr: bool = True
    exclude_bias_n_norm: bool = True
    scheduler: str = "warmup_cosine"
    warmup_epochs: float = 10.0
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 200
    steps: int = 0
    seed: int = 0
    device: str = "auto"
    out_dir: str = "runs/default"
    precision: str = "32"
    log_every: int = 10
    eval_every: int = 0
    keep: int = 1
    checkpoint_every: int = 0
    max_bad_steps: int = 3
    distributed: bool = False
    sync_bn: bool = False
    compile: bool = False
    channels_last: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        validate(self)
        return self


# ----------------------------------------------------------------------------- building

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Convert a YAML/override value to the declared type, or say what was expected."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {kind.__name__} fields; got {value!r}")
        return _build(kind, value, key + ".")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: true or false")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: an integer")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: a number")
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: a string")
    raise TypeError(f"unsupported config field type {kind!r} for {key}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    types = _field_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + str(unknown[0])!r}; allowed under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(types)}"
        )
    kwargs = {name: _coerce(prefix + name, values[name], types[name]) for name in values}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.4"`` -> ``("optim.lr", 0.4)``; the value is read as YAML (numbers, booleans)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=0.4)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is None:
        value = raw
    return key, value


def _check_override_key(key: str) -> None:
    cls: Any = Config
    path = []
    for part in key.split("."):
        types = _field_types(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in types:
            where = ".".join(path) or "the top level"
            raise ConfigError(f"unknown config key {key!r}; allowed under {where}: {', '.join(types)}")
        path.append(part)
        cls = types[part]
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"config key {key!r} is a section; set one of its fields, e.g. {key}.{next(iter(_field_types(cls)))}=...")


def read_yaml_mapping(path: str | Path, what: str, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is an empty mapping), or ``error`` naming the
    file: missing, not YAML, or not a mapping. ``what`` says what the file is ("config file")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML ({' '.join(str(exc).split())})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise error(f"{what} {path} must hold a mapping; got {type(tree).__name__}")
    return tree


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate."""
    tree: dict[str, Any] = {} if path is None else read_yaml_mapping(path, "config file")
    for text in overrides:
        key, value = parse_override(text)
        _check_override_key(key)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def config_from_dict(tree: dict[str, Any]) -> Config:
    return _build(Config, tree).validate()


# ----------------------------------------------------------------------------- validation

def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {allowed}")


def _finite(value: float) -> bool:
    return math.isfinite(value)


def validate(cfg: Config) -> None:
    """Range checks for every key (choices are checked against their registries)."""
    from . import registries  # the registries are filled by importing their modules

    d, m, g, o, t = cfg.data, cfg.model, cfg.gate, cfg.optim, cfg.train
    _require(d.name in registries.DATASETS, "data.name", d.name, ", ".join(registries.DATASETS.names()))
    _require(d.batch_size >= 2, "data.batch_size", d.batch_size, "an integer >= 2")
    _require(d.eval_batch_size >= 1, "data.eval_batch_size", d.eval_batch_size, "an integer >= 1")
    _require(d.image_size >= 8, "data.image_size", d.image_size, "an integer >= 8")
    _require(d.name != "scenes" or d.image_size >= 16, "data.image_size", d.image_size,
             "an integer >= 16 for data.name=scenes")
    _require(d.train_subset >= 0, "data.train_subset", d.train_subset, "an integer >= 0 (0 = the whole split)")
    s = d.scenes
    _require(s.num_train >= 2, "data.scenes.num_train", s.num_train, "an integer >= 2")
    _require(s.num_test >= 1, "data.scenes.num_test", s.num_test, "an integer >= 1")
    _require(2 <= s.num_classes <= 10, "data.scenes.num_classes", s.num_classes, "2 to 10")
    _require(0.0 <= s.shared_p <= 1.0, "data.scenes.shared_p", s.shared_p, "[0, 1]")
    d.augment.validate("data.augment")

    _require(m.backbone in registries.BACKBONES, "model.backbone", m.backbone, ", ".join(registries.BACKBONES.names()))
    _require(m.convnet_width >= 1, "model.convnet_width", m.convnet_width, "an integer >= 1")
    _require(m.proj_hidden >= 1, "model.proj_hidden", m.proj_hidden, "an integer >= 1")
    _require(m.proj_dim >= 2, "model.proj_dim", m.proj_dim, "an integer >= 2")
    _require(m.nonneg in registries.NONNEG, "model.nonneg", m.nonneg, ", ".join(registries.NONNEG.names()))
    _require(_finite(m.temperature) and m.temperature > 0, "model.temperature", m.temperature, "a number > 0")

    _require(g.prior in registries.PRIORS, "gate.prior", g.prior, ", ".join(registries.PRIORS.names()))
    _require(0.0 < g.prior_prob < 1.0, "gate.prior_prob", g.prior_prob, "the open interval (0, 1)")
    _require(_finite(g.kl_weight) and g.kl_weight >= 0, "gate.kl_weight", g.kl_weight, "a number >= 0")
    _require(0.0 < g.threshold < 1.0, "gate.threshold", g.threshold, "the open interval (0, 1)")
    _require(_finite(g.temperature) and g.temperature > 0, "gate.temperature", g.temperature, "a number > 0")
    _require(g.estimator in registries.ESTIMATORS, "gate.estimator", g.estimator, ", ".join(registries.ESTIMATORS.names()))
    _require(_finite(g.relax_temperature) and g.relax_temperature > 0, "gate.relax_temperature", g.relax_temperature, "a number > 0")
    from models import uses_gate_estimator  # hard_concrete and none have no Bernoulli gates to estimate

    bernoulli_priors = ", ".join(p for p in registries.PRIORS.names() if uses_gate_estimator(p))
    _require(g.estimator == GateConfig.estimator or uses_gate_estimator(g.prior), "gate.estimator", g.estimator,
             f"{GateConfig.estimator} with gate.prior={g.prior}, which does not use gate.estimator "
             f"(the estimators apply to gate.prior={bernoulli_priors})")
    _require(g.particles >= 1, "gate.particles", g.particles, "an integer >= 1")
    _require(_finite(g.beta_a) and g.beta_a > 0, "gate.beta_a", g.beta_a, "a number > 0")
    _require(_finite(g.beta_b) and g.beta_b > 0, "gate.beta_b", g.beta_b, "a number > 0")
    _require(g.hard_concrete_mode in ("l0", "mc"), "gate.hard_concrete_mode", g.hard_concrete_mode, "l0, mc")
    _require(_finite(g.hard_concrete_temperature) and g.hard_concrete_temperature > 0,
             "gate.hard_concrete_temperature", g.hard_concrete_temperature, "a number > 0")
    _require(g.hidden >= 1, "gate.hidden", g.hidden, "an integer >= 1")
    _require(1 <= g.layers <= 3, "gate.layers", g.layers, "1, 2 or 3")

    _require(o.name in registries.OPTIMIZERS, "optim.name", o.name, ", ".join(registries.OPTIMIZERS.names()))
    for key in ("lr", "gate_lr", "classifier_lr"):
        value = getattr(o, key)
        _require(_finite(value) and value > 0, f"optim.{key}", value, "a number > 0")
    _require(_finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "a number >= 0")
    _require(0 <= o.momentum < 1, "optim.momentum", o.momentum, "[0, 1)")
    _require(_finite(o.eta) and o.eta > 0, "optim.eta", o.eta, "a number > 0")
    _require(o.scheduler in ("warmup_cosine", "constant"), "optim.scheduler", o.scheduler, "warmup_cosine, constant")
    _require(_finite(o.warmup_epochs) and o.warmup_epochs >= 0, "optim.warmup_epochs", o.warmup_epochs, "a number >= 0")
    _require(_finite(o.min_lr) and o.min_lr >= 0, "optim.min_lr", o.min_lr, "a number >= 0")

    _require(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
    _require(t.steps >= 0, "train.steps", t.steps, "an integer >= 0 (0 = no cap)")
    _require(t.seed >= 0, "train.seed", t.seed, "an integer >= 0")
    _require(re.fullmatch(DEVICE_PATTERN, t.device) is not None, "train.device", t.device, "auto, cpu, cuda, cuda:N")
    _require(bool(t.out_dir), "train.out_dir", t.out_dir, "a directory path")
    _require(t.precision in ("32", "bf16", "16"), "train.precision", t.precision, "32, bf16, 16")
    _require(t.log_every >= 1, "train.log_every", t.log_every, "an integer >= 1")
    _require(t.eval_every >= 0, "train.eval_every", t.eval_every, "an integer >= 0 (0 = only at the end)")
    _require(t.keep >= 1, "train.keep", t.keep, "an integer >= 1")
    _require(t.checkpoint_every >= 0, "train.checkpoint_every", t.checkpoint_every, "an integer >= 0 (0 = each epoch)")
    _require(t.max_bad_steps >= 1, "train.max_bad_steps", t.max_bad_steps, "an integer >= 1")
