"""Smoke test of ``python -m benchmarks.speed``: it runs end to end, its memory figures exact.

No timing is asserted: the CI machine is shared and noisy, and a speed regression is for a
person reading the benchmark's table, not for a flaky test.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

from benchmarks.speed import main

# Optimizer-state bytes per parameter byte: one buffer per moment the method keeps.
EXPECTED_STATE = {"adam": 2, "m_svag": 2, "amsbound": 3, "ssd": 0}
EXPECTED_OPTAX_STATE = {"adam": 2, "m_svag": 2, "amsbound": 3, "ssd": 0}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    names = ",".join(EXPECTED_STATE)
    # the benchmark runs optax's own optimizers beside ours, and optax's are not
    # strict-safe (tests/conftest.py makes the tests strict)
    with jax.numpy_dtype_promotion("standard"):
        return main(["--quick", "--no-progress", "--out", str(out), "--optimizers", names])


def test_writes_markdown_and_json(results):
    md, js = results["files"]["markdown"], results["files"]["json"]
    assert md.endswith("-quick.md") and js.endswith("-quick.json")
    assert Path(md).is_file() and Path(js).is_file()
    with open(md) as f:
        text = f.read()
    for name in EXPECTED_STATE:
        assert f"| {name} |" in text
    with open(js) as f:
        loaded = json.load(f)
    assert loaded["meta"]["optimizers"] == list(EXPECTED_STATE)
    assert loaded["meta"]["quick"] is True


def test_memory_ratios_are_exact(results):
    mem = results["memory"]["optimizers"]
    assert set(mem) == set(EXPECTED_STATE)
    for name, expected in EXPECTED_STATE.items():
        assert mem[name]["state_per_param"] == expected, name
        assert mem[name]["optax_state_per_param"] == EXPECTED_OPTAX_STATE[name], name


def test_every_pair_measured_on_both_layouts(results):
    rows = results["speed"]
    assert {(r["optimizer"], r["layout"]) for r in rows} == {
        (n, layout) for n in EXPECTED_STATE for layout in ("flat", "tree")
    }
    for r in rows:
        # The floor kernel must move the optimizer's own bytes, state count included.
        assert r["state_buffers"] == EXPECTED_STATE[r["optimizer"]]
        p_bytes = 4 * r["n_params"]
        assert r["bytes_per_step"] == (3 + 2 * r["state_buffers"]) * p_bytes
        assert r["donated"], r["optimizer"]
