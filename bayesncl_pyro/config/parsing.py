"""Building a :class:`~.schema.Config` from YAML files and ``key=value`` overrides.

Every value is converted to its declared type and then validated before any work starts; a bad
key or value raises :class:`ConfigError` naming the dotted key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml

from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.config.schema import Config
from bayesncl_pyro.config.validation import validate


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


def check_override_key(key: str) -> None:
    """Raise ConfigError unless ``key`` names a field (not a section) of the config."""
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
        check_override_key(key)
        _set_dotted(tree, key, value)
    return config_from_dict(tree)


def config_from_dict(tree: dict[str, Any]) -> Config:
    """A validated Config from a nested mapping (e.g. a run's ``config.yaml``)."""
    cfg = _build(Config, tree)
    validate(cfg)
    return cfg


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"gate": {"prior": "bernoulli"}}`` -> ``{"gate.prior": "bernoulli"}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


