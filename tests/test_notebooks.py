"""The notebooks under ``notebooks/`` run top to bottom without an error.

Each is executed headless in a fresh ``python3`` kernel with ``OPTAX_SIGNVAR_SMOKE=1``
(tiny settings: a few seconds of training each), from an in-memory copy: the committed
files, with their outputs, are never modified. The kernel runs in a temporary working
directory with this checkout first on ``PYTHONPATH``, so the notebooks test this tree's
``optax_signvar`` and never reach their Colab install cell's ``pip install``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ipykernel  # noqa: F401  (provides the python3 kernel the notebooks run in)
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# For the whole notebook (kernel start included); in smoke mode each takes well under a
# minute on a 2-core CPU.
NOTEBOOK_TIMEOUT_S = 300
COLAB = "https://colab.research.google.com/github/optax-signvar/optax_signvar/blob/main/notebooks/"


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_dissecting_adam.ipynb",
        "03_amsgrad_adabound.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_with_a_colab_badge(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert COLAB + path.name in nb.cells[0].source, "the title cell needs its Open in Colab badge"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs or not c.source.strip() for c in code[:2]), "commit it executed"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"committed with an error output: {errors[0].get('ename')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    before = path.read_bytes()
    nb = nbformat.reads(before.decode("utf-8"), as_version=4)  # an in-memory copy
    monkeypatch.setenv("OPTAX_SIGNVAR_SMOKE", "1")
    pythonpath = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), pythonpath])))
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    client = nbclient.NotebookClient(
        nb,
        # asked before each cell: whatever is left of the notebook's time (nbclient raises
        # a CellTimeoutError when a cell runs past it)
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    first = nb.cells[1]
    assert "smoke settings" in "".join(o.get("text", "") for o in first.outputs)
    assert path.read_bytes() == before
