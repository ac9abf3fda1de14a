"""Bad input: invalid hyperparameters, mismatched trees, zero/NaN/huge gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_signvar as osv
from tests.registry import NAMES, OPTIMIZERS, make

INVALID = [
    (osv.m_sgd, {"learning_rate": 0.1, "beta": 1.0}, "beta"),
    (osv.m_sgd, {"learning_rate": 0.1, "beta": -0.1}, "beta"),
    (osv.m_ssd, {"learning_rate": 0.1, "beta": 1.5}, "beta"),
    (osv.svag, {"learning_rate": 0.1, "beta": 1.0}, "beta"),
    (osv.m_svag, {"learning_rate": 0.1, "beta": float("nan")}, "beta"),
    (osv.m_vassd, {"learning_rate": 0.1, "beta": 1.0}, "beta"),
    (osv.m_vassd, {"learning_rate": 0.1, "variance_adaptation": "bogus"}, "variance_adaptation"),
    (osv.adam, {"learning_rate": 0.1, "b1": 1.0}, "b1"),
    (osv.adam, {"learning_rate": 0.1, "b2": -0.5}, "b2"),
    (osv.adam, {"learning_rate": 0.1, "eps": -1e-8}, "eps"),
    (osv.amsgrad, {"learning_rate": 0.1, "b2": 1.0}, "b2"),
    (osv.adabound, {"gamma": -1e-3}, "gamma"),
    (osv.adabound, {"gamma": 1.0}, "gamma"),
    (osv.amsbound, {"final_lr": -0.1}, "final_lr"),
    (osv.adabound, {"weight_decay": -1.0}, "weight_decay"),
    (osv.adaboundw, {"weight_decay": -1.0}, "weight_decay"),
    (osv.adabound, {"learning_rate": optax.linear_schedule(0.0, 1e-3, 100)}, "learning_rate"),
    (osv.adaboundw, {"learning_rate": 0.0, "weight_decay": 0.1}, "learning_rate"),
] + [
    (OPTIMIZERS[n].factory, {**OPTIMIZERS[n].kwargs, "learning_rate": -1.0}, "learning_rate")
    for n in NAMES
]


@pytest.mark.parametrize("factory,kwargs,arg", INVALID)
def test_invalid_hyperparameters_raise_naming_the_argument(factory, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        factory(**kwargs)


def test_schedule_final_lr_allows_a_rate_schedule_starting_at_zero():
    warmup = optax.linear_schedule(0.0, 1e-3, 10)
    opt = osv.adabound(learning_rate=warmup, final_lr=optax.constant_schedule(0.1))
    params = jnp.ones(3)
    state = opt.init(params)
    u, state = opt.update(jnp.ones(3), state, params)
    np.testing.assert_array_equal(u, 0.0)  # rate 0 at step 0: no move, and no NaN
    u, state = opt.update(jnp.ones(3), state, params)
    assert np.all(np.isfinite(u)) and np.all(u < 0)


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_are_not_checked_when_traced(name):
    """Under jit the factory sees tracers; it must build, not raise."""
    entry = OPTIMIZERS[name]

    @jax.jit
    def one_step(lr, g):
        opt = entry.factory(**{**entry.kwargs, "learning_rate": lr})
        return opt.update(g, opt.init(g), g)[0]

    u = one_step(jnp.float32(entry.kwargs["learning_rate"]), jnp.ones(2))
    assert np.all(np.isfinite(u))


# SSD keeps no per-parameter state, so there is no tree to mismatch.
@pytest.mark.parametrize("name", [n for n in NAMES if n != "ssd"])
def test_mismatched_gradient_tree_is_a_clear_error(name):
    opt = make(name)
    state = opt.init({"a": jnp.ones(2), "b": jnp.ones(3)})
    with pytest.raises(ValueError):
        opt.update({"a": jnp.ones(2)}, state, {"a": jnp.ones(2)})


def test_mismatch_message_names_the_trees():
    opt = osv.m_svag(0.1)
    state = opt.init({"a": jnp.ones(2), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match="does not match the tree the optimizer state"):
        opt.update({"a": jnp.ones(2), "c": jnp.ones(3)}, state)


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradients_for_many_steps_never_give_nan(name):
    opt = make(name)
    params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}

    def body(state, _):
        u, state = opt.update(jax.tree.map(jnp.zeros_like, params), state, params)
        return state, u

    state, us = jax.jit(lambda s: jax.lax.scan(body, s, length=2000))(opt.init(params))
    for x in jax.tree.leaves((state, us)):
        assert np.all(np.isfinite(x))
    for u in jax.tree.leaves(us):
        np.testing.assert_array_equal(u, 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_nan_gradients_under_apply_if_finite_leave_state_untouched(name):
    opt = optax.apply_if_finite(make(name), max_consecutive_errors=5)
    params = jnp.ones(3)
    state = opt.init(params)
    u, state = opt.update(jnp.array([0.5, -1.0, 2.0]), state, params)
    before = state.inner_state
    u, state = opt.update(jnp.array([jnp.nan, 1.0, jnp.inf]), state, params)
    np.testing.assert_array_equal(u, 0.0)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.inner_state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(state.notfinite_count) == 1


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_second_moment_does_not_overflow(name, dtype):
    """|g| = 1000 squares to 1e6 > float16's max; the second moment is float32."""
    opt = make(name)
    params = jnp.ones(4, dtype)
    state = opt.init(params)
    for _ in range(3):
        u, state = jax.jit(opt.update)(jnp.full(4, 1000.0, dtype), state, params)
        assert u.dtype == dtype
        assert np.all(np.isfinite(np.asarray(u, np.float32)))
    for x in jax.tree.leaves(state):
        assert np.all(np.isfinite(np.asarray(x, np.float32)))


def test_second_moment_dtype_option():
    params = jnp.ones(2, jnp.bfloat16)
    state = osv.adam(0.1).init(params)[0]
    assert state.mu.dtype == jnp.bfloat16 and state.nu.dtype == jnp.float32
    state = osv.adam(0.1, mu_dtype=jnp.float32, nu_dtype=jnp.bfloat16).init(params)[0]
    assert state.mu.dtype == jnp.float32 and state.nu.dtype == jnp.bfloat16
    state = osv.m_svag(0.1).init(jnp.ones(2, jnp.float16))[0]
    assert state.mu.dtype == jnp.float16 and state.nu.dtype == jnp.float32
