"""docs/tutorial.ipynb executes from top to bottom without an error (nbclient, a fresh kernel)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def _outputs(nb):
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                yield i, out


@pytest.mark.notebook
def test_tutorial_notebook_executes_without_errors(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (requirements.lock)")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (requirements.lock)")
    pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (requirements.lock)")
    work = tmp_path / "tutorial"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / "tutorial.ipynb")
    nb = nbformat.read(work / "tutorial.ipynb", as_version=4)
    for cell in nb.cells:  # executed from scratch: nothing stored may pass for a result
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    client.execute()  # the notebook sets `%matplotlib inline`, so its plots come back as PNG outputs
    wall = time.perf_counter() - t0
    errors = [(i, out.get("ename"), out.get("evalue")) for i, out in _outputs(nb) if out.get("output_type") == "error"]
    assert not errors, errors
    text = "".join("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
                   for _, out in _outputs(nb))
    assert "whole tutorial:" in text, "the last cell did not run"
    assert "saddle index of L:" in text and "largest eigenvalues of H_E:" in text
    images = [out for _, out in _outputs(nb) if "image/png" in out.get("data", {})]
    assert len(images) >= 2, "the sweep plot and the paths figure are displayed"
    # what the notebook wrote: a sweep with transitions, curvature at its minima, a connect run
    assert (work / "tutorial_runs" / "sweep" / "transitions.csv").exists()
    assert (work / "tutorial_runs" / "sweep" / "curvature.parquet").exists()
    assert (work / "tutorial_runs" / "connect" / "paths_summary.csv").exists()
    assert (work / "tutorial_runs" / "sweep" / "progress.log").read_text().strip()
    print(f"tutorial executed in {wall:.0f} s")
