"""The optax contract over the whole space: every valid point of ``dissect``.

``tests/test_conformance.py`` holds the 14 named optimizers to the full alias
contract; this module holds every one of the 80 points ``dissect`` accepts to
its cheap core, one test per point: jit without recompilation, extra
arguments, updates in the gradients' dtype, a stable state, a descent first
step, ``inject_hyperparams`` equal to the plain optimizer, a constant schedule
equal to the float, and ``MultiSteps`` (all under strict dtype promotion,
which ``conftest.py`` sets).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_signvar as osv
from tests.registry import N_VALID_POINTS, all_combinations, dissect_points, point_id

POINTS = dissect_points()
RATE = 0.05


def test_the_space_is_what_the_registry_says():
    # Every combination either constructs or is rejected with the reason.
    rejected = 0
    for point in all_combinations():
        try:
            osv.Dissection(**point)
        except ValueError as err:
            assert len(str(err)) > 40, point  # a reason, not a bare "invalid"
            rejected += 1
    assert len(POINTS) == N_VALID_POINTS
    assert rejected + len(POINTS) == len(all_combinations())


def _tree(dtype_b):
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), "b": jnp.zeros(2, dtype_b)}
    grads = {
        "w": jnp.array([[0.5, -1.0], [2.0, 0.0], [-0.3, 0.7]]),
        "b": jnp.array([1.0, -0.25], dtype_b),
    }
    return params, grads


def _extra(point, grads):
    # a mini-batch variance where the point reads one; an unknown extra argument always
    extra = {"unexpected_extra_arg": 1}
    if point["variance"] == "minibatch":
        extra["grad_variance"] = jax.tree.map(lambda g: (0.1 * g * g).astype(g.dtype), grads)
    return extra


def _dissect(point, learning_rate=RATE, **kwargs):
    return osv.dissect(learning_rate, **point, **kwargs)


def _assert_close(a, b, rtol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol)


@pytest.mark.parametrize("point", POINTS, ids=point_id)
def test_point_contract(point):
    opt = _dissect(point)
    params, grads = _tree(jnp.bfloat16)
    extra = _extra(point, grads)
    state = opt.init(params)
    spec = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    update = jax.jit(opt.update)
    first, state = update(grads, state, params, **extra)
    second, state = update(grads, state, params, **extra)
    assert update._cache_size() == 1, "the update recompiled on its second call"
    assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == spec
    for u, g in zip(jax.tree.leaves(second), jax.tree.leaves(grads), strict=True):
        assert u.dtype == g.dtype
        assert np.all(np.isfinite(np.asarray(u, np.float32)))
    # every point's first step goes downhill: <u, g> < 0
    inner = sum(
        float(jnp.vdot(u.astype(jnp.float32), g.astype(jnp.float32)))
        for u, g in zip(jax.tree.leaves(first), jax.tree.leaves(grads), strict=True)
    )
    assert inner < 0


@pytest.mark.parametrize("point", POINTS, ids=point_id)
def test_point_inject_and_schedule(point):
    params, grads = _tree(jnp.float32)
    extra = _extra(point, grads)

    def three_steps(opt):
        state, out = opt.init(params), []
        for _ in range(3):
            u, state = opt.update(grads, state, params, **extra)
            out.append(u)
        return out

    plain = three_steps(_dissect(point))
    injected = optax.inject_hyperparams(osv.dissect, static_args=tuple(point))(RATE, **point)
    # float32 hyperparameters (b2 = 0.999 rounds to 0.99899997): 1e-4, as optax's own test
    _assert_close(plain, three_steps(injected), rtol=1e-4)
    _assert_close(plain, three_steps(_dissect(point, optax.constant_schedule(RATE))), rtol=1e-6)


# optax.MultiSteps divides its float accumulator by an int32 count itself
@pytest.mark.standard_promotion
@pytest.mark.parametrize("point", POINTS, ids=point_id)
def test_point_multisteps_first_update_is_zero(point):
    params, grads = _tree(jnp.float32)
    extra = _extra(point, grads)
    accumulated = optax.MultiSteps(_dissect(point), every_k_schedule=2)
    u, _ = accumulated.update(grads, accumulated.init(params), params, **extra)
    for x in jax.tree.leaves(u):
        np.testing.assert_array_equal(x, jnp.zeros_like(x))
