"""The registries' declared names: the names each table's own modules register, declared in
config/choices.py so that a config is validated without importing those modules (and torch). The
declarations must be what the modules register, and the declared path must give the answers the
loaded table gives."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bayesncl_pyro.config import registry as registry_module
from bayesncl_pyro.config.errors import ConfigError
from bayesncl_pyro.config.registry import Registry

LOAD_ALL = """
import json
from bayesncl_pyro.config import choices, registry
registry._plugins_loaded = True  # this package's own registrations only, whatever plugins are installed
out = {}
for name in dir(choices):
    table = getattr(choices, name)
    if isinstance(table, choices.Registry):
        names, families = table.declared
        table.names()  # imports the table's own modules
        out[table.kind] = {"declared": sorted(names), "families": sorted(families),
                           "registered": sorted(table._entries), "registered_families": sorted(table._families)}
print(json.dumps(out))
"""


def test_declared_names_are_what_the_modules_register():
    done = subprocess.run([sys.executable, "-c", LOAD_ALL], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    tables = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(tables) >= 8
    for kind, table in tables.items():
        assert table["declared"] == table["registered"], kind
        assert table["families"] == table["registered_families"], kind


def test_declared_names_answer_without_importing_the_modules(monkeypatch):
    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", lambda group: [])
    table = Registry("x.kind", plugins=["a_module_that_does_not_exist"], names=["alpha", "beta_two"])
    assert "alpha" in table and "gamma" not in table
    assert table.closest("beta_to") == ["beta_two"]
    message = table.unknown("beta_to")
    assert message.startswith("x.kind='beta_to' is not allowed (closest: beta_two)") and message.endswith(
        "allowed: alpha, beta_two")
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist"):
        table.get("alpha")  # using an entry needs the module; naming it does not


def test_installed_plugins_or_families_make_the_table_load(monkeypatch):
    """Names a plugin package may add, or family members, are unknown to the declaration: the
    table is loaded to answer, as it was before names were declared."""
    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", lambda group: ["a plugin"])
    monkeypatch.setattr(registry_module, "load_plugins", lambda: None)
    table = Registry("x.kind", plugins=["a_module_that_does_not_exist"], names=["alpha"])
    assert "alpha" in table  # a declared name is ours either way
    with pytest.raises(ModuleNotFoundError):
        "gamma" in table  # noqa: B015  (the look-up itself is the point)
    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", lambda group: [])
    family = Registry("x.kind", plugins=["a_module_that_does_not_exist"], names=["alpha"], families=["fam"])
    with pytest.raises(ModuleNotFoundError):
        family.unknown("fam:member")


def test_the_declared_answer_is_the_loaded_answer():
    from bayesncl_pyro.config import choices

    fresh = Registry(choices.PRIORS.kind, plugins=["bayesncl_pyro.models"], names=choices.PRIORS.declared[0])
    for name in ("bernouli", "none", "hard_concret", "zzz"):
        light = (name in fresh, fresh.unknown(name) if name not in fresh else None)
        assert not fresh._loaded
        choices.PRIORS.names()
        assert light == (name in choices.PRIORS, choices.PRIORS.unknown(name) if name not in choices.PRIORS else None)
    with pytest.raises(ConfigError, match="closest: bernoulli"):
        from bayesncl_pyro.config import load_config

        load_config(None, ["gate.prior=bernouli"])


def test_a_name_registered_in_the_process_is_allowed_before_the_table_loads(monkeypatch):
    """A name registered by code in this process (a script, a notebook), not through an entry
    point, is as valid as a declared one; the declared names do not hide it."""
    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", lambda group: [])
    table = Registry("x.kind", plugins=["bayesncl_pyro.config.errors"], names=["alpha"])
    table.register("mine", object())
    assert "mine" in table and "alpha" in table
    assert "mne" not in table and "closest: mine" in table.unknown("mne")
