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
