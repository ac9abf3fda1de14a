"""Each building block on its own."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optax_signvar import blocks

floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32)
arrays = hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=5), elements=floats)


def test_ema_both_orders_and_dtype():
    g = {"a": jnp.array([2.0, -1.0]), "b": None}
    m = {"a": jnp.array([1.0, 1.0]), "b": None}
    out = blocks.ema(g, m, 0.75)
    np.testing.assert_allclose(out["a"], [0.75 + 0.5, 0.75 - 0.25])
    assert out["b"] is None
    out2 = blocks.ema(g, m, 0.5, order=2)
    np.testing.assert_allclose(out2["a"], [2.5, 1.0])
    # a float32 accumulator squares bfloat16/float16 gradients without overflow
    big = jnp.array([1000.0], jnp.float16)
    v = blocks.ema(big, jnp.zeros(1, jnp.float32), 0.999, order=2)
    assert v.dtype == jnp.float32 and np.isfinite(v).all()
    with pytest.raises(ValueError, match="order"):
        blocks.ema(g, m, 0.5, order=3)


def test_debias_denominator_is_one_minus_power_accurately():
    # within a few float32 ulps of the float64 value; float32 1 - 0.999**t is
    # off by up to ~1e-5
    for beta in (0.0, 0.5, 0.9, 0.999):
        for t in (1, 2, 10, 1000):
            np.testing.assert_allclose(blocks.debias_denominator(beta, t), 1 - beta**t, rtol=5e-7)
    # the classic port bug (beta**t instead of 1 - beta**t) would give 0.999 here
    np.testing.assert_allclose(blocks.debias_denominator(0.999, 1), 1e-3, rtol=1e-6)
    m = {"x": jnp.array([0.1, 0.2])}
    np.testing.assert_allclose(
        blocks.bias_correction(m, blocks.debias_denominator(0.9, 1))["x"], [1.0, 2.0], rtol=1e-6
    )


def test_bias_correction_keeps_bfloat16():
    m = jnp.array([0.1], jnp.bfloat16)
    assert blocks.bias_correction(m, blocks.debias_denominator(0.999, 3)).dtype == jnp.bfloat16


def test_sign_and_running_max():
    np.testing.assert_array_equal(blocks.sign(jnp.array([-3.0, 0.0, 2.0])), [-1, 0, 1])
    np.testing.assert_array_equal(
        blocks.running_max(jnp.array([1.0, 5.0]), jnp.array([2.0, 3.0])), [2.0, 5.0]
    )


def test_rho_limits_and_variance_scale():
    for beta in (0.5, 0.9, 0.99):
        np.testing.assert_allclose(blocks.relative_variance_rho(beta, 1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(
            blocks.relative_variance_rho(beta, 100_000), (1 - beta) / (1 + beta), rtol=1e-5
        )
        # rho_t is the variance of a debiased EMA of unit-variance i.i.d. samples
        t = 7
        w = (1 - beta) * beta ** np.arange(t) / (1 - beta**t)
        np.testing.assert_allclose(blocks.relative_variance_rho(beta, t), np.sum(w**2), rtol=1e-5)
        assert blocks.variance_scale(beta, 1) == 0
        np.testing.assert_allclose(
            blocks.variance_scale(beta, 5), 1 / (1 - blocks.relative_variance_rho(beta, 5))
        )
    # beta = 0 keeps one sample: no variance can be estimated, the scale is 0 (not inf)
    assert blocks.variance_scale(0.0, 10) == 0


def test_variance_estimate_clips_negative_differences():
    s = blocks.variance_estimate(jnp.array([2.0, 1.0]), jnp.array([3.0, 5.0]), 2.0)
    np.testing.assert_allclose(s, [0.0, 8.0])


@settings(max_examples=60, deadline=None)
@given(arrays, st.floats(0, 1e6, width=32))
def test_factors_are_in_unit_interval(d, var_scale):
    var = jnp.abs(jnp.asarray(d)) * var_scale
    for f in (
        blocks.variance_factor(d, var),
        blocks.sign_variance_factor(d, var, "optimal"),
        blocks.sign_variance_factor(d, var, "adam"),
    ):
        f = np.asarray(f)
        assert np.all(np.isfinite(f)) and np.all((f >= 0) & (f <= 1))


def test_factor_values():
    d = jnp.array([1.0, 1.0, 0.0, 2.0])
    var = jnp.array([0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(blocks.variance_factor(d, var), [1.0, 0.5, 0.0, 0.8])
    eta = np.sqrt(np.array([0.0, 1.0, 0.0, 0.25]))
    with np.errstate(divide="ignore"):
        expected = [1.0, math.erf(1 / math.sqrt(2)), 0.0, math.erf(1 / (math.sqrt(2) * eta[3]))]
    np.testing.assert_allclose(blocks.sign_variance_factor(d, var, "optimal"), expected, rtol=1e-6)
    np.testing.assert_allclose(
        blocks.sign_variance_factor(d, var, "adam"), [1.0, 2**-0.5, 0.0, 0.8**0.5], rtol=1e-6
    )
    with pytest.raises(ValueError, match="variance_adaptation"):
        blocks.sign_variance_factor(d, var, "bogus")


def test_erf_factor_float32_matches_float64_erf():
    """On a CPU the float32 factor evaluates erf's rational approximation on d^2 / s
    directly; it must be as accurate as jax.scipy.special.erf, never exceed 1, and be
    exactly 1 without noise and exactly 0 without signal."""
    q = np.concatenate([np.logspace(-30, 4, 40_000), np.linspace(0.0, 20.0, 40_000)])
    q = q.astype(np.float32)
    with np.errstate(divide="ignore"):
        d, var = np.ones_like(q), np.float32(0.5) / q  # q = d^2 / (2 var)
    f = np.asarray(blocks.sign_variance_factor(d, var, "optimal"), np.float64)
    # the q the factor sees is 1 / (2 var) of the float32 var, not the q above
    exact = np.array([math.erf(math.sqrt(0.5 / v)) for v in var.astype(np.float64)])
    # jax.scipy.special.erf is within 3e-7 here; op by op (no FMA contraction) ours
    # reaches 4.4e-7 near q = 11. 5e-7 is about 4 float32 ulps of 1.0.
    assert np.max(np.abs(f - exact)) < 5e-7
    jitted = jax.jit(blocks.sign_variance_factor)(d, var)
    assert np.max(np.abs(np.asarray(jitted, np.float64) - exact)) < 5e-7
    # the form other platforms (GPU, TPU) use: XLA's erf, capped at 1
    xla = np.asarray(blocks._erf_of_sqrt_half(jnp.float32(1.0) / var), np.float64)
    assert np.max(np.abs(xla - exact)) < 5e-7 and np.all(xla <= 1.0)
    assert np.all(f <= 1.0) and np.all(f >= 0.0)
    edge = blocks.sign_variance_factor(jnp.array([3.0, 0.0, 0.0]), jnp.array([0.0, 0.0, 2.0]))
    np.testing.assert_array_equal(edge, [1.0, 0.0, 0.0])
    with jax.enable_x64(True):
        f64 = blocks.sign_variance_factor(jnp.ones(3, jnp.float64), jnp.array([0.5, 2.0, 8.0]))
        assert f64.dtype == jnp.float64
        np.testing.assert_allclose(f64, [math.erf(1.0), math.erf(0.5), math.erf(0.25)], rtol=1e-14)


def test_sign_factors_fall_from_one_to_zero_with_relative_variance():
    """Fig. 3 of Dissecting Adam: both factors decrease in eta, from 1 to 0."""
    eta = jnp.linspace(0.01, 50.0, 500)
    d, var = jnp.ones_like(eta), eta**2
    for form in ("optimal", "adam"):
        f = np.asarray(blocks.sign_variance_factor(d, var, form))
        assert np.all(np.diff(f) <= 0)
        assert f[0] > 0.99 and f[-1] < 0.03


def test_dynamic_bounds_and_clip():
    lo, hi = blocks.dynamic_bounds(0.1, 1 - 0.999, 1)
    # the paper's bound functions with gamma = 1 - b2
    np.testing.assert_allclose(lo, 0.1 - 0.1 / ((1 - 0.999) * 1 + 1), rtol=1e-5)
    np.testing.assert_allclose(hi, 0.1 + 0.1 / ((1 - 0.999) * 1), rtol=1e-5)
    lo, hi = blocks.dynamic_bounds(0.1, 1e-3, 10**9)
    np.testing.assert_allclose([lo, hi], [0.1, 0.1], rtol=1e-5)
    np.testing.assert_allclose(
        blocks.clip_rate(jnp.array([0.0, 0.05, 1.0]), 0.01, 0.1), [0.01, 0.05, 0.1]
    )


def test_normalisations():
    np.testing.assert_allclose(blocks.rms_normalize(jnp.array([3.0]), jnp.array([4.0]), 1.0), [1.0])
    np.testing.assert_allclose(blocks.adaptive_rate(jnp.array([9.0]), 1.0, 2.0), [0.5])
    out = blocks.rms_normalize(jnp.array([1.0], jnp.bfloat16), jnp.array([1.0], jnp.float32), 0.0)
    assert out.dtype == jnp.float32


def test_tree_map_reports_mismatched_trees():
    with pytest.raises(ValueError, match="does not match"):
        blocks.tree_map(lambda a, b: a + b, {"a": jnp.ones(1)}, {"b": jnp.ones(1)})


def test_blocks_jit_and_keep_none_leaves():
    tree = {"a": jnp.ones(2), "frozen": None}
    out = jax.jit(lambda g, m: blocks.ema(g, m, 0.9))(tree, tree)
    assert out["frozen"] is None
