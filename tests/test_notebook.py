"""docs/examples/*.ipynb run top to bottom on a real Jupyter kernel (ipykernel, driven by nbclient).

Any cell that raises fails the test (nbclient's CellExecutionError names the cell and the traceback); so
does a warning printed by a cell, or a figure that did not render.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "docs" / "examples").glob("*.ipynb"))

pytestmark = pytest.mark.slow


def _execute(path: Path):
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own deprecation notice otherwise
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    # the kernel inherits this environment (KERNELSCOPE_PROGRESS=0 from conftest: no bars in the outputs)
    client = NotebookClient(notebook, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(ROOT)}})
    started = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - started


def _outputs(notebook, kind: str) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
            if o.get("output_type") == kind or o.get("name") == kind]


def test_the_notebooks_are_committed_without_outputs():
    import nbformat

    assert NOTEBOOKS, "no notebook in docs/examples"
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        stale = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not stale, f"{path.name}: cells {stale} carry outputs; clear them before committing"


def test_question_notebook_runs_on_a_real_kernel():
    notebook, seconds = _execute(ROOT / "docs" / "examples" / "question.ipynb")
    text = "".join(o["text"] for o in _outputs(notebook, "stdout"))
    assert "9*1 + 8*2 + 7*3 + 5*4 + 4*5 + 3*6 + 1*7 + 2*8 + 3*9 = 154" in text
    assert "torch conv2d      : [[154.0, 157.0], [200.0, 233.0]]" in text
    assert "true convolution  : [[266, 233], [160, 157]]" in text
    assert "epoch 2: train loss" in text and "kernel atlas: 16 kernels of 1x7x7" in text
    assert "smooth (300)" in text  # the atlas table carries its controls
    stderr = "".join(o["text"] for o in _outputs(notebook, "stderr"))
    assert "Warning" not in stderr and "Traceback" not in stderr, stderr
    figures = [o for o in _outputs(notebook, "display_data") + _outputs(notebook, "execute_result")
               if "image/png" in o.get("data", {})]
    # bank, filtered photo, kernels at init and after training, atlas matches, top patches: each shown once
    assert len(figures) == 6, f"{len(figures)} figures rendered"
    assert seconds < 120, f"the notebook took {seconds:.0f} s"
