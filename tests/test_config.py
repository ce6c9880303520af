"""Config loading: YAML + key=value overrides, types coerced, every bad value named."""
from __future__ import annotations

import pytest

from bayesncl_pyro import Config, ConfigError, load_config
from bayesncl_pyro.config import parse_override

from .conftest import ROOT


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


def test_overrides_apply_and_coerce_types():
    cfg = load_config(ROOT / "configs/scenes_quick.yaml",
                      ["gate.prior=bernoulli", "gate.estimator=concrete", "optim.lr=0.3", "data.batch_size=64",
                       "train.precision=bf16", "data.download=true", "gate.kl_weight=1e-3", "data.scenes.shared_p=0.5"])
    assert cfg.gate.estimator == "concrete"
    assert cfg.optim.lr == 0.3 and isinstance(cfg.optim.lr, float)
    assert cfg.data.batch_size == 64 and isinstance(cfg.data.batch_size, int)
    assert cfg.train.precision == "bf16"
    assert cfg.data.download is True
    assert cfg.gate.kl_weight == pytest.approx(1e-3)
    assert cfg.data.scenes.shared_p == 0.5


def test_defaults_without_file():
    cfg = load_config(None, ["train.epochs=3"])
    assert cfg.train.epochs == 3 and cfg.gate.prior == "bernoulli"


def test_later_override_wins():
    assert load_config(None, ["optim.lr=0.1", "optim.lr=0.2"]).optim.lr == 0.2


@pytest.mark.parametrize("override, key, allowed", [
    ("gate.prior_prob=0", "gate.prior_prob", "(0, 1)"),
    ("gate.prior_prob=1", "gate.prior_prob", "(0, 1)"),
    ("gate.kl_weight=-1", "gate.kl_weight", ">= 0"),
    ("gate.threshold=1.0", "gate.threshold", "(0, 1)"),
    ("gate.temperature=0", "gate.temperature", "> 0"),
    ("model.temperature=-0.2", "model.temperature", "> 0"),
    ("data.batch_size=1", "data.batch_size", ">= 2"),
    ("optim.lr=0", "optim.lr", "> 0"),
    ("gate.layers=4", "gate.layers", "1, 2 or 3"),
    ("gate.prior=gaussian", "gate.prior", "bernoulli"),
    ("gate.estimator=magic", "gate.estimator", "ste"),
    ("model.nonneg=tanh", "model.nonneg", "rep_relu"),
    ("model.backbone=vgg", "model.backbone", "resnet18"),
    ("train.precision=8", "train.precision", "bf16"),
    ("data.batch_size=abc", "data.batch_size", "integer"),
    ("train.epochs=1.5", "train.epochs", "integer"),
    ("data.download=maybe", "data.download", "true or false"),
    ("gate.rho=0.5", "gate.rho", "prior_prob"),
    ("nothing.here=1", "nothing", "gate"),
])
def test_bad_values_name_key_and_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert key in message and allowed in message, message


def test_override_must_have_equals():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")


def test_section_cannot_be_set_whole():
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["gate=3"])


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("gate:\n  prior_prop: 0.8\n")
    with pytest.raises(ConfigError, match="gate.prior_prop"):
        load_config(path)


def test_missing_file_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip_through_dict():
    from bayesncl_pyro.config import config_from_dict

    cfg = load_config(ROOT / "configs/scenes_quick.yaml", ["gate.estimator=concrete"])
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("override, value", [
    ("train.out_dir=runs/a #b", "runs/a #b"),
    ("train.out_dir=#b", "#b"),
    ("train.out_dir=runs/a#b", "runs/a#b"),
    ("train.out_dir='runs/a #b'", "runs/a #b"),
    ("optim.lr=0.4 # c", "0.4 # c"),
    ("optim.lr=0.4", 0.4),
    ("data.download=true", True),
])
def test_an_override_value_keeps_what_yaml_would_read_as_a_comment(override, value):
    assert parse_override(override)[1] == value


def test_an_override_path_with_a_hash_reaches_the_config():
    assert load_config(None, ["train.out_dir=runs/a #b"]).train.out_dir == "runs/a #b"
    with pytest.raises(ConfigError, match=r"optim.lr='0.4 # c' is not allowed; allowed: a number"):
        load_config(None, ["optim.lr=0.4 # c"])


@pytest.mark.parametrize("override, closest", [
    ("gate.prior_prb=0.5", "gate.prior_prob"),
    ("epochs=3", "train.epochs"),
    ("gat.prior=bernoulli", "gate.prior"),
])
def test_an_unknown_key_names_the_closest_first(override, closest):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    key = override.partition("=")[0]
    assert str(info.value).startswith(f"unknown config key '{key}' (closest: {closest}"), str(info.value)


def test_an_unknown_key_in_yaml_names_the_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("gate:\n  prior_prop: 0.8\n")
    with pytest.raises(ConfigError, match=r"^unknown config key 'gate.prior_prop' \(closest: gate.prior_prob"):
        load_config(path)


def test_an_unknown_choice_names_the_closest_before_the_long_list():
    with pytest.raises(ConfigError, match=r"^gate.prior='bernouli' is not allowed \(closest: bernoulli"):
        load_config(None, ["gate.prior=bernouli"])
