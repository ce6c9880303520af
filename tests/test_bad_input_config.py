"""Bad command lines, configs and checkpoints, second table: each case ends in one ``error:`` line
(exit code 2) naming the bad value and what is allowed, never a traceback, and changes no run
directory. Also: ``key=value`` overrides anywhere among the options, the one-line ``model.weights``
report, the plugin hint of an unknown choice, and the guard's line for an error nobody foresaw.

Checkpoints here hold a valid checksum around a damaged state (:func:`_rewrite`), so the damage is
found by the checks of the fields, not by the checksum.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from bayesncl_pyro.cli import ablate, browse, evaluate, guard, inspect_gates, report, train
from bayesncl_pyro.config import ConfigError, load_config
from bayesncl_pyro.config.errors import RunWarning
from bayesncl_pyro.config.parsing import MAX_YAML_NODES, read_yaml_mapping
from bayesncl_pyro.config.registry import PLUGIN_GROUP
from bayesncl_pyro.networks.pretrained_weights import load_backbone_weights
from bayesncl_pyro.storage import checkpoints

from .conftest import ROOT, TINY, tiny_run

MAINS = {"train": train.main, "eval": evaluate.main, "inspect": inspect_gates.main, "report": report.main,
         "ablate": ablate.main, "browse": browse.main}
FRESH = ["--config", str(ROOT / "configs/scenes_quick.yaml"), "--no-progress", *TINY]
BOMB = ("a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)))
"""Ten levels of nine aliases: 2 kB of YAML, 9**10 values once expanded."""
FLOW_BOMB = "[" + ", ".join(["&a0 [x, x, x, x, x, x, x, x, x]"] + [
    f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]) + "]"


@dataclass
class Case:
    command: str
    argv: list[str]
    expected: list[str]
    forbidden: tuple[str, ...] = ()


def fresh(*overrides: str) -> list[str]:
    return [*FRESH, "train.out_dir={base}/fresh", *overrides]


CASES = {
    # --- overrides among the options: the one after --no-progress is read (and refused) ---
    "override after an option": Case("train", [*fresh(), "--no-progress", "gate.prior_prob=7"],
                                     ["gate.prior_prob=7", "(0, 1)"]),
    "override between options": Case("train", ["--config", str(ROOT / "configs/scenes_quick.yaml"),
                                               "gate.prior_prob=7", "--no-progress", "train.steps=1"],
                                     ["gate.prior_prob=7"]),
    # --- values ---
    "huge learning rate": Case("train", fresh("optim.lr=1e300"), ["optim.lr=1e+300", "<= 1000"]),
    "huge gate hidden layer": Case("train", fresh("gate.hidden=1000000000"),
                                   ["gate.hidden=1000000000", ">= 1 and <= 16384"]),
    "huge image size": Case("train", fresh("data.image_size=100000"), ["data.image_size=100000", ">= 8 and <= 1024"]),
    "huge projector": Case("train", fresh("model.proj_dim=10000000"), ["model.proj_dim", ">= 2 and <= 16384"]),
    "huge batch": Case("train", fresh("data.batch_size=100000000"), ["data.batch_size", ">= 2 and <= 65536"]),
    "huge scenes split": Case("train", fresh("data.scenes.num_train=1000000000"),
                              ["data.scenes.num_train", ">= 2 and <= 1000000"]),
    "huge particle count": Case("train", fresh("gate.particles=100000"), ["gate.particles", ">= 1 and <= 256"]),
    "unknown prior names the plugin group": Case("train", fresh("gate.prior=my_plugin_prior"),
                                                 ["gate.prior='my_plugin_prior'", "plugin", PLUGIN_GROUP, "bernoulli"]),
    "unknown backbone names the plugin group": Case("train", fresh("model.backbone=my_encoder"),
                                                    ["model.backbone", PLUGIN_GROUP]),
    "unknown dataset names the plugin group": Case("train", fresh("data.name=my_images"),
                                                   ["data.name", PLUGIN_GROUP, "scenes"]),
    # --- YAML: depth and alias bombs, never expanded into a message ---
    "config nested 1000 deep": Case("train", ["--config", "{base}/deep.yaml"], ["deep.yaml", "nested more than 32"]),
    "config nested 1000 deep (block style)": Case("train", ["--config", "{base}/deep_block.yaml"],
                                                  ["deep_block.yaml", "nested more than 32"]),
    "alias bomb config (train)": Case("train", ["--config", "{base}/bomb.yaml"],
                                      ["bomb.yaml", f"more than {MAX_YAML_NODES} values", "aliases"], ("x, x",)),
    "alias bomb run config (resume)": Case("train", ["--resume", "{bomb_run}", "--no-progress"],
                                           ["config.yaml", "aliases"], ("x, x",)),
    "alias bomb run config (eval)": Case("eval", ["{bomb_run}", "--no-progress"], ["config.yaml", "aliases"], ("x, x",)),
    "alias bomb run config (inspect)": Case("inspect", ["{bomb_run}", "--no-progress"], ["config.yaml", "aliases"]),
    "alias bomb run config (report)": Case("report", ["{bomb_run}", "--out", "{base}/r.html"],
                                           ["config.yaml", "aliases"], ("x, x",)),
    "alias bomb override": Case("train", fresh(f"train.out_dir={FLOW_BOMB}"), ["override", "aliases"]),
    # --- checkpoints with a valid checksum around a damaged state ---
    "optimizer state of the wrong shape": Case("train", ["--resume", "{opt_shape}", "--no-progress"],
                                               ["last.pt", "momentum_buffer", "shape [3, 3]"]),
    "schedule last_epoch a string": Case("train", ["--resume", "{last_epoch}", "--no-progress"],
                                         ["last.pt", "'last_epoch' is 'abc'", "an integer"]),
    "net weights a list (resume)": Case("train", ["--resume", "{net_list}", "--no-progress"],
                                        ["last.pt", "'net' are a list"]),
    "net weights a list (eval)": Case("eval", ["{net_list}", "--no-progress"], ["last.pt", "'net' are a list"]),
    "net weights a list (inspect)": Case("inspect", ["{net_list}", "--no-progress"], ["last.pt", "'net' are a list"]),
    "negative step (resume)": Case("train", ["--resume", "{negative_step}", "--no-progress"],
                                   ["last.pt", "'step' is -5", ">= 0"]),
    "negative step (eval)": Case("eval", ["{negative_step}", "--no-progress"], ["'step' is -5"]),
    "resume from NaN weights": Case("train", ["--resume", "{nan_weights}", "--no-progress"],
                                    ["last.pt", "NaN or infinite", "cannot continue"], ("last good",)),
    # --- command-line options ---
    "inspect draws as a float": Case("inspect", ["{run}", "--draws", "1e9"], ["--draws", "'1e9'", "from 1 to 4000"]),
    "inspect draws huge": Case("inspect", ["{run}", "--draws", "1000000000"], ["--draws", "from 1 to 4000"]),
    "inspect chains huge": Case("inspect", ["{run}", "--chains", "100000"], ["--chains", "from 1 to 8"]),
    "browse negative seed": Case("browse", ["{run}", "--seed", "-1"], ["--seed", "from 0 to 4294967295"]),
    "browse unknown option": Case("browse", ["{run}", "--no-such-option"], ["--no-such-option", "--help"]),
    "browse huge top-k": Case("browse", ["{run}", "--top-k", "100000000"], ["--top-k", "from 1 to 1000"]),
    "ablate invalid global override": Case("ablate", ["{base}/grid.yaml", "--dry-run", "gate.prior_prob=3"],
                                           ["no cell can run", "gate.prior_prob=3.0", "(0, 1)"]),
    "ablate unknown global override": Case("ablate", ["{base}/grid.yaml", "gate.nope=3", "--dry-run"],
                                           ["gate.nope"]),
    "ablate jobs huge": Case("ablate", ["{base}/grid.yaml", "--jobs", "100000"], ["--jobs", "from 1 to 64"]),
}


def _rewrite(run: Path, change) -> None:
    """Apply ``change`` to the state of ``run/last.pt`` and write it back with a valid checksum."""
    state = checkpoints.read(run / "last.pt")
    change(state)
    (run / "last.pt").write_bytes(checkpoints.encode(state))


def _wrong_momentum(state):
    for buffers in state["optimizer"]["state"].values():
        buffers["momentum_buffer"] = torch.zeros(3, 3)


def _nan_weight(state):
    name = next(k for k, v in state["modules"]["net"].items() if v.is_floating_point())
    state["modules"]["net"][name].fill_(float("nan"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_config")
    run = tiny_run(tmp_path_factory, "run")
    paths = {"base": base, "run": run}

    def copy(name: str) -> Path:
        paths[name] = base / name
        shutil.copytree(run, paths[name])
        return paths[name]

    _rewrite(copy("opt_shape"), _wrong_momentum)
    _rewrite(copy("last_epoch"), lambda s: s["scheduler"].__setitem__("last_epoch", "abc"))
    _rewrite(copy("net_list"), lambda s: s["modules"].__setitem__("net", [1, 2]))
    _rewrite(copy("negative_step"), lambda s: s.__setitem__("step", -5))
    _rewrite(copy("nan_weights"), _nan_weight)
    (copy("bomb_run") / "config.yaml").write_text(BOMB + (run / "config.yaml").read_text())
    (base / "bomb.yaml").write_text(BOMB)
    (base / "deep.yaml").write_text("train: " + "[" * 1000 + "]" * 1000 + "\n")
    (base / "deep_block.yaml").write_text("".join("  " * i + f"k{i}:\n" for i in range(1000)))
    (base / "grid.yaml").write_text(f"base: {ROOT / 'configs/scenes_quick.yaml'}\nout_dir: {base / 'grid'}\n"
                                    "grid:\n  gate.prior: [bernoulli, hard_concrete]\n")
    return paths


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(world, name, capsys):
    case = CASES[name]
    fmt = {k: str(v) for k, v in world.items()}
    argv = [a.format(**fmt) for a in case.argv]
    watched = [p for p in world.values() if p.is_dir() and (p / "config.yaml").is_file()]
    before = {p: _snapshot(p) for p in watched}
    code = MAINS[case.command](argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert len(err[0]) < 800, err[0]
    for fragment in case.expected:
        assert fragment in err[0], (fragment, err[0])
    for fragment in case.forbidden:
        assert fragment not in err[0], (fragment, err[0])
    for path, snap in before.items():
        assert _snapshot(path) == snap, f"{path} changed"
    assert not (world["base"] / "fresh").exists()


# --- overrides anywhere on the command line --------------------------------------------------

def test_train_takes_overrides_before_between_and_after_options():
    args = train.parser().parse_args(["--config", "c.yaml", "a.b=1", "--no-progress", "c.d=2", "--resume", "r", "e=3"])
    assert args.overrides == ["a.b=1", "c.d=2", "e=3"]
    assert (args.config, args.resume, args.no_progress) == ("c.yaml", "r", True)


def test_ablate_takes_overrides_after_options():
    args = ablate.parser().parse_args(["grid.yaml", "--dry-run", "train.steps=2", "--jobs", "2", "train.seed=1"])
    assert (args.spec, args.overrides, args.dry_run, args.jobs) == ("grid.yaml", ["train.steps=2", "train.seed=1"], True, 2)


def test_ablate_dry_run_applies_an_override_given_after_an_option(world, capsys):
    code = ablate.main([str(world["base"] / "grid.yaml"), "--dry-run", "train.steps=2"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(out) == 2 and all("to run" in line for line in out), out
    spec = ablate_spec(world, "train.steps=2")
    assert spec.overrides[-1] == "train.steps=2"


def ablate_spec(world, *overrides):
    from bayesncl_pyro.experiments.ablation import load_spec

    return load_spec(world["base"] / "grid.yaml", None, list(overrides))


def test_browse_expands_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    args = browse.parser().parse_args(["~/run", "--out", "~/site"])
    assert args.run_dirs == [str(tmp_path / "run")] and args.out == str(tmp_path / "site")


# --- YAML that stays usable -------------------------------------------------------------------

def test_yaml_merges_and_small_aliases_still_load(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("common: &c {x: 1, y: 2}\nother:\n  <<: *c\n  y: 3\nlist: [*c, *c]\n")
    tree = read_yaml_mapping(path, "file")
    assert tree["other"] == {"x": 1, "y": 3} and tree["list"] == [{"x": 1, "y": 2}] * 2


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="aliases"):
        read_yaml_mapping(path, "file")


def test_bounds_leave_the_shipped_configs_valid():
    for path in [ROOT / "configs/scenes_quick.yaml", ROOT / "configs/cifar10_resnet18.yaml"]:
        load_config(path)


# --- messages ---------------------------------------------------------------------------------

def test_model_weights_report_is_one_warning_line(tmp_path, capsys):
    backbone = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    weights = {"module.0.weight": torch.ones(3, 4), "module.0.bias": torch.ones(3), "head.weight": torch.ones(2)}
    torch.save(weights, tmp_path / "w.pt")

    @guard.guarded
    def command(argv):
        load_backbone_weights(backbone, tmp_path / "w.pt")
        return 0

    assert command([]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("warning: model.weights=") and "loaded 2 of the backbone's 4 tensors" in err[0]
    assert "head.weight" in err[0] and ".py" not in err[0]
    assert torch.equal(backbone[0].weight, torch.ones(3, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_backbone_weights(backbone, tmp_path / "w.pt")
    assert [w.category for w in caught] == [RunWarning]


def test_unknown_name_looked_up_directly_names_the_plugin_group():
    from bayesncl_pyro.config import choices

    with pytest.raises(ConfigError, match=PLUGIN_GROUP.replace(".", r"\.")):
        choices.PRIORS.get("my_plugin_prior")


def test_preprocess_names_the_shape_and_treats_one_channel_as_grey(world):
    from bayesncl_pyro import BayesNCL
    from bayesncl_pyro.config.errors import DataError

    net = BayesNCL.from_run(world["run"])
    grey = torch.randint(0, 256, (2, 1, 20, 20), dtype=torch.uint8)
    assert torch.equal(net.preprocess(grey), net.preprocess(grey.repeat(1, 3, 1, 1)))
    for shape in [(2, 20, 20, 3), (2, 2, 20, 20), (1, 1, 1, 20, 20)]:
        with pytest.raises(DataError, match=rf"shape {tuple(shape)}".replace("(", r"\(").replace(")", r"\)")):
            net.preprocess(torch.zeros(shape, dtype=torch.uint8))


def test_from_run_refuses_an_infinite_std(world, tmp_path):
    from bayesncl_pyro import BayesNCL
    from bayesncl_pyro.config.errors import CheckpointError

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    record = json.loads((run / "preprocessing.json").read_text())
    record["std"][1] = float("inf")
    (run / "preprocessing.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="preprocessing.json records an impossible transform"):
        BayesNCL.from_run(run)


# --- the guard: an error nobody foresaw -------------------------------------------------------

@guard.guarded
def _broken(argv):
    raise ZeroDivisionError("a bug in the command")


def test_an_unexpected_error_is_one_line_naming_its_type(monkeypatch, capsys):
    monkeypatch.delenv(guard.TRACEBACK_VARIABLE, raising=False)
    assert _broken([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ZeroDivisionError: a bug in the command")
    assert guard.TRACEBACK_VARIABLE in err[0] and "_broken" in err[0]


def test_the_traceback_of_an_unexpected_error_on_request(monkeypatch):
    monkeypatch.setenv(guard.TRACEBACK_VARIABLE, "1")
    with pytest.raises(ZeroDivisionError):
        _broken([])


def test_running_out_of_memory_is_one_line(capsys):
    @guard.guarded
    def greedy(argv):
        raise MemoryError()

    assert greedy([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out of memory"), err
