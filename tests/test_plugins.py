"""Plugins: the package of docs/adding_a_prior.md, built here in a temporary directory with its
installed metadata (``*.dist-info/entry_points.txt``, as ``pip install --target`` leaves it), registers
a prior with its own guide, an estimator and a backbone through the entry-point group
``bayesncl_pyro.plugins``; every console command, each in its own process, accepts a run that uses
all three. Without the plugin the same run is refused by name, and a broken plugin is one warning."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from bayesncl_pyro.config import load_config
from bayesncl_pyro.config.registry import PLUGIN_GROUP

from .conftest import ROOT, TINY

CHOICES = ["gate.prior=half_open_bernoulli", "gate.estimator=stochastic_ste", "model.backbone=tiny_cnn"]


def documented_blocks() -> tuple[dict, str]:
    """The plugin's pyproject.toml (parsed) and its module, as docs/adding_a_prior.md shows them."""
    text = (ROOT / "docs" / "adding_a_prior.md").read_text()
    section = text.split("## As a plugin, outside this repository", 1)[1]
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    module = re.search(r"```python\n(# my_gates/__init__.py\n.*?)```", section, re.S).group(1)
    return tomllib.loads(toml), module


def install(site: Path, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Lay out a distribution as an installer does: its modules and ``<name>-<version>.dist-info``."""
    for module, source in modules.items():
        (site / module).mkdir(parents=True)
        (site / module / "__init__.py").write_text(source)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{PLUGIN_GROUP}]", *(f"{key} = {value}" for key, value in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    project, module = documented_blocks()
    site = tmp_path_factory.mktemp("site")
    install(site, project["project"]["name"], project["project"]["version"],
            project["project"]["entry-points"][PLUGIN_GROUP], {"my_gates": module})
    return site


def environment(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    return env


DRIVER = """
import json, sys
from bayesncl_pyro.cli import ablate, evaluate, inspect_gates, report, reproduce, train
commands = dict(train=train, eval=evaluate, inspect=inspect_gates, report=report, ablate=ablate, reproduce=reproduce)
codes = [commands[name].main(argv) for name, argv in json.loads(sys.argv[1])]
print("exit codes", json.dumps(codes))
"""


def test_every_console_command_accepts_a_run_of_plugin_choices(plugin_site, tmp_path):
    """One process runs the six commands' ``main`` one after the other (what each console script
    calls), so the interpreter and torch start once; the plugin is found only through its metadata."""
    run = tmp_path / "run"
    overrides = [*TINY, "train.steps=2", "train.epochs=1"]
    grid = {"base": str(ROOT / "configs" / "scenes_quick.yaml"), "out_dir": str(tmp_path / "grid"),
            "overrides": [*overrides, *CHOICES[1:]], "grid": {"gate.prior": ["half_open_bernoulli", "bernoulli"]}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    suite = {"out_dir": str(tmp_path / "suite"), "base": str(ROOT / "configs" / "scenes_quick.yaml"),
             "overrides": overrides, "datasets": {"scenes": ["data.name=scenes"]},
             "methods": {"plugin": CHOICES}, "seeds": [0]}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    steps = [
        ("train", ["--config", str(ROOT / "configs" / "scenes_quick.yaml"), "--no-progress", *overrides, *CHOICES,
                   f"train.out_dir={run}"]),
        ("eval", [str(run), "--no-progress"]),
        ("inspect", [str(run), "--draws", "4", "--chains", "1", "--top-dims", "2", "--top-images", "2", "--no-progress"]),
        ("report", [str(run), "--out", str(tmp_path / "report.html")]),
        ("ablate", [str(tmp_path / "grid.yaml"), "--dry-run"]),
        ("reproduce", [str(tmp_path / "suite.yaml"), "--dry-run"]),
    ]
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(steps)], cwd=tmp_path, env=environment(plugin_site),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "exit codes [0, 0, 0, 0, 0, 0]" in done.stdout, done.stderr[-3000:]

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["gate"]["prior"], config["gate"]["estimator"], config["model"]["backbone"]) == (
        "half_open_bernoulli", "stochastic_ste", "tiny_cnn")
    assert json.loads((run / "eval.json").read_text())["metrics"]["gated"]["active_dims"] >= 0
    assert (run / "gates.nc").is_file()
    assert "half_open_bernoulli" in (tmp_path / "report.html").read_text()
    assert re.search(r"^prior=half_open_bernoulli: to run -> .*grid/prior=half_open_bernoulli$", done.stdout, re.M)
    assert "scenes/plugin/seed0" in done.stdout


def test_without_the_plugin_the_run_is_refused_and_a_broken_plugin_is_named(tmp_path):
    """The installed console script, with only a broken plugin around: one warning names it, and
    the run of the plugin's choices is refused in one error line."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(ROOT / "configs" / "scenes_quick.yaml", []).to_dict()
    cfg["model"]["backbone"] = "tiny_cnn"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    broken = tmp_path / "broken"
    install(broken, "broken-plugin", "1.0", {"broken": "broken_gates"}, {"broken_gates": "raise ImportError('no')\n"})
    script = Path(sys.executable).parent / "bayesncl-eval"
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "bayesncl_pyro.cli.evaluate"]
    done = subprocess.run([*argv, str(run), "--no-progress"], cwd=tmp_path, env=environment(broken),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "tiny_cnn" in errors[0] and "is not allowed" in errors[0], done.stderr
    assert "plugin 'broken' (broken_gates, entry-point group bayesncl_pyro.plugins) failed to load" in done.stderr
