"""docs/tutorial.ipynb is stored without outputs and runs top to bottom in a fresh kernel, from a
directory that holds the repository's configs (as when it is opened in the repository root)."""
from __future__ import annotations

import os

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
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:  # one thread, as the rest of the suite: on a loaded machine thread hand-offs cost more than they give
        client.execute(env={**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    except Exception as error:  # nbclient's CellExecutionError carries the cell and its traceback
        pytest.fail(f"the tutorial failed: {error}")
    outputs = "\n".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "largest |draw frequency - q|" in outputs and "semantic consistency" in outputs
    assert (tmp_path / "runs" / "tutorial" / "beta_bernoulli" / "gates.nc").is_file()
