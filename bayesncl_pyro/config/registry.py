"""Name -> implementation tables, so that choices are data and the training loop names none of them."""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from bayesncl_pyro.config.errors import ConfigError, shown

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named choices (non-negativity maps, backbones, priors, datasets, ...).

    ``kind`` is the config key that selects from the table; it appears in error messages.
    ``plugins`` are modules whose import fills the table (e.g. the ``models`` package for
    priors); they are imported on first look-up, so the library core never imports them eagerly.
    """

    def __init__(self, kind: str, plugins: Iterable[str] = ()):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._plugins = tuple(plugins)
        self._loaded = not self._plugins

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._plugins:
                importlib.import_module(module)

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """Register ``entry`` under ``name``; without ``entry`` this is a decorator."""
        if entry is not None:
            return self._add(name, entry)
        return lambda obj: self._add(name, obj)

    def _add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise KeyError(f"{self.kind}: {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"{self.kind}={shown(name)} is not known; allowed: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
