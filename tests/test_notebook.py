"""The teaching notebook (examples/lesson3.ipynb) runs end to end, as a reader runs it, and is kept in git without
outputs. nbclient executes it in a fresh Jupyter kernel with no network, from a copy of examples/ beside
configs/, so its runs land in the copy."""

from __future__ import annotations

import os
import shutil
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK = REPO / "examples" / "lesson3.ipynb"


def test_the_notebook_is_kept_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_end_to_end(tmp_path, monkeypatch):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    # The kernel is this interpreter's (ipykernel's "python3" names `python` on the PATH): fitquad importable.
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    notebook = nbformat.read(tmp_path / "examples" / "lesson3.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path / "examples")}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    def text(cell) -> str:
        parts = [output.get("text", "") for output in cell.outputs]
        parts += [output.get("data", {}).get("text/html", "") for output in cell.outputs]
        return "".join(parts)

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    # What a reader sees in red: no cell writes to stderr (no warnings, no Lightning chatter), but the one that
    # shows a mistake on purpose, whose one line is the error.
    stderr = [[o.get("text", "") for o in cell.outputs if o.get("name") == "stderr"] for cell in code]
    assert all(not "".join(lines).strip() for lines in stderr), [lines for lines in stderr if lines]
    raw, standardized, curves, whitened, capacity, draws, mine, degrees, mistake = [text(cell) for cell in code[1:]]
    assert "Gradient descent has stalled" in raw and 'src="data:image/png;base64,' in raw  # figures inline
    assert "The fit reached the best the model can do" in standardized
    assert any("image/png" in output.get("data", {}) for output in code[3].outputs)  # matplotlib's own, inline
    assert "κ = 1.0" in whitened
    assert "Validation minimum at degree = 3" in capacity  # 1% below degree 2 on this draw (the notebook says so)
    assert "Lowest mean validation MSE at degree = 2" in draws and "degree 0: bias²" in draws
    assert "σ̂² estimated from the optimum's residuals" in mine
    assert "lowest validation MSE at degree 2" in degrees
    assert "data.y_column 'distance' is not a column of data.file 'stopping_distances.csv'" in mistake
    assert (tmp_path / "examples" / "runs" / "your_data").is_dir() and not (REPO / "examples" / "runs").exists()
