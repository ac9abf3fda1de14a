"""Smoke test of ``python -m benchmarks.trees``: leaf counts of the real architectures, and
the ``--quick`` run end to end on two tiny models.

No timing is asserted: the CI machine is shared and noisy (tests/test_benchmark_smoke.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

from benchmarks.trees import main
from benchmarks.trees import shapes as S
from benchmarks.trees.models import SPEC_BY_NAME
from benchmarks.trees.variants import packed_api_missing

# name -> (leaves, params at width 1), as counted from the architectures (shapes.py says how)
ARCHITECTURES = {
    "resnet18": (62, 11_689_512),
    "resnet50": (161, 25_557_032),
    "vit_b16": (152, 86_567_656),
    "gpt2": (148, 124_439_808),
    "mlp200": (200, 1_010_000),
    "mlp1000": (1000, 820_000),
    "large40": (40, 10_485_760),
}
RUN_MODELS = ("large40", "mlp200")


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_leaf_counts_at_every_width(name):
    spec = SPEC_BY_NAME[name]
    leaves, params = ARCHITECTURES[name]
    full = spec.shapes(1.0)
    assert (len(full), S.n_params(full)) == (leaves, params)
    for width in (spec.width, spec.quick_width):
        shapes = spec.shapes(width)
        assert len(shapes) == leaves
        assert S.n_params(shapes) <= params


def test_block_structure():
    r18 = S.resnet18_shapes()
    assert sum(k.endswith("/conv") for k in r18) == 20  # 17 convs + 3 downsample convs
    assert sum("bn_" in k for k in r18) == 40
    gpt2 = S.gpt2_small_shapes()
    assert gpt2["wte"] == (50257, 768) and gpt2["h/00/attn/c_attn/w"] == (768, 2304)
    vit = S.vit_b16_shapes()
    assert vit["pos_embed"] == (1, 197, 768) and vit["blocks/11/mlp/fc2/w"] == (3072, 768)
    assert set(S.large_leaves_shapes().values()) == {(512, 512)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("trees")
    argv = ["--quick", "--no-progress", "--out", str(out), "--rounds", "1", "--steps", "1"]
    # optax's optimizers are not strict-safe (tests/conftest.py makes the tests strict)
    with jax.numpy_dtype_promotion("standard"):
        return main([*argv, "--models", *RUN_MODELS, "--optimizers", "adam"])


def test_writes_markdown_and_json(results):
    md, js = Path(results["files"]["markdown"]), Path(results["files"]["json"])
    assert md.name.startswith("trees-") and md.name.endswith("-quick.md")
    assert js.name.startswith("trees-") and js.name.endswith("-quick.json")
    text = md.read_text()
    loaded = json.loads(js.read_text())
    assert loaded["meta"]["quick"] is True
    assert list(loaded["models"]) == list(RUN_MODELS)
    for name in RUN_MODELS:
        model = loaded["models"][name]
        assert model["n_leaves"] == ARCHITECTURES[name][0]
        assert f"## {model['title']}: {model['n_leaves']} leaves" in text
    assert "## Targets" in text


def test_every_row_measured_and_donated(results):
    packed = packed_api_missing() is None
    assert (results["meta"]["packed_missing"] is None) == packed
    expected = {"sgd (floor)", "optax.adam", "optax.flatten(optax.adam)", "adam [tree]"}
    if packed:
        expected |= {"adam [packed]", "sgd [packed params]", "optax.adam [packed params]"}
        expected |= {"adam [packed params]"}
    for model in results["models"].values():
        rows = {r["variant"]: r for r in model["rows"]}
        assert set(rows) == expected
        for r in rows.values():
            assert r["donated"], r["variant"]
            assert r["step_ms"] > 0 and r["opt_ms"] > 0 and r["compile_s"] > 0
        assert rows["optax.adam"]["step_cost_vs_adam"] == pytest.approx(1.0)
    targets = {(t["target"], t["variant"]) for t in results["targets"]}
    if packed:
        assert ("cost_200", "adam [packed]") in targets
        assert ("cost_200", "adam [packed params]") in targets
