"""Per-example gradient moments (Dissecting Adam, sec. 4.1 / supplement D)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optax_signvar as osv
from optax_signvar.minibatch import per_example_grad_moments

B = 8


def loss_fn(params, example):
    """Linear regression on one example: x of shape (3,), y of shape (2,)."""
    pred = params["s"] * (example["x"] @ params["layer"]["w"]) + params["layer"]["b"]
    return 0.5 * jnp.sum((pred - example["y"]) ** 2)


def per_example_grads_numpy(params, batch):
    """The per-example gradients of ``loss_fn``, by hand, in float64."""
    w = np.asarray(params["layer"]["w"], np.float64)
    b = np.asarray(params["layer"]["b"], np.float64)
    s = float(params["s"])
    x = np.asarray(batch["x"], np.float64)
    y = np.asarray(batch["y"], np.float64)
    xw = x @ w  # (B, 2)
    r = s * xw + b - y  # (B, 2)
    return {
        "layer": {"w": s * x[:, :, None] * r[:, None, :], "b": r},
        "s": np.sum(r * xw, axis=1),
    }


def oracle(params, batch):
    grads = per_example_grads_numpy(params, batch)
    n = len(batch["x"])
    mean = jax.tree.map(lambda g: g.mean(axis=0), grads)
    var = jax.tree.map(lambda g: g.var(axis=0, ddof=1) / n, grads)
    return mean, var


def problem(dtype, n=B, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "layer": {
            "w": jnp.asarray(rng.normal(size=(3, 2)), dtype),
            "b": jnp.asarray(rng.normal(size=(2,)), dtype),
        },
        "s": jnp.asarray(1.5, dtype),
    }
    batch = {
        "x": jnp.asarray(rng.normal(size=(n, 3)), dtype),
        "y": jnp.asarray(rng.normal(size=(n, 2)), dtype),
    }
    return params, batch


def assert_tree_close(actual, expected, **tol):
    jax.tree.map(lambda a, e: np.testing.assert_allclose(np.asarray(a), e, **tol), actual, expected)


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_equals_numpy_unbiased_estimate_float64(method):
    with jax.enable_x64(True):
        params, batch = problem(jnp.float64)
        mean, var = per_example_grad_moments(loss_fn, params, batch, method=method)
        want_mean, want_var = oracle(params, batch)
        assert_tree_close(mean, want_mean, rtol=1e-12, atol=1e-14)
        assert_tree_close(var, want_var, rtol=1e-12, atol=1e-14)
        assert all(x.dtype == jnp.float64 for x in jax.tree.leaves((mean, var)))


@pytest.mark.parametrize("method", ["auto", "vmap"])
def test_equals_numpy_unbiased_estimate_float32(method):
    params, batch = problem(jnp.float32)
    mean, var = per_example_grad_moments(loss_fn, params, batch, method=method)
    # the oracle sees the same float32 inputs, exactly, in float64: what is
    # left is float32 rounding in the gradients and the sums
    want_mean, want_var = oracle(params, batch)
    assert_tree_close(mean, want_mean, rtol=1e-5, atol=1e-6)
    assert_tree_close(var, want_var, rtol=1e-5, atol=1e-7)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((mean, var)))


@pytest.mark.parametrize("chunk_size", [None, 1, 4, B])
def test_variance_is_accurate_where_the_mean_dominates(chunk_size):
    # G_k = x_k exactly; mean^2 / var ~ 1e14 per example: sum(G^2)/B - mean^2
    # in float32 would be pure rounding noise (or negative)
    x = (1000.0 + 0.01 * np.random.default_rng(1).normal(size=(B, 2))).astype(np.float32)
    mean, var = per_example_grad_moments(
        lambda p, e: jnp.sum(p * e), jnp.zeros(2), jnp.asarray(x), chunk_size=chunk_size
    )
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=0), rtol=1e-7)
    # float32 holds the mean 1000 to ~6e-5, 0.6% of the spread 0.01: the
    # two-pass sum only sees that offset squared, the chunk merges (which round
    # the running mean once per chunk) see it to first order
    rtol = 1e-4 if chunk_size in (None, B) else 1e-2
    np.testing.assert_allclose(var, x64.var(axis=0, ddof=1) / B, rtol=rtol)


def test_factored_variance_is_centred():
    # A dense weight on a vector is factored (no per-example gradient); its
    # variance comes from centred inputs and output gradients, so it stays as
    # accurate as the per-example path where sum(G**2)/B - mean**2 would be
    # pure rounding noise in float32 (mean**2 / var ~ 1e14 per example).
    x = (1000.0 + 0.01 * np.random.default_rng(1).normal(size=(B, 2))).astype(np.float32)
    loss = lambda p, e: jnp.dot(p, e)  # noqa: E731
    w = jnp.zeros(2)
    assert osv.grad_moments_paths(loss, w, jnp.asarray(x)) == "factored: dot_general"
    want = x.astype(np.float64).var(axis=0, ddof=1) / B
    for method in ("vmap", "auto"):
        _, var = per_example_grad_moments(loss, w, jnp.asarray(x), method=method)
        np.testing.assert_allclose(var, want, rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_chunked_equals_unchunked(chunk_size):
    params, batch = problem(jnp.float32)
    full = per_example_grad_moments(loss_fn, params, batch)
    chunked = per_example_grad_moments(loss_fn, params, batch, chunk_size=chunk_size)
    assert_tree_close(chunked, full, rtol=1e-5, atol=1e-7)
    with jax.enable_x64(True):
        params, batch = problem(jnp.float64)
        full = per_example_grad_moments(loss_fn, params, batch)
        chunked = per_example_grad_moments(loss_fn, params, batch, chunk_size=chunk_size)
        assert_tree_close(chunked, full, rtol=1e-13, atol=1e-15)


def test_jit():
    params, batch = problem(jnp.float32)
    eager = per_example_grad_moments(loss_fn, params, batch, chunk_size=2)
    jitted = jax.jit(lambda p, b: per_example_grad_moments(loss_fn, p, b, chunk_size=2))
    assert_tree_close(jitted(params, batch), eager, rtol=1e-6, atol=1e-7)


def test_dtypes_and_none_leaves():
    params = {"w": jnp.ones(3, jnp.bfloat16), "frozen": None, "v": jnp.ones((), jnp.float32)}
    batch = jnp.arange(12.0, dtype=jnp.float32).reshape(4, 3)

    def loss(p, x):
        return jnp.sum(p["w"].astype(jnp.float32) * x) * p["v"]

    with jax.numpy_dtype_promotion("strict"):
        for chunk_size in (None, 2):
            mean, var = per_example_grad_moments(loss, params, batch, chunk_size=chunk_size)
            assert mean["frozen"] is None and var["frozen"] is None
            assert mean["w"].dtype == var["w"].dtype == jnp.bfloat16
            assert mean["v"].dtype == var["v"].dtype == jnp.float32
            np.testing.assert_allclose(mean["w"].astype(np.float32), [4.5, 5.5, 6.5])
            np.testing.assert_allclose(var["w"].astype(np.float32), [15 / 4] * 3, rtol=1e-2)


def test_bad_input():
    params, batch = problem(jnp.float32)
    for bad in (3, 0, -2, 16, 2.0, True):
        with pytest.raises(ValueError, match="chunk_size"):
            per_example_grad_moments(loss_fn, params, batch, chunk_size=bad)
    params, batch = problem(jnp.float32, n=1)
    for chunk_size in (None, 1):
        with pytest.raises(ValueError, match="B == 1"):
            per_example_grad_moments(loss_fn, params, batch, chunk_size=chunk_size)
    with pytest.raises(ValueError, match="batch size"):
        per_example_grad_moments(loss_fn, params, {"x": jnp.ones((2, 3)), "y": jnp.ones((3, 2))})
    with pytest.raises(ValueError, match="no array leaves"):
        per_example_grad_moments(loss_fn, params, {})
    params, batch = problem(jnp.float32)
    for bad in ("exact", None, 1):
        with pytest.raises(ValueError, match="method"):
            per_example_grad_moments(loss_fn, params, batch, method=bad)
    with pytest.raises(ValueError, match="scalar"):
        per_example_grad_moments(lambda p, e: p["s"] * e["x"], params, batch)


def test_global_batch_of_one_is_rejected_under_shard_map():
    params, batch = problem(jnp.float32, n=1)
    mesh = jax.make_mesh((1,), ("data",))
    batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
    moments = jax.shard_map(
        lambda p, b: per_example_grad_moments(loss_fn, p, b, axis_name="data"),
        mesh=mesh,
        in_specs=(P(), P("data")),
        out_specs=P(),
    )
    with pytest.raises(ValueError, match="B == 1 over axis 'data'"):
        moments(params, batch)


PSUM_SCRIPT = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    from optax_signvar.minibatch import per_example_grad_moments
    from tests.test_minibatch import loss_fn, problem

    assert jax.device_count() == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("data",))

    def check(got, want, rtol, what):
        for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert a.dtype == e.dtype, (what, a.dtype, e.dtype)
            np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * 1e-2, err_msg=what)

    for dtype, rtol, x64 in ((jnp.float32, 1e-5, False), (jnp.float64, 1e-12, True)):
        with jax.enable_x64(x64):
            params, batch = problem(dtype, n=32)
            want = per_example_grad_moments(loss_fn, params, batch)
            sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
            for chunk_size, check_vma in ((None, True), (2, True), (None, False)):
                moments = jax.jit(jax.shard_map(
                    lambda p, b: per_example_grad_moments(
                        loss_fn, p, b, axis_name="data", chunk_size=chunk_size
                    ),
                    mesh=mesh, in_specs=(P(), P("data")), out_specs=P(), check_vma=check_vma,
                ))
                check(moments(params, sharded), want, rtol, f"{dtype=} {chunk_size=} {check_vma=}")
            stacked = jax.tree.map(lambda x: x.reshape((8, 4) + x.shape[1:]), batch)
            replicas = jax.pmap(
                lambda p, b: per_example_grad_moments(loss_fn, p, b, axis_name="data"),
                axis_name="data", in_axes=(None, 0),
            )(params, stacked)
            for i in range(8):
                check(jax.tree.map(lambda x: x[i], replicas), want, rtol, f"pmap {dtype=} {i=}")
    print("PSUM_MATCHES_FULL_BATCH")
    """
)


def test_psum_over_8_devices_equals_full_batch():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", PSUM_SCRIPT],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0 or "PSUM_MATCHES_FULL_BATCH" not in result.stdout:
        pytest.fail(
            f"8-device psum run failed (rc={result.returncode}):\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )


def test_feeds_m_svag():
    params, batch = problem(jnp.float32)
    mean, var = per_example_grad_moments(loss_fn, params, batch)
    lr = 0.1
    opt = osv.m_svag(learning_rate=lr)
    state = opt.init(params)
    with_var, _ = opt.update(mean, state, params, grad_variance=var)
    without, _ = opt.update(mean, state, params)
    # t = 1: mh = g, rho_1 = 1, and the moving-average estimate s_1 is 0 (an SGD step)
    assert_tree_close(without, jax.tree.map(lambda m: -lr * m, mean), rtol=1e-6)
    want = jax.tree.map(lambda m, s: -lr * m * m**2 / (m**2 + s), mean, var)
    assert_tree_close(with_var, want, rtol=1e-5, atol=1e-8)
    for a, b in zip(jax.tree.leaves(with_var), jax.tree.leaves(without), strict=True):
        assert not np.allclose(a, b)
    # the same through the factory, where the mini-batch variance is required
    minibatch = osv.dissect(lr, variance_adaptation="optimal", variance="minibatch")
    u, _ = minibatch.update(mean, minibatch.init(params), params, grad_variance=var)
    assert_tree_close(u, want, rtol=1e-5, atol=1e-8)
    new_params = optax.apply_updates(params, u)
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
