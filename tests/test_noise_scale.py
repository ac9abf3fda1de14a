"""optax_signvar.gradient_noise_statistics and its keys in diagnostics.

The references are float64 numpy on the same inputs: per-example gradients drawn
here, their moments computed here (mean, and the unbiased variance of the mean,
``var(ddof=1) / B``), so the tests do not depend on ``per_example_grad_moments``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_signvar as osv
from optax_signvar.monitoring import diagnostics
from optax_signvar.noise_scale import gradient_noise_statistics

GLOBAL_KEYS = {"b_simple", "trace_sigma", "grad_sq_unbiased", "grad_snr", "batch_gamma_mean"}


def _moments(per_example: dict) -> tuple[dict, dict]:
    """Mean and unbiased variance of the mean over axis 0, float64 numpy."""
    b = next(iter(per_example.values())).shape[0]
    mean = {k: v.mean(axis=0) for k, v in per_example.items()}
    var = {
        k: (np.abs(v - mean[k]) ** 2).sum(axis=0) / (b * (b - 1)) for k, v in per_example.items()
    }
    return mean, var


def _reference(mean: dict, var: dict, b: int) -> dict[str, float]:
    """The statistics from their definitions, float64 numpy, leaves keyed by name."""
    g2 = {k: float(np.sum(np.abs(np.asarray(v, np.complex128)) ** 2)) for k, v in mean.items()}
    s = {k: float(np.sum(np.asarray(v, np.float64))) for k, v in var.items()}
    gamma_sum, active = {}, {}
    for k in mean:
        m2 = np.abs(np.asarray(mean[k], np.complex128)) ** 2
        v = np.asarray(var[k], np.float64)
        on = (m2 > 0) | (v > 0)
        gamma_sum[k] = float(np.sum(np.where(on, m2 / np.where(on, m2 + v, 1.0), 0.0)))
        active[k] = float(on.sum())
    total_g2, total_s = sum(g2.values()), sum(s.values())
    out = {
        "trace_sigma": b * total_s,
        "grad_sq_unbiased": total_g2 - total_s,
        "b_simple": b * total_s / (total_g2 - total_s),
        "grad_snr": total_g2 / total_s,
        "batch_gamma_mean": sum(gamma_sum.values()) / sum(active.values()),
    }
    with np.errstate(divide="ignore", invalid="ignore"):  # IEEE: x/0 = inf, 0/0 = NaN
        for k in mean:
            out[f"grad_snr/{k}"] = float(np.float64(g2[k]) / s[k])
            out[f"batch_gamma_mean/{k}"] = float(np.float64(gamma_sum[k]) / active[k])
    return out


def _per_example(rng: np.random.Generator, b: int) -> dict:
    """Per-example gradients of a small 'model': signal clear in some leaves, buried in others;
    ``w`` has a coordinate that never gets a gradient (inactive)."""
    w = rng.normal(0.5, 1.0, (b, 4, 3))
    w[:, 0, 0] = 0.0
    return {
        "w": w,
        "bias": rng.normal(2.0, 0.5, (b, 3)),
        "scale": rng.normal(0.0, 3.0, (b, 5)),
    }


def _check_close(got: dict, want: dict, rtol: float) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(got[key], np.float64), value, rtol=rtol, err_msg=key)


@pytest.mark.parametrize(
    "dtype, rtol", [("float32", 1e-6), ("float64", 1e-12), ("bfloat16", 1e-6), ("float16", 1e-6)]
)
def test_matches_float64_numpy(dtype, rtol):
    b = 6
    per_example = _per_example(np.random.default_rng(0), b)
    mean, var = _moments(per_example)
    with jax.enable_x64(dtype == "float64"):
        g = {k: jnp.asarray(v, dtype) for k, v in mean.items()}
        s = {k: jnp.asarray(v, dtype) for k, v in var.items()}
        got = gradient_noise_statistics(g, s, b)
        out_dtype = jnp.float64 if dtype == "float64" else jnp.float32
        assert all(v.dtype == out_dtype and v.shape == () for v in got.values())
        # the reference on the inputs as the function saw them (rounded to dtype)
        want = _reference(
            {k: np.asarray(v, np.float64) for k, v in g.items()},
            {k: np.asarray(v, np.float64) for k, v in s.items()},
            b,
        )
    assert 2.0 < want["grad_snr"] < 100.0  # b_simple is well conditioned here
    assert 0.0 < want["batch_gamma_mean/w"] < 1.0
    _check_close(got, want, rtol)


def test_complex_leaves_use_abs_squared():
    b = 5
    rng = np.random.default_rng(1)
    per_example = {
        "z": rng.normal(1.0, 0.7, (b, 6)) + 1j * rng.normal(-0.5, 0.7, (b, 6)),
        "x": rng.normal(0.3, 1.0, (b, 2)),
    }
    mean, var = _moments(per_example)
    g = {"z": jnp.asarray(mean["z"], jnp.complex64), "x": jnp.asarray(mean["x"], jnp.float32)}
    s = {k: jnp.asarray(v, jnp.float32) for k, v in var.items()}
    got = gradient_noise_statistics(g, s, b)
    want = _reference(
        {k: np.asarray(v) for k, v in g.items()}, {k: np.asarray(v) for k, v in s.items()}, b
    )
    assert all(v.dtype == jnp.float32 for v in got.values())
    _check_close(got, want, 1e-6)


@pytest.mark.parametrize("size", [0, 1, 1024, 1025, 100_003])
def test_leaf_sizes(size):
    # leaves are summed in rows of 1024, the last padded with zeros: sizes around it
    rng = np.random.default_rng(size)
    g = {"big": rng.normal(1.0, 0.3, size), "small": rng.normal(0.5, 0.2, 3)}
    s = {"big": rng.uniform(0.0, 0.1, size), "small": rng.uniform(0.0, 0.1, 3)}
    s["big"][::7] = 0.0
    g["big"][::7] = 0.0  # inactive coordinates, also in the padded row
    g32 = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
    s32 = {k: jnp.asarray(v, jnp.float32) for k, v in s.items()}
    got = jax.jit(gradient_noise_statistics, static_argnums=2)(g32, s32, 16)
    want = _reference(
        {k: np.asarray(v, np.float64) for k, v in g32.items()},
        {k: np.asarray(v, np.float64) for k, v in s32.items()},
        16,
    )
    if size <= 1:  # an empty leaf, or one inactive coordinate: 0/0
        assert math.isnan(float(got["grad_snr/big"])) and math.isnan(want["grad_snr/big"])
    _check_close(got, want, 1e-6)


def test_float16_squares_do_not_overflow():
    # 300**2 = 9e4 is past float16's largest finite value (65504): summed in float32
    g = {"w": jnp.full(4, 300.0, jnp.float16)}
    s = {"w": jnp.full(4, 1000.0, jnp.float16)}
    got = gradient_noise_statistics(g, s, 10)
    assert got["grad_snr"].dtype == jnp.float32
    np.testing.assert_allclose(float(got["grad_snr"]), 90.0, rtol=1e-6)
    np.testing.assert_allclose(float(got["grad_sq_unbiased"]), 4 * (9e4 - 1e3), rtol=1e-6)


def test_b_simple_is_batch_over_snr_minus_one():
    per_example = _per_example(np.random.default_rng(2), 8)
    mean, var = _moments(per_example)
    with jax.enable_x64(True):
        got = gradient_noise_statistics(mean, var, 8)
        np.testing.assert_allclose(
            float(got["b_simple"]), 8 / (float(got["grad_snr"]) - 1), rtol=1e-12
        )


def test_unbiased_by_monte_carlo():
    """E[grad_sq_unbiased] = |G|^2 and E[trace_sigma] = tr(Sigma), checked to 4 standard errors.

    Per-example gradients G_k ~ N(mu, diag(sigma^2)), i.i.d., d coordinates, batches of
    B, N batches. With tau_i^2 = sigma_i^2 / B, per coordinate the batch mean
    g_i ~ N(mu_i, tau_i^2) and s_i = (sample variance) / B are independent, with
    (B - 1) (sample variance) / sigma_i^2 ~ chi^2_{B-1}, so

      Var(g_i^2) = 4 mu_i^2 tau_i^2 + 2 tau_i^4,   Var(s_i) = 2 tau_i^4 / (B - 1),
      Var(|g|^2 - sum s) = sum_i 4 mu_i^2 tau_i^2 + 2 tau_i^4 B / (B - 1),
      Var(B sum s)       = sum_i 2 sigma_i^4 / (B - 1).

    The mean of N independent estimates has standard error sqrt(Var / N); |mean - true|
    < 4 SE fails by chance with probability 6e-5 (the seed is fixed, so the outcome is
    too). The biased |g|^2, off by tr(Sigma)/B, must fail the same test by far.
    """
    d, b, n = 16, 4, 20_000
    mu = np.linspace(-0.45, 0.45, d)
    sigma = np.linspace(0.5, 1.5, d)
    rng = np.random.default_rng(1234)
    per_example = mu + sigma * rng.standard_normal((n, b, d))
    g = per_example.mean(axis=1)
    s = per_example.var(axis=1, ddof=1) / b
    true_g2, true_trace = float(np.sum(mu**2)), float(np.sum(sigma**2))
    tau2 = sigma**2 / b
    se_g2 = math.sqrt(np.sum(4 * mu**2 * tau2 + 2 * tau2**2 * b / (b - 1)) / n)
    se_trace = math.sqrt(np.sum(2 * sigma**4 / (b - 1)) / n)

    with jax.enable_x64(True):
        stats = jax.jit(jax.vmap(lambda g, s: gradient_noise_statistics(g, s, b)))(g, s)
        est_g2 = np.asarray(stats["grad_sq_unbiased"])
        est_trace = np.asarray(stats["trace_sigma"])
    assert est_g2.shape == (n,)
    assert abs(est_g2.mean() - true_g2) < 4 * se_g2, (est_g2.mean(), true_g2, se_g2)
    assert abs(est_trace.mean() - true_trace) < 4 * se_trace, (est_trace.mean(), true_trace)
    # the derived standard error is the spread of the estimates (within 5%)
    np.testing.assert_allclose(est_g2.std() / math.sqrt(n), se_g2, rtol=0.05)
    # the plain |g|^2 is biased by tr(Sigma)/B: 14 here, hundreds of standard errors
    biased = np.sum(g**2, axis=1).mean()
    assert abs(biased - true_g2) > 100 * se_g2
    np.testing.assert_allclose(biased - true_g2, true_trace / b, rtol=0.02)


def test_b_simple_at_unresolved_signal_and_no_gradient():
    # |g|^2 <= sum s: the estimate of |G|^2 is <= 0, the noise scale is +inf
    got = gradient_noise_statistics(jnp.array([0.1, 0.0]), jnp.array([1.0, 1.0]), 4)
    assert float(got["grad_sq_unbiased"]) < 0 and float(got["b_simple"]) == math.inf
    equal = gradient_noise_statistics(jnp.array([1.0]), jnp.array([1.0]), 4)
    assert float(equal["grad_sq_unbiased"]) == 0 and float(equal["b_simple"]) == math.inf
    # no gradient at all: NaN everywhere but the two estimates (0)
    zero = gradient_noise_statistics(jnp.zeros(3), jnp.zeros(3), 4)
    assert float(zero["trace_sigma"]) == 0 and float(zero["grad_sq_unbiased"]) == 0
    for key in ("b_simple", "grad_snr", "batch_gamma_mean"):
        assert math.isnan(float(zero[key])), key
    # no spread but a mean: no noise, SNR inf, every coordinate fully trusted
    clean = gradient_noise_statistics(jnp.ones(3), jnp.zeros(3), 4)
    assert float(clean["b_simple"]) == 0 and float(clean["grad_snr"]) == math.inf
    assert float(clean["batch_gamma_mean"]) == 1.0
    # a NaN gradient is NaN, not inf
    bad = gradient_noise_statistics(jnp.array([jnp.nan, 1.0]), jnp.ones(2), 4)
    assert math.isnan(float(bad["b_simple"])) and math.isnan(float(bad["grad_snr"]))


def test_per_leaf_keys():
    b = 3
    tree = {"params": {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}}
    tree["params"]["layers"] = [jnp.ones(2), (jnp.ones(1),)]
    var = jax.tree.map(lambda x: 0.5 * x, tree)
    got = gradient_noise_statistics(tree, var, b)
    names = ["params/Dense_0/bias", "params/Dense_0/kernel", "params/layers/0", "params/layers/1/0"]
    assert set(got) == GLOBAL_KEYS | {
        f"{k}/{n}" for k in ("grad_snr", "batch_gamma_mean") for n in names
    }
    assert float(got["grad_snr/params/Dense_0/kernel"]) == 2.0
    assert set(gradient_noise_statistics(tree, var, b, per_leaf=False)) == GLOBAL_KEYS
    # one array: the per-leaf keys would repeat the global ones
    assert set(gradient_noise_statistics(jnp.ones(3), jnp.ones(3), b)) == GLOBAL_KEYS
    # two paths joining to the same name: the full key paths instead
    clash = {"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}}
    keys = gradient_noise_statistics(clash, clash, b)
    assert {"grad_snr/['a']['b']", "grad_snr/['a/b']"} <= set(keys)


def test_per_leaf_keys_of_a_flax_nnx_state():
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(2, 3, rngs=rngs)

    grads = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
    var = jax.tree.map(lambda x: 0.25 * jnp.ones_like(x), grads)
    got = gradient_noise_statistics(grads, var, 8)
    assert {"grad_snr/linear/kernel", "grad_snr/linear/bias"} <= set(got)


def test_jit_and_traced_batch_size():
    per_example = _per_example(np.random.default_rng(3), 6)
    mean, var = _moments(per_example)
    g = {k: jnp.asarray(v, jnp.float32) for k, v in mean.items()}
    s = {k: jnp.asarray(v, jnp.float32) for k, v in var.items()}
    eager = gradient_noise_statistics(g, s, 6)
    static = jax.jit(gradient_noise_statistics, static_argnums=2)(g, s, 6)
    traced = jax.jit(gradient_noise_statistics)(g, s, jnp.asarray(6))
    for key, value in eager.items():
        np.testing.assert_allclose(static[key], value, rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(traced[key], value, rtol=1e-6, err_msg=key)


def test_none_leaves_are_skipped():
    g = {"w": jnp.array([1.0, 2.0]), "frozen": None}
    s = {"w": jnp.array([0.5, 0.5]), "frozen": None}
    got = gradient_noise_statistics(g, s, 4)
    assert set(got) == GLOBAL_KEYS | {"grad_snr/w", "batch_gamma_mean/w"}
    np.testing.assert_allclose(float(got["grad_snr"]), 5.0)


@pytest.mark.parametrize(
    "g, s, match",
    [
        ({"w": jnp.ones(2)}, {"v": jnp.ones(2)}, "grad_variance does not have the structure"),
        ({"w": jnp.ones(2)}, [jnp.ones(2)], "grad_variance does not have the structure"),
        ({"w": jnp.ones(2)}, {"w": jnp.ones(3)}, r"at \['w'\], grad_variance has shape"),
        ({"w": jnp.ones(2), "b": None}, {"w": jnp.ones(2), "b": jnp.ones(1)}, "None"),
        ({"w": jnp.ones(2)}, {"w": jnp.ones(2, jnp.complex64)}, "grad_variance is complex"),
        ({"w": None}, {"w": None}, "no array leaves"),
    ],
)
def test_mismatched_trees_raise(g, s, match):
    with pytest.raises(ValueError, match=match):
        gradient_noise_statistics(g, s, 4)


@pytest.mark.parametrize("batch_size", [1, 0, -3, 2.5, True, None, "8", jnp.asarray(1)])
def test_bad_batch_size_raises(batch_size):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2"):
        gradient_noise_statistics(jnp.ones(2), jnp.ones(2), batch_size)


# --- diagnostics --------------------------------------------------------------------


def _trained_state(b=8, steps=3):
    """An M-SVAG state after a few steps, and the moments of one more batch."""
    rng = np.random.default_rng(4)
    params = {"w": jnp.zeros((4, 3)), "bias": jnp.zeros(3), "scale": jnp.zeros(5)}
    opt = osv.m_svag(0.1)
    state = opt.init(params)
    for _ in range(steps):
        g, s = _moments(_per_example(rng, b))
        g = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
        _, state = opt.update(g, state, params)
    g, s = _moments(_per_example(rng, b))
    g = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
    s = {k: jnp.asarray(v, jnp.float32) for k, v in s.items()}
    return opt, state, g, s


def test_diagnostics_adds_the_noise_keys():
    opt, state, g, s = _trained_state()
    plain = diagnostics(state, opt, grads=g)
    fn = jax.jit(lambda st, g, s: diagnostics(st, opt, grads=g, grad_variance=s, batch_size=8))
    noisy = fn(state, g, s)
    noise = gradient_noise_statistics(g, s, 8)
    assert set(noisy) == set(plain) | set(noise)
    assert not set(plain) & set(noise)
    for key, value in plain.items():  # the existing keys are untouched
        np.testing.assert_allclose(noisy[key], value, rtol=1e-6, err_msg=key)
    for key, value in noise.items():
        assert noisy[key].dtype == jnp.float32
        np.testing.assert_allclose(noisy[key], value, rtol=1e-6, err_msg=key)
    assert {"grad_snr/w", "batch_gamma_mean/scale"} <= set(noisy)
    only_global = diagnostics(state, opt, grads=g, grad_variance=s, batch_size=8, per_leaf=False)
    assert set(only_global) == set(plain) | GLOBAL_KEYS


def test_diagnostics_noise_of_a_state_without_moments():
    params = jnp.zeros(3)
    opt = osv.ssd(0.1)
    state = opt.init(params)
    g, s = jnp.array([1.0, -1.0, 0.5]), jnp.array([0.1, 0.1, 0.1])
    _, state = opt.update(g, state, params)
    got = diagnostics(state, opt, grads=g, grad_variance=s, batch_size=16)
    assert set(got) == {"count", "grad_norm"} | GLOBAL_KEYS
    np.testing.assert_allclose(float(got["b_simple"]), 16 * 0.3 / (2.25 - 0.3), rtol=1e-6)


def test_diagnostics_noise_arguments_come_together():
    opt, state, g, s = _trained_state()
    with pytest.raises(ValueError, match="grad_variance needs grads"):
        diagnostics(state, opt, grad_variance=s, batch_size=8)
    with pytest.raises(ValueError, match="grad_variance needs batch_size"):
        diagnostics(state, opt, grads=g, grad_variance=s)
    with pytest.raises(ValueError, match="batch_size is only used with grad_variance"):
        diagnostics(state, opt, grads=g, batch_size=8)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2"):
        diagnostics(state, opt, grads=g, grad_variance=s, batch_size=1)
    with pytest.raises(ValueError, match="grad_variance does not have the structure"):
        diagnostics(state, opt, grads=g, grad_variance={"w": s["w"]}, batch_size=8)


def test_example_logs_the_noise_scale(capsys):
    import sklearn  # noqa: F401
    import tqdm  # noqa: F401

    from optax_signvar.demo.diagnostics import main

    history = main(["--steps", "6", "--no-progress"])
    assert len(history["b_simple"]) == len(history["grad_snr"]) == len(history["loss"]) == 6
    assert all(v > 0 for v in history["trace_sigma"])
    assert "grad_snr/w0" in history and "batch_gamma_mean/b1" in history
    out = capsys.readouterr().out
    assert "B_simple" in out and "SNR" in out
    # batch size 1: no variance to estimate, the noise columns are left out
    history = main(["--steps", "2", "--batch-size", "1", "--no-progress"])
    assert "b_simple" not in history and len(history["loss"]) == 2
