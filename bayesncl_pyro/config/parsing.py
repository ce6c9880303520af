"""Building a :class:`~.schema.Config` from YAML files and ``key=value`` overrides.

Every value is converted to its declared type and then validated before any work starts; a bad
key or value raises :class:`ConfigError` naming the dotted key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml

from bayesncl_pyro.config.errors import ConfigError, clip, shown
from bayesncl_pyro.config.schema import Config
from bayesncl_pyro.config.validation import validate

PATH_KEYS = (("data", "root"), ("data", "cache_dir"), ("train", "out_dir"))
"""The config keys that hold a file system path."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Convert a YAML/override value to the declared type, or say what was expected."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {kind.__name__} fields; got {shown(value)}")
        return _build(kind, value, key + ".")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}={shown(value)} is not allowed; allowed: true or false")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={shown(value)} is not allowed; allowed: an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={shown(value)} is not allowed; allowed: an integer")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={shown(value)} is not allowed; allowed: a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}={shown(value)} is not allowed; allowed: a number")
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={shown(value)} is not allowed; allowed: a string")
    raise TypeError(f"unsupported config field type {kind!r} for {key}")


def _every_key(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of ``cls``, sections (``data.scenes``) and their fields alike."""
    keys = []
    for name, kind in _field_types(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(kind):
            keys += _every_key(kind, f"{prefix}{name}.")
    return keys


def closest_keys(key: str) -> list[str]:
    """Up to three config keys nearest to a mistyped ``key``: by the whole dotted key
    (``gate.prior_prb`` -> ``gate.prior_prob``), else by its last name (``epochs`` -> ``train.epochs``)."""
    keys = _every_key()
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
    if close:
        return close
    by_name: dict[str, list[str]] = {}
    for full in keys:
        by_name.setdefault(full.rpartition(".")[2], []).append(full)
    names = difflib.get_close_matches(key.rpartition(".")[2], list(by_name), n=3, cutoff=0.8)
    return [full for name in names for full in by_name[name]][:3]


def unknown_key(key: str, section: str, allowed: Iterable[str]) -> str:
    """The message for a key the config does not have: the closest keys first (the list of what
    is allowed may be cut), then the keys of ``section``."""
    close = closest_keys(key)
    hint = f" (closest: {', '.join(close)})" if close else ""
    return f"unknown config key {shown(key)}{hint}; allowed under {section or 'the top level'}: {', '.join(allowed)}"


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    types = _field_types(cls)
    unknown = sorted(set(values) - set(types), key=str)
    if unknown:
        raise ConfigError(unknown_key(prefix + str(unknown[0]), prefix.rstrip("."), types))
    kwargs = {name: _coerce(prefix + name, values[name], types[name]) for name in values}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {shown(dotted)}: {shown(part)} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.4"`` -> ``("optim.lr", 0.4)``; the value is read as YAML (numbers, booleans),
    except where YAML would drop part of it: ``train.out_dir=runs/a #b`` is the string
    ``runs/a #b``, not ``runs/a`` and a comment (a command line has no comments)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {shown(text)} is not of the form key=value (e.g. optim.lr=0.4)")
    try:
        value = yaml.load(raw, Loader=UniqueKeyLoader) if _reads_whole(raw) else raw
    except (DuplicateKey, TooLarge) as exc:
        raise ConfigError(f"override {shown(text)}: {exc}") from None
    except yaml.YAMLError:
        value = raw
    if value is None:
        value = raw
    return key, value


def _reads_whole(raw: str) -> bool:
    """Whether YAML reads all of ``raw`` into its value: not so for an empty value, or where a
    comment (`` #...``) or a second document would be left out."""
    try:
        node = yaml.compose(raw, Loader=UniqueKeyLoader)
    except yaml.YAMLError:
        return True  # parse_override says why, or keeps the text
    return node is not None and node.end_mark.index >= len(raw.rstrip())


def check_override_key(key: str) -> None:
    """Raise ConfigError unless ``key`` names a field (not a section) of the config."""
    cls: Any = Config
    path = []
    for part in key.split("."):
        types = _field_types(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in types:
            raise ConfigError(unknown_key(key, ".".join(path), types))
        path.append(part)
        cls = types[part]
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"config key {shown(key)} is a section; set one of its fields, e.g. {key}.{next(iter(_field_types(cls)))}=...")


class DuplicateKey(yaml.YAMLError):
    """A mapping of a YAML document names one key twice."""


class TooLarge(yaml.YAMLError):
    """A YAML document nested deeper, or larger once its aliases are expanded, than any config."""


MAX_YAML_DEPTH = 32
"""The deepest nesting of collections a YAML config, run config or grid file may have (a config
is three levels deep)."""
MAX_YAML_NODES = 100_000
"""The most values a YAML document may hold once every alias (``*name``) is expanded: a few
kilobytes of nested aliases ("billion laughs") would otherwise expand to gigabytes wherever the
value is copied, compared or printed."""


def _expanded_size(root: yaml.Node) -> int:
    """The number of nodes of ``root`` with every alias expanded, counted without expanding them
    (each distinct node once, times the number of paths to it); stops counting past the bound.
    A node that contains itself counts as unbounded."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = ([child for pair in node.value for child in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            on_path.discard(key)
            sizes[key] = min(MAX_YAML_NODES + 1, 1 + sum(sizes[id(child)] for child in children))
            continue
        if key in sizes:
            continue
        if key in on_path:
            return MAX_YAML_NODES + 1
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                return MAX_YAML_NODES + 1
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key repeated in one mapping at any depth: plain YAML
    keeps the last value, so a section written twice would silently replace the first. Keys
    brought in by a ``<<`` merge may be overridden, as YAML intends. A document nested deeper
    than :data:`MAX_YAML_DEPTH` or larger than :data:`MAX_YAML_NODES` values once its aliases
    are expanded is refused (:class:`TooLarge`) before anything is built from it."""

    _depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_YAML_DEPTH:
            raise TooLarge(f"it is nested more than {MAX_YAML_DEPTH} levels deep (line "
                           f"{self.peek_event().start_mark.line + 1}); allowed: at most {MAX_YAML_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node):
        if _expanded_size(node) > MAX_YAML_NODES:
            raise TooLarge(f"it holds more than {MAX_YAML_NODES} values once its aliases (*name) are expanded; "
                           f"allowed: at most {MAX_YAML_NODES}")
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = lines.get(key)
                except TypeError:  # an unhashable key: the constructor below says so
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise DuplicateKey(f"key {shown(key)} appears twice (lines {first} and {line}); "
                                       "a repeated key would silently replace the first")
                lines[key] = line
        return super().construct_mapping(node, deep)


def read_yaml_mapping(path: str | Path, what: str, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is an empty mapping), or ``error`` naming the
    file: missing, not a file, not UTF-8, not YAML, a key written twice, or not a mapping.
    ``what`` says what the file is ("config file")."""
    path = Path(path).expanduser()
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    if not path.is_file():
        raise error(f"{what} {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                    "save it as UTF-8") from None
    try:
        tree = yaml.load(text, Loader=UniqueKeyLoader)
    except (DuplicateKey, TooLarge) as exc:
        raise error(f"{what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML ({clip(exc, 300)})") from None
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
    """A validated Config from a nested mapping (e.g. a run's ``config.yaml``); ``~`` in a path
    key is expanded to the home directory."""
    cfg = _build(Config, tree)
    for section, name in PATH_KEYS:
        part = getattr(cfg, section)
        setattr(part, name, os.path.expanduser(getattr(part, name)))
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


