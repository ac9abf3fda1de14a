"""``layout="packed"`` and :func:`optax_signvar.pack`: the same optimizer, fewer kernels.

- every named optimizer and every point of ``dissect`` gives, over 300 steps, the
  updates of ``layout="tree"`` bit for bit (float32 and bfloat16 leaves, ``None``
  leaves, a leaf large enough to stay unpacked, the mini-batch variance);
- the optax contracts hold for the packed state: jit with donation and no
  recompilation, ``inject_hyperparams``, ``MultiSteps``, ``masked``,
  ``apply_if_finite``, Flax ``nnx.Optimizer``, checkpoints, ``diagnostics``;
  ``optax.tree_map_params`` is refused with the reason;
- :func:`pack` / :func:`unpack`: round trip, gradients through ``unpack`` arrive
  packed, an optax optimizer on packed parameters follows the unpacked one;
- under an 8-device mesh (``tests/_packed_sharding.py``, one subprocess per mesh):
  bit for bit the tree layout's results, buffers sharded like their leaves, and
  no collective the tree step does not have.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import optax_signvar as osv
from optax_signvar.layout import PACK_MAX_SIZE, Packed
from tests.registry import NAMES, OPTIMIZERS, make
from tests.test_sharding import device_env, report, run

STEPS = 300
NO_FMA = "--xla_cpu_max_isa=AVX"
SHAPES = {"w": (3, 4), "b": (7,), "none": None, "k": (2, 2, 2), "s": ()}
LARGE = (PACK_MAX_SIZE,)  # stays unpacked


def tree_of(shapes, seed=0, dtypes=None):
    rng = np.random.default_rng(seed)
    dtypes = dtypes or {}
    return {
        k: None if s is None else jnp.asarray(rng.normal(size=s), dtypes.get(k, jnp.float32))
        for k, s in shapes.items()
    }


def gradient(params, i):
    """A deterministic gradient stream with signs and magnitudes that change."""

    def leaf(p):
        if p is None:
            return None
        t = jnp.asarray(i, jnp.float32)
        # smooth in p (a difference in the last bit stays there), noisy in t
        return (jnp.sin(p.astype(jnp.float32) + t) + 0.1 * jnp.cos(t * 0.7)).astype(p.dtype)

    return jax.tree.map(leaf, params, is_leaf=lambda x: x is None)


def trajectory(opt, params, steps=STEPS, variance=False):
    """Parameters and the last updates after ``steps`` jitted steps, in one scan."""

    def body(carry, i):
        p, s = carry
        g = gradient(p, i.astype(jnp.float32))
        extra = {"grad_variance": jax.tree.map(lambda x: x * x, g)} if variance else {}
        u, s = opt.update(g, s, p, **extra)
        return (optax.apply_updates(p, u), s), u

    (p, _), us = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(steps)))(
        (params, opt.init(params))
    )
    return p, us


def assert_same(a, b):
    """Bit for bit without FMA (tests/_layout_bitwise.py); with FMA, to the roundings
    of the contractions XLA:CPU chooses per fusion (see NO_FMA below)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    exact = NO_FMA in os.environ.get("XLA_FLAGS", "")
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------------- #
# Bit for bit the tree layout
# --------------------------------------------------------------------------- #

# XLA:CPU lets LLVM contract a product and a sum into an FMA wherever it likes
# ("it increases precision"), and which product it contracts follows the fusion, not
# the math: two programs of the same elementwise update can differ in the last bit.
# Without FMA instructions (--xla_cpu_max_isa=AVX) the rounding is the program's own,
# and the packed layout must equal the tree layout bit for bit: that runs in a fresh
# interpreter (XLA reads its flags once).


def test_packed_equals_tree_bitwise_without_fma():
    """Every named optimizer and every dissect point, 300 steps: tests/_layout_bitwise.py."""
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/_layout_bitwise.py"]
    args += ["tests/test_layout.py", "-k", "not without_fma and not mesh"]
    proc = run(args, device_env(1, NO_FMA), timeout=900)
    assert proc.returncode == 0 and " passed" in proc.stdout, report(proc, "bitwise suite")
    assert " failed" not in proc.stdout and " skipped" not in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("name", ["adam", "m_svag", "amsbound", "m_sgd"])
def test_packed_follows_tree_with_fma(name):
    """With FMA (the default), the two layouts differ by contraction roundings only."""
    params = tree_of({**SHAPES, "big": LARGE})
    tree = trajectory(make(name), params)
    packed = trajectory(make(name, layout="packed"), params)
    assert_same(tree, packed)


def test_packed_state_holds_few_buffers():
    params = tree_of({f"b{i}": (i + 1,) for i in range(50)} | {"big": LARGE})
    state = osv.adam(1e-3, layout="packed").init(params)
    core = state[0]
    assert isinstance(core.mu, Packed) and isinstance(core.nu, Packed)
    assert [x.shape for x in core.mu.buffers] == [(sum(range(1, 51)),)]
    assert [x.shape for x in core.mu.large] == [LARGE]
    # a point without buffers has nothing to pack
    assert osv.ssd(1e-2, layout="packed").init(params)[0].mu is None


# --------------------------------------------------------------------------- #
# The contracts of optax, on the packed state
# --------------------------------------------------------------------------- #


def packed(name, **kwargs):
    return make(name, layout="packed", **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_donated_step_compiles_once_and_keeps_the_state(name):
    opt = packed(name)
    params = tree_of(SHAPES)

    def step(p, s, i):
        u, s = opt.update(gradient(p, i), s, p)
        return optax.apply_updates(p, u), s

    jitted = jax.jit(step, donate_argnums=(0, 1))
    state = opt.init(params)
    shapes = [(x.shape, x.dtype) for x in jax.tree.leaves(state)]
    for i in range(3):
        params, state = jitted(params, state, jnp.float32(i))
    assert jitted._cache_size() == 1
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(state)] == shapes
    assert jax.tree.structure(state) == jax.tree.structure(opt.init(params))


@pytest.mark.standard_promotion
@pytest.mark.parametrize("name", ["adam", "m_svag", "adabound", "amsgrad"])
def test_inject_hyperparams_and_multisteps(name):
    entry = OPTIMIZERS[name]
    params = tree_of(SHAPES)
    injected = optax.inject_hyperparams(entry.factory)(**entry.kwargs, layout="packed")
    plain = packed(name)
    u_i, _ = trajectory(injected, params, steps=5)
    u_p, _ = trajectory(plain, params, steps=5)
    for a, b in zip(jax.tree.leaves(u_i), jax.tree.leaves(u_p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)
    multi_tree = trajectory(optax.MultiSteps(make(name), every_k_schedule=2), params, steps=6)
    multi_packed = trajectory(optax.MultiSteps(plain, every_k_schedule=2), params, steps=6)
    assert_same(multi_tree, multi_packed)


@pytest.mark.parametrize("name", ["m_vassd", "amsbound"])
def test_masked_and_apply_if_finite(name):
    params = tree_of(SHAPES)
    mask = {k: k != "w" for k in SHAPES}
    for wrap in (
        lambda o: optax.masked(o, mask),
        lambda o: optax.apply_if_finite(o, max_consecutive_errors=2),
    ):
        assert_same(
            trajectory(wrap(make(name)), params, steps=20),
            trajectory(wrap(packed(name)), params, steps=20),
        )
    # a non-finite gradient is skipped by apply_if_finite, as in the tree layout
    opt = optax.apply_if_finite(packed(name), max_consecutive_errors=2)
    state = opt.init(params)
    bad = jax.tree.map(
        lambda p: None if p is None else p * jnp.nan, params, is_leaf=lambda x: x is None
    )
    updates, state = opt.update(bad, state, params)
    assert int(state.notfinite_count) == 1
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))


def test_flax_nnx_optimizer_and_diagnostics():
    x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    models, optimizers = [], []
    for layout in ("tree", "packed"):
        model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, osv.m_svag(1e-2, layout=layout), wrt=nnx.Param)

        @nnx.jit
        def step(model, optimizer):
            grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
            optimizer.update(model, grads)

        for _ in range(5):
            step(model, optimizer)
        models.append(model)
        optimizers.append(optimizer)
    assert_same(nnx.state(models[0], nnx.Param), nnx.state(models[1], nnx.Param))
    d_tree, d_packed = (osv.diagnostics(o.opt_state, osv.m_svag(1e-2)) for o in optimizers)
    assert set(d_tree) == set(d_packed)
    assert_same(d_tree, d_packed)


@pytest.mark.parametrize("name", ["adabound", "m_vassd"])
def test_diagnostics_read_the_packed_state_as_the_tree(name):
    params = tree_of({**SHAPES, "big": LARGE})
    grads = gradient(params, 1.0)
    out = []
    for opt in (make(name), packed(name)):
        state = opt.init(params)
        for _ in range(3):
            _, state = opt.update(grads, state, params)
        out.append(osv.diagnostics(state, opt, grads=grads))
    assert set(out[0]) == set(out[1]) and len(out[0]) > 5
    assert_same(out[0], out[1])


def test_checkpoint_round_trip(tmp_path):
    opt = packed("amsbound")
    params = tree_of({**SHAPES, "big": LARGE})
    state = opt.init(params)
    for i in range(3):
        _, state = opt.update(gradient(params, float(i)), state, params)
    osv.save_state(tmp_path / "ckpt", {"opt_state": state})
    restored = osv.restore_state(tmp_path / "ckpt", {"opt_state": opt.init(params)})
    assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(state)
    assert_same(restored["opt_state"], state)
    # a tree-layout template does not take a packed checkpoint
    with pytest.raises(ValueError):
        osv.restore_state(tmp_path / "ckpt", {"opt_state": make("amsbound").init(params)})


def test_tree_map_params_is_refused_with_the_reason():
    opt = packed("adam")
    state = opt.init(tree_of(SHAPES))
    with pytest.raises(ValueError, match="layout='packed'.*tree_map_params"):
        optax.tree_map_params(opt, lambda v: v, state)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #


def test_bad_layout_and_mismatched_gradients_raise_naming_the_leaf():
    with pytest.raises(ValueError, match="layout"):
        osv.adam(1e-3, layout="flat")
    opt = packed("adam")
    params = tree_of(SHAPES)
    state = opt.init(params)
    wrong_shape = {**gradient(params, 0.0), "b": jnp.ones(6)}
    with pytest.raises(ValueError, match=r"\['b'\].*\[6\]"):
        opt.update(wrong_shape, state, params)
    wrong_dtype = {**gradient(params, 0.0), "w": jnp.ones((3, 4), jnp.bfloat16)}
    with pytest.raises(ValueError, match=r"\['w'\] is bfloat16"):
        opt.update(wrong_dtype, state, params)
    with pytest.raises(ValueError, match="does not match"):
        opt.update({"w": jnp.ones((3, 4))}, state, params)


# --------------------------------------------------------------------------- #
# pack / unpack: packed parameters
# --------------------------------------------------------------------------- #


def test_pack_round_trip_keeps_structure_none_and_large_leaves():
    params = tree_of({**SHAPES, "big": LARGE, "half": (4,)}, dtypes={"half": jnp.bfloat16})
    p = osv.pack(params)
    assert len(p.buffers) == 2  # float32 and bfloat16
    assert [x.shape for x in p.large] == [LARGE, ()]  # large and 0-d leaves stay
    assert jax.tree.structure(osv.unpack(p), is_leaf=lambda x: x is None) == jax.tree.structure(
        params, is_leaf=lambda x: x is None
    )
    assert_same(osv.unpack(p), params)
    with pytest.raises(TypeError, match="Packed"):
        osv.unpack(params)


def test_training_on_packed_parameters_follows_the_tree():
    params = tree_of({"w": (4, 3), "b": (3,), "big": (PACK_MAX_SIZE // 3 + 1, 3)})
    x = jnp.linspace(-1, 1, 8).reshape(2, 4)

    def loss(p):
        h = jnp.tanh(x @ p["w"] + p["b"])
        return jnp.mean(h**2) + jnp.mean(p["big"] ** 2)

    def train(p, unpack):
        opt = osv.adam(1e-2)
        state = opt.init(p)
        for _ in range(10):
            g = jax.grad(lambda q: loss(unpack(q)))(p)
            u, state = opt.update(g, state, p)
            p = optax.apply_updates(p, u)
        return unpack(p)

    packed_params = osv.pack(params)
    grads = jax.grad(lambda q: loss(osv.unpack(q)))(packed_params)
    assert isinstance(grads, Packed) and len(grads.buffers) == 1
    # the derivative of unpack is one concatenate, not a buffer-sized pad per leaf
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda q: loss(osv.unpack(q))))(packed_params))
    assert jaxpr.count("concatenate") == 1 and " pad" not in jaxpr
    reference = train(params, lambda q: q)
    trained = train(packed_params, osv.unpack)
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(trained), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- #
# Under a mesh
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("axes", ["explicit", "auto"])
@pytest.mark.parametrize("mesh", ["mesh1d", "mesh2d"])
def test_packed_under_a_mesh_adds_no_collective(mesh, axes):
    script = "tests/_packed_sharding.py"
    proc = run([script, mesh, axes], device_env(8, "--xla_allow_excess_precision=false", NO_FMA))
    assert proc.returncode == 0 and f"PACKED-SHARDING-OK {mesh} {axes}" in proc.stdout, report(proc)
