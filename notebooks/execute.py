"""Re-execute the notebooks in place, with their outputs, ready to commit.

Usage, from the repository root (needs the ``test`` extra: nbclient, nbformat, ipykernel)::

    python notebooks/execute.py                      # all notebooks, full settings
    python notebooks/execute.py notebooks/01_quickstart.ipynb

Each notebook runs top to bottom in a fresh ``python3`` kernel, in a temporary working
directory, with the checkout first on ``PYTHONPATH`` (so it runs this tree's
``optax_signvar``) and without ``OPTAX_SIGNVAR_SMOKE`` (the full settings; the tests run
the smoke settings, see ``tests/test_notebooks.py``). The outputs are then made small and
stable for version control: no execution counts' timing metadata, consecutive stream
outputs of a cell merged, and figures re-encoded as palette PNGs (a third of the size,
indistinguishable for line plots). Prints each notebook's wall time.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900  # per cell


def _shrink_png(data: str) -> str:
    import base64

    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


def tidy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strips timing metadata, merges stream outputs and shrinks the figures."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        merged: list = []
        for out in cell.outputs:
            if (
                out.output_type == "stream"
                and merged
                and merged[-1].output_type == "stream"
                and merged[-1].name == out.name
            ):
                merged[-1].text += out.text
                continue
            if "data" in out and "image/png" in out.data:
                out.data["image/png"] = _shrink_png(out.data["image/png"])
            merged.append(out)
        cell.outputs = merged
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(path: Path) -> float:
    """Executes the notebook at ``path`` and writes it back with its outputs."""
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    os.environ.pop("OPTAX_SIGNVAR_SMOKE", None)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    try:
        with tempfile.TemporaryDirectory() as cwd:
            client = NotebookClient(
                nb,
                timeout=TIMEOUT_S,
                kernel_name="python3",
                resources={"metadata": {"path": cwd}},
                record_timing=False,
            )
            start = time.perf_counter()
            client.execute()
            seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env)
    nbformat.validate(nb)
    nbformat.write(tidy(nb), path)
    return seconds


def main(argv: list[str]) -> None:
    paths = [Path(p) for p in argv] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        seconds = execute(path)
        print(f"{path.name}: {seconds:.1f} s, {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main(sys.argv[1:])
