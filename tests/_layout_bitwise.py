"""The packed layout equals the tree layout bit for bit (run by ``tests/test_layout.py``).

Collected only when named (its name does not start with ``test_``):
``tests/test_layout.py`` runs it in a fresh interpreter with
``XLA_FLAGS=--xla_cpu_max_isa=AVX``, where XLA:CPU emits no FMA, so that both
layouts round every product and sum alike (see the comment there). 300 steps of
every named optimizer (float32, bfloat16, ``None``, 0-d and unpacked large leaves)
and of every point of ``dissect`` (with the mini-batch variance where it takes one).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import pytest

import optax_signvar as osv
from tests.registry import NAMES, dissect_points, make, point_id
from tests.test_layout import LARGE, SHAPES, assert_same, trajectory, tree_of


@pytest.fixture(autouse=True)
def _without_fma():
    # imported (not run) by pytest's doctest collection, so the check is here, not at import
    if "--xla_cpu_max_isa=AVX" not in os.environ.get("XLA_FLAGS", ""):
        pytest.fail("run through tests/test_layout.py (it sets XLA_FLAGS=--xla_cpu_max_isa=AVX)")


@pytest.mark.parametrize("name", NAMES)
def test_named_optimizer_packed_equals_tree_bitwise(name):
    shapes = {**SHAPES, "half": (5, 3), "big": LARGE}
    params = tree_of(shapes, dtypes={"half": jnp.bfloat16})
    tree = trajectory(make(name), params)
    packed = trajectory(make(name, layout="packed"), params)
    assert_same(tree, packed)


@pytest.mark.parametrize("point", dissect_points(), ids=point_id)
def test_every_dissect_point_packed_equals_tree_bitwise(point):
    params = tree_of(SHAPES)
    variance = point["variance"] == "minibatch"
    tree = trajectory(osv.dissect(1e-2, **point), params, variance=variance)
    packed = trajectory(osv.dissect(1e-2, **point, layout="packed"), params, variance=variance)
    assert_same(tree, packed)
