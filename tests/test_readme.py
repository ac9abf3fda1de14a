"""The README's Python examples run as written."""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# blocks inside list items are indented: dedent them
BLOCKS = [
    textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
]


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
