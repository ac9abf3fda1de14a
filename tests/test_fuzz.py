"""Property tests over random pytrees (hypothesis).

Shapes include scalars and empty arrays; dtypes bfloat16, float16 and float32
(float64 with ``OPTAX_SIGNVAR_FUZZ_X64=1``); values are zeros or magnitudes from
1e-30 up to the largest whose square the second moment can hold in float32
(1e18): a larger gradient overflows ``nu`` to inf here as in optax and PyTorch.

The named optimizers get ``OPTAX_SIGNVAR_FUZZ_EXAMPLES`` examples each (default
10), each step jitted. Every one of the 80 valid points of ``dissect``
(``test_every_point_keeps_finite_updates_state_layout_and_phase``) gets 2/5 of
that, 4 by default, each point with its own seed, over the dtypes above and
complex64 (complex128 with x64; not for a sign with the optimal factor, whose
complex params must raise), trees of up to four leaves (scalar, empty, small
vectors and matrices, ``None``), optionally wrapped in ``optax.masked``
(``MaskedNode`` leaves), with a random non-negative ``grad_variance`` in the
gradients' real dtype where the point reads one. Finite gradients give finite
updates and state; the state keeps the treedef and the leaf shapes and dtypes
of ``init``; the updates have the gradients' structure and dtypes; and for
complex gradients, turning every ``g_t`` by a phase ``e^{i phi}`` turns every
update by it (not checked where a gradient was nonzero but under ~1e-15 in
complex64: see ``_underflows``). These run eagerly, on a few fixed shapes: the op cache,
warm after a few examples, makes that ~2x cheaper than compiling
``jax.jit(opt.update)`` for each example.

Budgets (wall time of this module alone on this machine, 2 shared cores):

* CI, the default: ~1 min (the 80-point test ~12 s of it).
* larger: ``OPTAX_SIGNVAR_FUZZ_EXAMPLES=100 OPTAX_SIGNVAR_FUZZ_X64=1`` (40
  examples per point, float64 and complex128 too): ~6 min.
* ``OPTAX_SIGNVAR_FUZZ_EXAMPLES=500 OPTAX_SIGNVAR_FUZZ_X64=1`` (200 per point):
  ~30 min (estimated), of which the 80-point test takes 4.5 (measured); run it
  alone with ``-k every_point``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import optax_signvar as osv
from tests.registry import NAMES, dissect_points, make, point_id

EXAMPLES = int(os.environ.get("OPTAX_SIGNVAR_FUZZ_EXAMPLES", "10"))
DTYPES = ["bfloat16", "float16", "float32"]
COMPLEX_DTYPES = ["complex64"]
if os.environ.get("OPTAX_SIGNVAR_FUZZ_X64") == "1":
    jax.config.update("jax_enable_x64", True)
    DTYPES.append("float64")
    COMPLEX_DTYPES.append("complex128")

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
        diag = osv.diagnostics(state, opt)
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


# --------------------------------------------------------------------------- #
# Every valid point of dissect: dtypes (complex included), None and masked
# leaves, finite in -> finite out, a fixed state layout, and the phase property.
# --------------------------------------------------------------------------- #

POINTS = dissect_points()
# A few examples per point (80 points): 4 by default, EXAMPLES * 2 / 5 in general.
POINT_EXAMPLES = max(1, round(EXAMPLES * 0.4))
POINT_STEPS = 3
RATE = 0.05


def _refuses_complex(point: dict) -> bool:
    # M-VASSD's erf factor is the sign agreement of a real Gaussian (blocks.COMPLEX_SIGN_ERF)
    return point["direction"] == "sign" and point["variance_adaptation"] == "optimal"


def _real_dtype(dtype: str) -> str:
    return {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)


def _magnitudes(draw, n: int, top: float, signs: tuple = (-1.0, 0.0, 1.0)) -> np.ndarray:
    """n values: zeros, one magnitude, or magnitudes from 1e-30 to ``top`` (float64).

    The exponent is a float or an integer: hypothesis draws floats near 0 and the
    ends of their range, the integers spread over every decade in between.
    """
    exponent = st.floats(-30, np.log10(top)) | st.integers(-30, int(np.log10(top))).map(float)
    kind = draw(st.sampled_from(["zeros", "same", "mixed"]))
    if kind == "zeros":
        return np.zeros(n)
    if kind == "same":
        return np.full(n, 10 ** draw(exponent)) * draw(st.sampled_from([s for s in signs if s]))
    exps = draw(st.lists(exponent, min_size=n, max_size=n))
    picked = draw(st.lists(st.sampled_from(signs), min_size=n, max_size=n))
    return np.asarray(picked) * 10 ** np.asarray(exps, dtype=np.float64)


# A few fixed shapes (scalar, empty, ...) and None (a leaf without parameters): the
# eager op cache, keyed by shape, then stays warm across examples (half the time).
point_leaves = st.sampled_from([(), (0,), (1,), (3,), (2, 3), (0, 2), None])


@st.composite
def point_streams(draw, complex_ok: bool, minibatch: bool, steps: int = POINT_STEPS):
    """A dtype, params with ``None`` leaves, a mask (or None), and a few gradient
    trees (with their mini-batch variances where the point reads one)."""
    dtype = draw(st.sampled_from(DTYPES + (COMPLEX_DTYPES if complex_ok else [])))
    real = _real_dtype(dtype)
    top = _max_magnitude(real)
    leaf_shapes = draw(st.lists(point_leaves, min_size=1, max_size=4))
    keys = [f"l{i}" for i in range(len(leaf_shapes))]
    params = {
        k: None if s is None else jnp.zeros(s, dtype)
        for k, s in zip(keys, leaf_shapes, strict=True)
    }
    mask = None
    if draw(st.booleans()):
        mask = {k: None if params[k] is None else draw(st.booleans()) for k in keys}

    def tree(real_only: bool = False, nonnegative: bool = False):
        out = {}
        for k, shape in zip(keys, leaf_shapes, strict=True):
            if shape is None:
                out[k] = None
                continue
            n = int(np.prod(shape))
            values = _magnitudes(draw, n, top, (0.0, 1.0) if nonnegative else (-1.0, 0.0, 1.0))
            if dtype.startswith("complex") and not real_only:
                angles = draw(st.lists(st.floats(0, 2 * np.pi), min_size=n, max_size=n))
                values = values * np.exp(1j * np.asarray(angles, dtype=np.float64))
            out[k] = jnp.asarray(values.reshape(shape), real if real_only else dtype)
        return out

    grads = [tree() for _ in range(steps)]
    variances = (
        [tree(real_only=True, nonnegative=True) for _ in range(steps)] if minibatch else None
    )
    phase = draw(st.floats(0, 2 * np.pi)) if dtype.startswith("complex") else None
    return dtype, params, mask, grads, variances, phase


def _finite(tree) -> bool:
    def leaf(x):
        a = np.asarray(x)
        return np.all(np.isfinite(a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)))

    return all(bool(leaf(x)) for x in jax.tree.leaves(tree))


def _layout(tree):
    """The treedef (None and MaskedNode positions included) and each leaf's shape and dtype."""
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


def _run_point(opt, params, grads, variances):
    state = opt.init(params)
    layout = _layout(state)
    update = opt.update
    out = []
    for i, g in enumerate(grads):
        extra = {} if variances is None else {"grad_variance": variances[i]}
        u, state = update(g, state, params, **extra)
        assert _layout(state) == layout, f"the state changed layout at step {i + 1}"
        assert _finite(state), f"non-finite state at step {i + 1}"
        out.append(u)
    return out


def _check_point(point: dict, stream) -> None:
    dtype, params, mask, grads, variances, phase = stream
    opt = osv.dissect(RATE, **point)
    if mask is not None:
        # the mini-batch variance is a tree like the gradients: masked with them
        opt = optax.masked(opt, mask, mask_compatible_extra_args=True)
    updates = _run_point(opt, params, grads, variances)
    for i, (u, g) in enumerate(zip(updates, grads, strict=True)):
        assert _layout(u) == _layout(g), f"updates unlike the gradients at step {i + 1} ({dtype})"
        assert _finite(u), f"non-finite update at step {i + 1} ({dtype})"
    if phase is None:
        return
    # e^{i phi} g_t for every t gives e^{i phi} u_t (the mini-batch variance is real: unchanged)
    rotation = np.exp(1j * phase)
    rotated = [
        jax.tree.map(lambda x: jnp.asarray(np.asarray(x) * rotation, x.dtype), g) for g in grads
    ]
    turned = _run_point(opt, params, rotated, variances)
    for i, (u, v) in enumerate(zip(updates, turned, strict=True)):
        for key, a in u.items():
            if a is None:
                continue
            expected = np.asarray(a, np.complex128) * rotation
            got = np.asarray(v[key], np.complex128)
            scale = np.max(np.abs(expected), initial=0.0)
            tolerance = 1e-6 * scale + np.finfo(_real_dtype(dtype)).tiny
            bad = (np.abs(got - expected) > tolerance) & ~_underflows(grads, key, dtype)
            assert not bad.any(), (
                f"step {i + 1}, leaf {key}: e^(i phi) g gave {got[bad]}, not e^(i phi) u = "
                f"{expected[bad]} (phi={phase})"
            )


def _underflows(grads, key: str, dtype: str) -> np.ndarray:
    """Where a gradient was ever nonzero but too small for a phase-exact ``|g|**2``.

    ``|g|**2 = re**2 + im**2`` loses each part's square below the smallest normal
    number (flushed to zero on a CPU), ~1e-38 in float32, so for ``|g|`` under
    ~1e-17 in complex64 the second moment, hence the variance factor, depends on
    the phase of ``g`` by more than rounding (e.g. 2% at 1e-18). The floor is
    100x above that: sqrt(tiny) * 1e4, 1e-15 (1e-150 in complex128).
    """
    floor = np.sqrt(np.finfo(_real_dtype(dtype)).tiny) * 1e4
    size = [np.abs(np.asarray(g[key], np.complex128)) for g in grads]
    return np.any([(m > 0) & (m < floor) for m in size], axis=0)


@pytest.mark.parametrize("index", range(len(POINTS)), ids=[point_id(p) for p in POINTS])
def test_every_point_keeps_finite_updates_state_layout_and_phase(index):
    point = POINTS[index]

    # one seed per point: derandomize would give all 80 points the same few examples
    @settings(FUZZ, max_examples=POINT_EXAMPLES, derandomize=False, database=None)
    @seed(index)
    @given(
        stream=point_streams(
            complex_ok=not _refuses_complex(point), minibatch=point["variance"] == "minibatch"
        )
    )
    def check(stream):
        _check_point(point, stream)

    check()


@pytest.mark.parametrize("point", [p for p in POINTS if _refuses_complex(p)], ids=point_id)
@pytest.mark.parametrize("dtype", COMPLEX_DTYPES)
def test_sign_with_the_optimal_factor_refuses_complex_leaves(point, dtype):
    """The points the phase test leaves out: complex params fail at init, naming the erf."""
    opt = osv.dissect(RATE, **point)
    with pytest.raises(ValueError, match=r"(?s)\['w'\].*erf.*complex"):
        opt.init({"w": jnp.zeros(2, dtype), "b": jnp.zeros((), "float32")})
    # and complex gradients for real params fail at the update
    params = {"w": jnp.zeros(2, _real_dtype(dtype))}
    grads = {"w": jnp.ones(2, dtype)}
    extra = {}
    if point["variance"] == "minibatch":
        extra["grad_variance"] = {"w": jnp.ones(2, _real_dtype(dtype))}
    with pytest.raises(ValueError, match="complex"):
        opt.update(grads, opt.init(params), params, **extra)


@pytest.mark.parametrize("point", POINTS, ids=point_id)
def test_every_point_takes_float16_gradients_up_to_its_range(point):
    """Not left to chance: float16 gradients whose squares overflow float16 (|g| > 256),
    with a float16 mini-batch variance where the point reads one, give finite steps."""
    params = {"w": jnp.zeros(4, "float16")}
    grads = [{"w": jnp.asarray([6e4, -300.0, 1e-3, 0.0], "float16")}] * POINT_STEPS
    variances = None
    if point["variance"] == "minibatch":
        variances = [{"w": jnp.asarray([0.0, 1.0, 6e4, 0.0], "float16")}] * POINT_STEPS
    for i, u in enumerate(_run_point(osv.dissect(RATE, **point), params, grads, variances)):
        assert _layout(u) == _layout(grads[0])
        assert _finite(u), f"step {i + 1}: {u['w']}"
