"""Smoke test of ``python -m benchmarks.moments``: the ``--quick`` run end to end, the
report's structure, and that ``method="auto"`` and ``method="vmap"`` give the same moments.

No timing is asserted: the CI machine is shared and noisy (tests/test_benchmark_smoke.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from benchmarks.moments import main
from benchmarks.moments.measure import kind_shares, leaf_table, max_rel_diff
from benchmarks.moments.models import KINDS, MODELS, build
from benchmarks.moments.report import CATEGORIES
from benchmarks.moments.run import QUICK_METHODS, QUICK_MODELS


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("moments")
    return main(["--quick", "--out", str(out)])


def test_writes_markdown_and_json(results):
    md, js = Path(results["files"]["markdown"]), Path(results["files"]["json"])
    assert md.name.startswith("moments-") and md.name.endswith("-quick.md")
    assert js.name.startswith("moments-") and js.name.endswith("-quick.json")
    loaded = json.loads(js.read_text())
    meta = loaded["meta"]
    assert meta["quick"] is True and meta["api_missing"] is None
    for key in ("jax", "backend", "cpu_model", "cores", "load_avg", "command"):
        assert key in meta
    assert list(loaded["models"]) == list(QUICK_MODELS)
    text = md.read_text()
    for heading in (
        "## Targets (issue 17)",
        "## Time and memory against the gradient of the mean loss",
        "## Parameters on each path, per layer kind",
        "## Why the vmap path took 200x: profile on the MLP",
    ):
        assert heading in text
    assert {(t["model"], t["figure"]) for t in loaded["targets"]} == {
        (m, f) for m in ("mlp", "cnn") for f in ("time", "memory")
    }


def test_every_method_measured(results):
    for name, m in results["models"].items():
        assert m["errors"] == {}, name
        assert set(m["methods"]) == set(QUICK_METHODS)
        for r in m["methods"].values():
            assert r["ms"] > 0 and r["ratio"] > 0
            assert r["memory"]["total"] > 0 and r["memory_ratio"] > 0
            assert len(r["round_ms"]) == results["meta"]["rounds"]


def test_methods_give_the_same_moments(results):
    for name, m in results["models"].items():
        a = m["agreement"]["auto"]
        assert a["mean"] < 1e-5 and a["variance"] < 1e-5, (name, a)


def test_every_leaf_has_a_path_and_a_kind(results):
    for name, m in results["models"].items():
        assert m["paths_error"] is None
        assert sum(leaf["size"] for leaf in m["leaves"]) == m["n_params"]
        for leaf in m["leaves"]:
            assert leaf["kind"] in KINDS
            assert leaf["path"].split(":")[0] in CATEGORIES, (name, leaf)
        for kind, k in m["kinds"].items():
            assert kind in KINDS
            assert sum(k["shares"].values()) == pytest.approx(1.0), (name, kind)


def test_mlp_dense_weights_are_factored(results):
    # The identity: a dense layer without a sequence axis needs no per-example
    # gradient (Sum g^2 = (x^2)^T (delta^2)).
    leaves = {leaf["leaf"]: leaf for leaf in results["models"]["mlp"]["leaves"]}
    for layer in ("fc1", "fc2", "fc3"):
        assert leaves[f"{layer}/w"]["path"].startswith("factored"), leaves[f"{layer}/w"]


def test_profile_structure(results):
    p = results["profile"]
    rows = p["components"]["rows"]
    for name in ("grad", "per_example_grads", "reductions_old", "reductions_matvec", "vmap"):
        assert rows[name]["ms"] > 0
    assert p["no_ynn_reduce"] is None  # --quick runs no child process
    assert set(p["thunks"]) == {"vmap_old", "per_example_grads"}
    for t in p["thunks"].values():
        assert "top" in t or "error" in t  # the profiler's reader is private to jaxlib


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_with_kinds(name):
    # The models the quick run skips: one example's loss is finite and every leaf has a kind.
    model = build(name, quick=True)
    example = jax.tree.map(lambda x: x[0], model.batch)
    assert np.isfinite(float(model.loss_fn(model.params, example)))
    shares = kind_shares(leaf_table(model, None))
    assert sum(k["params"] for k in shares.values()) == model.n_params


def test_max_rel_diff_floors_exact_zeros():
    ref = {"big": np.ones(3), "zero": np.zeros(2)}
    noisy = {"big": np.ones(3), "zero": np.full(2, 1e-9)}
    assert max_rel_diff(noisy, ref) == pytest.approx(1e-9 / 1e-4)
    assert max_rel_diff({"a": np.array([1.0, 2.2])}, {"a": np.array([1.0, 2.0])}) == (
        pytest.approx(0.1)
    )
