"""Start-up: every console command answers ``--help`` without importing torch, Pyro or the other
heavy libraries (imported by ``main`` after the arguments are parsed). Wall-clock time on a shared
machine is noise; which modules a fresh process has imported is not."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib

from .conftest import ROOT

HEAVY = ("torch", "torchvision", "pyro", "numpy", "arviz", "matplotlib", "PIL", "xarray", "scipy")

PROBE = """
import contextlib, importlib, io, json, sys
module = importlib.import_module(sys.argv[1].partition(":")[0])
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        module.main(["--help"])
    except SystemExit as exit:
        code = exit.code
print(json.dumps({"code": code, "usage": out.getvalue().startswith("usage: "),
                  "heavy": sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)}))
"""


def test_every_command_answers_help_without_heavy_imports():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert len(scripts) >= 8  # train, eval, inspect, report, ablate, reproduce, browse, prepare
    for name, target in sorted(scripts.items()):
        done = subprocess.run([sys.executable, "-c", PROBE, target, json.dumps(HEAVY)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result == {"code": 0, "usage": True, "heavy": []}, (name, result)


FAIL_PROBE = """
import contextlib, importlib, io, json, sys
module = importlib.import_module(sys.argv[1])
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = module.main(json.loads(sys.argv[2]))
print(json.dumps({"code": code, "error": err.getvalue(), "torch": "torch" in sys.modules}))
"""


def test_a_config_mistake_is_named_before_torch_is_imported(tmp_path):
    """A mistyped key or choice, or an out-of-range value (also one given to a run being resumed, or
    shared by an ablation grid), is refused by the config layer alone, in a fraction of a second,
    not after the seconds torch takes to import."""
    import yaml

    resumable = tmp_path / "run"
    resumable.mkdir()
    (resumable / "config.yaml").write_text(yaml.safe_dump({"train": {"out_dir": str(resumable)}}))
    cases = [
        ("bayesncl_pyro.cli.train", ["gate.prior_prb=0.5", "--no-progress"], "closest: gate.prior_prob"),
        ("bayesncl_pyro.cli.train", ["--config", str(ROOT / "configs/scenes_quick.yaml"), "gate.prior_prob=3"],
         "gate.prior_prob=3.0 is not allowed"),
        ("bayesncl_pyro.cli.prepare", ["--splits", "train", "train.epoch=2"], "closest: train.epochs"),
        ("bayesncl_pyro.cli.ablate", ["gate.prior_prb=0.5", "grid.yaml", "--dry-run"], "closest: gate.prior_prob"),
        ("bayesncl_pyro.cli.evaluate", ["/nonexistent/run"], "run directory /nonexistent/run does not exist"),
        ("bayesncl_pyro.cli.train", ["gate.prior=bernouli", "--no-progress"], "(closest: bernoulli)"),
        ("bayesncl_pyro.cli.train", ["gate.estimator=stee", "--no-progress"], "(closest: ste"),
        ("bayesncl_pyro.cli.train", ["optim.name=adm", "--no-progress"], "(closest: adam)"),
        ("bayesncl_pyro.cli.train", ["optim.scheduler=cosine", "--no-progress"], "allowed: constant, warmup_cosine"),
        ("bayesncl_pyro.cli.train", ["--resume", str(resumable), "gate.prior_prob=3"], "gate.prior_prob=3.0 is not allowed"),
        ("bayesncl_pyro.cli.ablate", [str(tmp_path / "missing.yaml"), "--dry-run"], "missing.yaml does not exist"),
        ("bayesncl_pyro.cli.ablate", [str(ROOT / "configs/ablations/quick.yaml"), "train.steps=-1", "--dry-run"],
         "train.steps=-1 is not allowed"),
    ]
    for module, argv, expected in cases:
        done = subprocess.run([sys.executable, "-c", FAIL_PROBE, module, json.dumps(argv)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["code"] == 2 and expected in result["error"], (module, argv, result)
        assert not result["torch"], (module, argv, result)
