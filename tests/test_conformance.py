"""The optax alias contract, for every optimizer: one table, one entry each.

Mirrors optax's own ``alias_test.py``: convergence, ``optax.tree.map_params``,
no recompilation, extra keyword arguments, ``inject_hyperparams``, schedules,
dtypes, state stability, ``MultiSteps``, strict dtype promotion, and a Flax
``nnx.Optimizer`` loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.registry import NAMES, OPTIMIZERS, make


def parabola(dtype=jnp.float32):
    start = jnp.array([-1.0, 10.0, 1.0], dtype)
    target = jnp.array([1.0, -1.0, 1.0], dtype)
    return start, target, lambda p: jnp.sum((p - target) ** 2)


def rosenbrock(dtype=jnp.float32):
    start = jnp.array([0.0, 0.0], dtype)
    target = jnp.array([1.0, 1.0], dtype)
    return start, target, lambda p: (1.0 - p[0]) ** 2 + 100.0 * (p[1] - p[0] ** 2) ** 2


def make_step(opt, objective):
    @jax.jit
    def step(params, state):
        grads = jax.grad(objective)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def run(opt, objective, params, steps):
    def body(carry, _):
        params, state = carry
        grads = jax.grad(objective)(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.jit(lambda c: jax.lax.scan(body, c, length=steps))(
        (params, opt.init(params))
    )
    return params


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_parabola(name):
    start, target, objective = parabola()
    final = run(make(name), objective, start, 5000)
    np.testing.assert_allclose(final, target, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name", [n for n in NAMES if not OPTIMIZERS[n].sign])
def test_converges_on_rosenbrock(name):
    start, target, objective = rosenbrock()
    final = run(make(name), objective, start, 20000)
    np.testing.assert_allclose(final, target, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name", NAMES)
def test_tree_map_params_and_no_recompilation(name):
    opt = make(name)
    params, _, objective = parabola()
    state = opt.init(params)
    # a no-op map must give back the same state structure
    mapped = optax.tree.map_params(opt, lambda v: v, state)
    assert jax.tree.structure(mapped) == jax.tree.structure(state)
    step = make_step(opt, objective)
    params, state = step(params, state)
    params, state = step(params, state)
    assert step._cache_size() == 1, "the update recompiled on its second call"


@pytest.mark.parametrize("name", NAMES)
def test_params_and_state_can_be_donated(name):
    """No buffer appears twice in the state, so a donated step runs."""
    opt = make(name)
    params, _, objective = parabola()
    step = jax.jit(make_step(opt, objective), donate_argnums=(0, 1))
    state = opt.init(params)
    for _ in range(3):
        params, state = step(params, state)
    assert np.all(np.isfinite(params))


@pytest.mark.parametrize("name", NAMES)
def test_accepts_unknown_extra_args(name):
    opt = make(name)
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(2):
        updates, state = jax.jit(opt.update)(grads, state, params, unexpected_extra_arg=1)
    assert jax.tree.structure(updates) == jax.tree.structure(params)


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_round_trip(name):
    entry = OPTIMIZERS[name]
    opt = make(name)
    injected = optax.inject_hyperparams(entry.factory)(**entry.kwargs)
    params = [-jnp.ones((2, 3)), jnp.ones((2, 5, 2))]
    grads = [jnp.ones((2, 3)), -jnp.linspace(0.5, 2.0, 20).reshape(2, 5, 2)]
    u, s = jax.jit(opt.update)(grads, opt.init(params), params)
    state = jax.jit(injected.init)(params)
    ui, si = jax.jit(injected.update)(grads, state, params)
    # inject_hyperparams stores b2 = 0.999 as a float32 array, whose 1 - b2 is
    # 0.00099998713 rather than 0.001: 1.3e-5 relative, as in optax's own test.
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(ui), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)
    for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(si.inner_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4)
    # A rate changed in the state takes effect (zero params: no decay term).
    zeros = jax.tree.map(jnp.zeros_like, params)
    state.hyperparams["learning_rate"] = state.hyperparams["learning_rate"] * 2
    u1, _ = injected.update(grads, injected.init(zeros), zeros)
    u2, _ = injected.update(grads, state, zeros)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
        np.testing.assert_allclose(2 * a, b, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_equals_constant(name):
    rate = OPTIMIZERS[name].kwargs["learning_rate"]
    a = make(name)
    b = make(name, learning_rate=optax.constant_schedule(rate))
    params, _, objective = parabola()
    pa = pb = params
    sa, sb = a.init(params), b.init(params)
    for _ in range(5):
        g = jax.grad(objective)(pa)
        ua, sa = a.update(g, sa, pa)
        ub, sb = b.update(g, sb, pb)
        np.testing.assert_allclose(ua, ub, rtol=1e-6)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_update_dtype_equals_gradient_dtype(name, dtype):
    opt = make(name)
    params = jnp.array([1.0, 2.0], dtype)
    grads = jax.grad(lambda x: jnp.sum(x**2))(params)
    state = jax.jit(opt.init)(params)
    updates, _ = jax.jit(opt.update)(grads, state, params)
    assert updates.dtype == grads.dtype


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_state_shape_and_dtype_stable(name, dtype):
    with jax.enable_x64(dtype == "float64"):
        opt = make(name)
        params, _, objective = parabola(jnp.dtype(dtype))
        state = opt.init(params)
        spec = jax.tree.map(lambda x: (x.shape, x.dtype), state)

        @jax.jit
        def step(params, state):
            updates, new_state = opt.update(jax.grad(objective)(params), state, params)
            # lax.cond demands both branches give the same shapes and dtypes
            keep = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
            new_state = jax.lax.cond(keep, lambda: state, lambda: new_state)
            return optax.apply_updates(params, updates), new_state

        for _ in range(3):
            params, state = step(params, state)
            assert params.dtype == jnp.dtype(dtype)
            assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == spec


@pytest.mark.standard_promotion  # optax.MultiSteps divides by its int32 count
@pytest.mark.parametrize("name", NAMES)
def test_multisteps_first_update_is_zero(name):
    opt = optax.MultiSteps(make(name), every_k_schedule=4)
    params = jnp.array([1.0, 2.0])
    grads = 2 * params
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    np.testing.assert_array_equal(updates, jnp.zeros_like(grads))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_strict_dtype_promotion(name, dtype):
    # float32 hyperparameters: in bfloat16, b2 = 0.999 would round to 1.
    injected = optax.inject_hyperparams(OPTIMIZERS[name].factory, hyperparam_dtype=jnp.float32)
    with jax.numpy_dtype_promotion("strict"):
        for opt in (make(name), injected(**OPTIMIZERS[name].kwargs)):
            params = {"w": jnp.ones((3, 2), dtype), "b": jnp.zeros((2,), dtype)}
            state = opt.init(params)
            for _ in range(3):
                grads = jax.tree.map(lambda p: (p + 1).astype(p.dtype), params)
                updates, state = jax.jit(opt.update)(grads, state, params)
                params = optax.apply_updates(params, updates)
            assert all(jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("name", NAMES)
def test_flax_nnx_optimizer_learns(name):
    from flax import nnx

    rngs = nnx.Rngs(0)
    model = nnx.Linear(4, 1, rngs=rngs)
    x = jax.random.normal(jax.random.key(1), (64, 4))
    y = x @ jnp.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.3

    optimizer = nnx.Optimizer(model, make(name), wrt=nnx.Param)

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    first = float(loss_fn(model))
    for _ in range(300):
        train_step(model, optimizer)
    assert float(loss_fn(model)) < 0.1 * first
