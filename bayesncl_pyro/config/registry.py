"""Name -> implementation tables, so that choices are data and the training loop names none of them.

Entries come from three places and are registered the same way (``TABLE.register(name, entry)``):

- this package's own modules, named to each table as strings and imported on its first look-up
  that needs them (the names they register are declared beside them, so checking a config's
  choice needs no import while no plugin package is installed);
- plugin packages: a module (or a function) declared in the entry-point group
  :data:`PLUGIN_GROUP` of an installed distribution, imported (or called) at the first look-up of
  any table, so a run that uses a plugin's choice validates in every process and command;
- families of names made on look-up, such as ``torchvision:<name>`` for every classification
  model of torchvision (:meth:`Registry.register_family`).
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import types
import warnings
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from bayesncl_pyro.config.errors import ConfigError, shown

T = TypeVar("T")

PLUGIN_GROUP = "bayesncl_pyro.plugins"
"""The entry-point group of plugin packages, e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."bayesncl_pyro.plugins"]
    my_priors = "my_package.priors"        # a module that registers when imported
"""

_plugins_loaded = False


def load_plugins() -> None:
    """Import (or call) every entry point of :data:`PLUGIN_GROUP`, once per process, in name order.
    A plugin that fails is named in one warning and skipped: a broken plugin must not stop runs
    that do not use it (those that do are then refused by name, like any unknown choice)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in sorted(importlib.metadata.entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name):
        try:
            loaded = entry_point.load()
            if callable(loaded) and not isinstance(loaded, types.ModuleType):
                loaded()
        except Exception as exc:  # whatever a third-party module raises on import
            warnings.warn(f"plugin {entry_point.name!r} ({entry_point.value}, entry-point group {PLUGIN_GROUP}) "
                          f"failed to load and is skipped: {type(exc).__name__}: {exc}", stacklevel=2)


def plugin_hint() -> str:
    """For a message about an unknown name: it may belong to a plugin that is not installed;
    where plugins come from, and which are installed."""
    installed = sorted(ep.name for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP))
    return (f"if it comes from a plugin, that plugin may be missing: plugins register through the entry-point "
            f"group {PLUGIN_GROUP} (installed: {', '.join(installed) or 'none'})")


@dataclass(frozen=True)
class _Family(Generic[T]):
    make: Callable[[str], T]
    members: Callable[[], Iterable[str]]


class Registry(Generic[T]):
    """A table of named choices (non-negativity maps, backbones, priors, datasets, ...).

    ``kind`` is the config key that selects from the table; it appears in error messages.
    ``plugins`` are this package's modules whose import fills the table (e.g. the ``models``
    package for priors); they are imported on first look-up, so the library core never imports
    them eagerly. Plugin packages of :data:`PLUGIN_GROUP` are loaded at the same moment.
    ``names`` and ``families`` declare what ``plugins`` register (:attr:`declared`).
    """

    def __init__(self, kind: str, plugins: Iterable[str] = (), names: Iterable[str] = (),
                 families: Iterable[str] = ()):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._families: dict[str, _Family[T]] = {}
        self._plugins = tuple(plugins)
        self._declared = frozenset(names)
        self._declared_families = frozenset(families)
        self._loaded = False

    @property
    def declared(self) -> tuple[frozenset[str], frozenset[str]]:
        """The names and the family prefixes this package's modules (``plugins``) register, known
        without importing them: a look-up of a declared name, or of a mistyped one in a table
        without families when no plugin package is installed, is answered without loading torch
        (a config mistake is named in a fraction of a second)."""
        return self._declared, self._declared_families

    def _declared_suffice(self) -> bool:
        """Whether the declared names are the whole table: nothing loaded yet that could add to
        them, and no plugin package installed that would."""
        return (bool(self._declared) and not self._loaded and not self._declared_families and not self._families
                and self._entries.keys() <= self._declared
                and not importlib.metadata.entry_points(group=PLUGIN_GROUP))

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._plugins:
                importlib.import_module(module)
            load_plugins()

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """Register ``entry`` under ``name``; without ``entry`` this is a decorator."""
        if entry is not None:
            return self._add(name, entry)
        return lambda obj: self._add(name, obj)

    def _add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise KeyError(f"{self.kind}: {name!r} is registered twice")
        if name.partition(":")[0] in self._families:
            raise KeyError(f"{self.kind}: {name!r} falls in the family {name.partition(':')[0]}:<name>")
        self._entries[name] = entry
        return entry

    def register_family(self, prefix: str, make: Callable[[str], T], members: Callable[[], Iterable[str]]) -> None:
        """Entries ``prefix:<member>`` for every name ``members()`` lists, each made on look-up by
        ``make(member)`` (e.g. ``torchvision:resnet50``)."""
        if prefix in self._families or ":" in prefix:
            raise KeyError(f"{self.kind}: the family {prefix!r} is registered twice or has a ':' in its name")
        self._families[prefix] = _Family(make, members)

    def _family_member(self, name: str) -> tuple[_Family[T], str] | None:
        prefix, colon, member = name.partition(":")
        family = self._families.get(prefix) if colon else None
        if family is None or member not in set(family.members()):
            return None
        return family, member

    def get(self, name: str) -> T:
        self._load()
        if name in self._entries:
            return self._entries[name]
        found = self._family_member(name) if isinstance(name, str) else None
        if found is None:
            raise ConfigError(self.unknown(name))
        family, member = found
        return family.make(member)

    def unknown(self, name: object) -> str:
        """The message for a name this table does not hold: the closest names and the plugin hint
        first (a long list of allowed names may be cut), then what is allowed."""
        close = self.closest(name)
        hint = f" (closest: {', '.join(close)})" if close else ""
        return (f"{self.kind}={shown(name)} is not allowed{hint}: no such name is registered ({plugin_hint()}); "
                f"allowed: {self.allowed(name)}")

    def closest(self, name: object) -> list[str]:
        """Up to three registered names (family members included) nearest to a mistyped ``name``."""
        if not isinstance(name, str):
            return []
        if self._declared_suffice():
            return difflib.get_close_matches(name, sorted(self._declared), n=3, cutoff=0.75)
        self._load()
        every = sorted(self._entries) + [f"{p}:{m}" for p in sorted(self._families) for m in self._families[p].members()]
        return difflib.get_close_matches(name, every, n=3, cutoff=0.75)

    def names(self) -> list[str]:
        """The registered names, and each family as ``prefix:<name>``."""
        self._load()
        return sorted(self._entries) + [f"{prefix}:<name>" for prefix in sorted(self._families)]

    def allowed(self, name: object = None) -> str:
        """What the table accepts, for an error message about ``name``: every name, and each family
        (with all its members when ``name`` is in it)."""
        if self._declared_suffice():
            return ", ".join(sorted(self._declared))
        self._load()
        text = ", ".join(sorted(self._entries))
        for prefix in sorted(self._families):
            members = list(self._families[prefix].members())
            if isinstance(name, str) and name.startswith(f"{prefix}:"):
                text += f"; {prefix}:<name> with <name> one of {', '.join(members)}"
            else:
                text += f"; {prefix}:<name> for any of {len(members)} names, e.g. {prefix}:{members[0]}"
        return text

    def __contains__(self, name: object) -> bool:
        if name in self._entries or (not self._loaded and name in self._declared):
            return True
        if self._declared_suffice():
            return False
        self._load()
        return name in self._entries or (isinstance(name, str) and self._family_member(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
