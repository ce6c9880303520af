"""docs/tutorial.ipynb is stored without outputs and runs top to bottom in a fresh kernel with its
own folder, docs/, as the working directory (as `jupyter execute docs/tutorial.ipynb` and Jupyter
run it): its figures show inline, its progress bars are widgets, and its text's claim holds."""
from __future__ import annotations

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT

NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def test_the_tutorial_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) >= 8
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_the_tutorial_runs_top_to_bottom(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # a clone: configs/ beside docs/
    (tmp_path / "docs").mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path / "docs")}})
    # the kernel's own matplotlib backend (inline), one thread as the rest of the suite
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    try:
        client.execute(env={**env, "OMP_NUM_THREADS": "1"})
    except Exception as error:  # nbclient's CellExecutionError carries the cell and its traceback
        pytest.fail(f"the tutorial failed: {error}")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(o.get("text", "") for o in outputs)
    stderr = "\n".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "largest |draw frequency - q|" in text and "semantic consistency" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, "the figures did not show inline"
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), \
        "no progress bar was shown as a widget"
    assert "IProgress" not in stderr
    assert (tmp_path / "runs" / "tutorial" / "beta_bernoulli" / "gates.nc").is_file()
    # section 5's text: the Beta-Bernoulli prior keeps several times as many dimensions open
    found = {m["prior"]: (float(m["share"]), int(m["closed"]), int(m["open"])) for m in re.finditer(
        r"(?P<prior>\w+) +mean posterior open share (?P<share>[\d.]+) %; closed dims (?P<closed>\d+), "
        r"open dims (?P<open>\d+)", text)}
    assert set(found) == {"bernoulli", "beta_bernoulli"}, text
    assert found["beta_bernoulli"][2] >= 2 * max(1, found["bernoulli"][2]), found
    assert found["bernoulli"][1] > 32 and found["beta_bernoulli"][0] > 20.0, found
