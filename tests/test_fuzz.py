"""Property tests over random pytrees (hypothesis).

Shapes include scalars and empty arrays; dtypes bfloat16, float16 and float32
(float64 with ``OPTAX_SIGNVAR_FUZZ_X64=1``); values are zeros or magnitudes from
1e-30 up to the largest whose square the second moment can hold in float32
(1e18): a larger gradient overflows ``nu`` to inf here as in optax and PyTorch.
The budget is small by default; ``OPTAX_SIGNVAR_FUZZ_EXAMPLES=500`` runs more.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optax_signvar as osv
from tests.registry import NAMES, make

EXAMPLES = int(os.environ.get("OPTAX_SIGNVAR_FUZZ_EXAMPLES", "10"))
DTYPES = ["bfloat16", "float16", "float32"]
if os.environ.get("OPTAX_SIGNVAR_FUZZ_X64") == "1":
    jax.config.update("jax_enable_x64", True)
    DTYPES.append("float64")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

shapes = st.lists(st.integers(0, 3), min_size=0, max_size=2).map(tuple)


def _max_magnitude(dtype: str) -> float:
    # float16's range ends at 65504; elsewhere the float32 second moment is the limit
    return 6e4 if dtype == "float16" else 1e18


@st.composite
def gradient_streams(draw, steps: int = 4):
    """A dtype, a dict of leaves of random shapes, and a few gradient trees for it."""
    dtype = draw(st.sampled_from(DTYPES))
    leaf_shapes = draw(st.lists(shapes, min_size=1, max_size=3))
    top = _max_magnitude(dtype)
    exponent = st.floats(-30, np.log10(top))
    grads = []
    for _ in range(steps):
        tree = {}
        for i, shape in enumerate(leaf_shapes):
            n = int(np.prod(shape))
            kind = draw(st.sampled_from(["zeros", "same", "mixed"]))
            if kind == "zeros":
                values = np.zeros(n)
            elif kind == "same":
                values = np.full(n, 10 ** draw(exponent)) * draw(st.sampled_from([-1, 1]))
            else:
                exps = draw(st.lists(exponent, min_size=n, max_size=n))
                signs = draw(st.lists(st.sampled_from([-1.0, 0.0, 1.0]), min_size=n, max_size=n))
                values = np.asarray(signs) * 10 ** np.asarray(exps, dtype=np.float64)
            tree[f"l{i}"] = jnp.asarray(values.reshape(shape), dtype)
        grads.append(tree)
    return dtype, grads


def _all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x, np.float64)))) for x in jax.tree.leaves(tree))


def _run(opt, grads):
    params = jax.tree.map(jnp.zeros_like, grads[0])
    state = opt.init(params)
    update = jax.jit(opt.update)
    out = []
    for g in grads:
        u, state = update(g, state, params)
        out.append(u)
    return out, state


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(stream=gradient_streams())
def test_finite_gradients_give_finite_updates_and_state(name, stream):
    dtype, grads = stream
    updates, state = _run(make(name), grads)
    assert _all_finite(updates), f"non-finite update ({dtype})"
    assert _all_finite(state), f"non-finite state ({dtype})"
    for u, g in zip(updates, grads, strict=True):
        assert jax.tree.map(lambda a: a.dtype, u) == jax.tree.map(lambda a: a.dtype, g)


@pytest.mark.parametrize("factory", [osv.ssd, osv.m_ssd])
@FUZZ
@given(stream=gradient_streams())
def test_sign_methods_move_by_the_rate_or_not_at_all(factory, stream):
    _, grads = stream
    updates, _ = _run(factory(0.25), grads)
    for u in updates:
        for x in jax.tree.leaves(u):
            assert set(np.unique(np.asarray(x, np.float64))) <= {-0.25, 0.0, 0.25}


# name -> (unit-rate optimizer, bound on |u| from the gradient and the debiased momentum)
FACTORS = {
    "m_svag": (lambda: osv.m_svag(1.0), lambda g, mh: np.abs(mh)),
    "svag": (lambda: osv.svag(1.0), lambda g, mh: np.abs(g)),
    "m_vassd": (lambda: osv.m_vassd(1.0), lambda g, mh: np.ones_like(g)),
    "m_vassd_adam": (
        lambda: osv.m_vassd(1.0, variance_adaptation="adam"),
        lambda g, mh: np.ones_like(g),
    ),
}


@pytest.mark.parametrize("name", sorted(FACTORS))
@FUZZ
@given(stream=gradient_streams())
def test_variance_factor_is_in_the_unit_interval(name, stream):
    """At unit rate |u| <= |direction|, and the logged factors lie in [0, 1]."""
    _, grads = stream
    factory, bound = FACTORS[name]
    opt = factory()
    params = jax.tree.map(jnp.zeros_like, grads[0])
    state = opt.init(params)
    for g in grads:
        u, state = opt.update(g, state, params)
        d = state[0]
        for k in g:
            mu_hat = np.asarray(d.mu[k], np.float64) / (1 - 0.9 ** int(d.count))
            limit = bound(np.asarray(g[k], np.float64), mu_hat)
            # 1% for rounding in 16-bit dtypes
            assert np.all(np.abs(np.asarray(u[k], np.float64)) <= limit * 1.01 + 1e-30)
        diag = osv.diagnostics(state)
        for key in ("gamma_mean", "gamma_q10", "gamma_q90"):
            value = float(diag[key])
            assert np.isnan(value) or 0.0 <= value <= 1.0


@pytest.mark.parametrize("factory", [osv.adabound, osv.amsbound])
@FUZZ
@given(stream=gradient_streams(steps=6))
def test_adabound_rate_stays_within_its_bounds(factory, stream):
    dtype, grads = stream
    if dtype != "float32":
        grads = [jax.tree.map(lambda x: x.astype(jnp.float32), g) for g in grads]
    lr, final_lr, gamma = 1e-2, 0.1, 0.05
    opt = factory(lr, final_lr=final_lr, gamma=gamma)
    params = jax.tree.map(jnp.zeros_like, grads[0])
    state = opt.init(params)
    for g in grads:
        u, state = opt.update(g, state, params)
        d = state[1]
        t = int(d.count)
        lo, hi = final_lr * gamma * t / (gamma * t + 1), final_lr * (1 + 1 / (gamma * t))
        for k in g:
            m = np.asarray(d.mu[k], np.float64)
            moving = m != 0
            rate = np.abs(np.asarray(u[k], np.float64)[moving] / m[moving])
            assert np.all(rate >= lo * (1 - 1e-5)) and np.all(rate <= hi * (1 + 1e-5))


def test_count_saturates_instead_of_wrapping():
    top = jnp.iinfo(jnp.int32).max
    for name in NAMES:
        opt = make(name)
        params = jnp.ones(2)
        state = opt.init(params)
        state = jax.tree.map(
            lambda x: jnp.full_like(x, top) if x.dtype == jnp.int32 and x.ndim == 0 else x, state
        )
        u, new = opt.update(jnp.ones(2), state, params)
        counts = [x for x in jax.tree.leaves(new) if x.dtype == jnp.int32 and x.ndim == 0]
        assert counts and all(int(c) == top for c in counts), name
        assert np.all(np.isfinite(np.asarray(u)))


def test_gradient_clipping_keeps_overflowing_gradients_finite():
    """Beyond the second moment's range (|g| > ~1e19 in float32) the remedy is clipping."""
    opt = optax.chain(optax.clip_by_global_norm(1.0), osv.m_svag(0.1))
    params = jnp.ones(3)
    state = opt.init(params)
    u, state = opt.update(jnp.array([1e30, -1e25, 3.0]), state, params)
    assert _all_finite(u) and _all_finite(state)
