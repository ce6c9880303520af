"""Every ```python block of README.md runs verbatim, each in a fresh namespace, in a directory that
holds what the README's commands would have left there: a trained (tiny) ``runs/demo`` with its
``gates.nc``, and the repository's ``configs``."""
from __future__ import annotations

import re
import shutil

import matplotlib
import pytest

from bayesncl_pyro.evaluation.gate_posterior import inspect_run

from .conftest import ROOT, tiny_run

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.fixture(scope="module")
def readme_directory(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(tiny_run(tmp_path_factory, "demo"), work / "runs" / "demo")
    (work / "configs").symlink_to(ROOT / "configs")
    inspect_run(work / "runs" / "demo", draws=4, chains=1, top_dims=2, top_images=2, progress=False)
    return work


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 5
    assert any("BayesNCL.from_run" in block for block in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_python_block_of_the_readme_runs(readme_directory, monkeypatch, index):
    matplotlib.use("Agg")
    monkeypatch.chdir(readme_directory)
    exec(compile(BLOCKS[index], f"README.md, python block {index + 1}", "exec"), {"__name__": "__readme__"})
