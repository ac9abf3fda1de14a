"""Every optimizer, step by step, against the float64 numpy oracle and optax.

The gradient stream (``stream`` in conftest-free form below) has several
leaves of different shapes, a coordinate that never receives a gradient, a
coordinate with a constant (zero-variance) gradient, sign changes, and
coordinates whose signal-to-noise ratio ranges from high to very low, so that
the variance factors take values across [0, 1]. Updates are compared in
float64 (tight: the formulas must agree to rounding) and in float32 (what users
run; the tolerance is what float32 arithmetic over 300 steps gives).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_signvar as osv
from tests import oracle

STEPS = 300
SCHEDULE = optax.piecewise_constant_schedule(0.02, {100: 0.5, 200: 0.1})


def stream(steps: int = STEPS, seed: int = 0):
    """Gradients and (independent) parameters for each step, as float64 trees."""
    rng = np.random.default_rng(seed)
    shapes = {"w": (3, 4), "b": (5,), "s": ()}
    mean = {
        k: rng.normal(size=s) * rng.choice([0.01, 1.0, 10.0], size=s) for k, s in shapes.items()
    }
    scale = {k: rng.choice([0.0, 0.1, 1.0, 30.0], size=s) for k, s in shapes.items()}
    grads, params = [], []
    for t in range(steps):
        drift = np.cos(t / 40.0)  # the mean wanders and changes sign
        g = {k: mean[k] * drift + scale[k] * rng.normal(size=shapes[k]) for k in shapes}
        g["w"][0, 0] = 0.0  # never updated: m = v = 0 forever
        g["b"][0] = 0.7  # constant: zero variance
        grads.append(g)
        params.append({k: rng.normal(size=s) for k, s in shapes.items()})
    return grads, params


# name -> (optax_signvar factory of the rate, oracle factory of (shape, rate at step 0))
CASES = {
    "m_sgd": (lambda lr: osv.m_sgd(lr), lambda s, a0: oracle.MSGD(s)),
    "m_sgd_b0.5": (lambda lr: osv.m_sgd(lr, beta=0.5), lambda s, a0: oracle.MSGD(s, 0.5)),
    "ssd": (lambda lr: osv.ssd(lr), lambda s, a0: oracle.SSD(s)),
    "m_ssd": (lambda lr: osv.m_ssd(lr), lambda s, a0: oracle.MSSD(s)),
    "svag": (lambda lr: osv.svag(lr), lambda s, a0: oracle.SVAG(s)),
    "svag_b0.7": (lambda lr: osv.svag(lr, beta=0.7), lambda s, a0: oracle.SVAG(s, 0.7)),
    "m_svag": (lambda lr: osv.m_svag(lr), lambda s, a0: oracle.MSVAG(s)),
    "m_svag_b0.99": (lambda lr: osv.m_svag(lr, 0.99), lambda s, a0: oracle.MSVAG(s, 0.99)),
    "m_vassd": (lambda lr: osv.m_vassd(lr), lambda s, a0: oracle.MVASSD(s)),
    "m_vassd_adam": (
        lambda lr: osv.m_vassd(lr, variance_adaptation="adam"),
        lambda s, a0: oracle.MVASSD(s, factor="adam"),
    ),
    "adam": (lambda lr: osv.adam(lr), lambda s, a0: oracle.Adam(s)),
    "adam_b0.5_0.9": (
        lambda lr: osv.adam(lr, b1=0.5, b2=0.9, eps=1e-3),
        lambda s, a0: oracle.Adam(s, 0.5, 0.9, 1e-3),
    ),
    "amsgrad": (lambda lr: osv.amsgrad(lr), lambda s, a0: oracle.AMSGrad(s)),
    "amsgrad_paper": (
        lambda lr: osv.amsgrad(lr, b2=0.99, bias_correction=False),
        lambda s, a0: oracle.AMSGrad(s, b2=0.99, paper=True),
    ),
    "adabound": (lambda lr: osv.adabound(lr), lambda s, a0: oracle.AdaBound(s, a0)),
    "adabound_wd": (
        lambda lr: osv.adabound(lr, final_lr=0.05, gamma=1e-2, weight_decay=5e-3),
        lambda s, a0: oracle.AdaBound(s, a0, final_lr=0.05, gamma=1e-2, weight_decay=5e-3),
    ),
    "amsbound": (lambda lr: osv.amsbound(lr), lambda s, a0: oracle.AdaBound(s, a0, amsbound=True)),
    "amsbound_wd": (
        lambda lr: osv.amsbound(lr, weight_decay=1e-2),
        lambda s, a0: oracle.AdaBound(s, a0, weight_decay=1e-2, amsbound=True),
    ),
    "adaboundw": (
        lambda lr: osv.adaboundw(lr, weight_decay=1e-2),
        lambda s, a0: oracle.AdaBound(s, a0, weight_decay=1e-2, decoupled=True),
    ),
    "amsboundw": (
        lambda lr: osv.amsboundw(lr, gamma=0.05, weight_decay=1e-2),
        lambda s, a0: oracle.AdaBound(
            s, a0, gamma=0.05, weight_decay=1e-2, amsbound=True, decoupled=True
        ),
    ),
}


def run_pair(name: str, dtype, learning_rate=SCHEDULE, steps: int = STEPS):
    """Updates of the package and of the oracle, as two lists of float64 trees."""
    make_tx, make_oracle = CASES[name]
    tx = make_tx(learning_rate)
    grads, params = stream(steps)
    rate = learning_rate if callable(learning_rate) else (lambda t: learning_rate)
    a0 = float(rate(0))
    oracles = {k: make_oracle(np.shape(v), a0) for k, v in grads[0].items()}
    cast = functools.partial(jax.tree.map, lambda x: jnp.asarray(x, dtype))
    state = tx.init(cast(params[0]))
    update = jax.jit(tx.update)
    ours, theirs = [], []
    for t in range(steps):
        u, state = update(cast(grads[t]), state, cast(params[t]))
        ours.append(jax.tree.map(lambda x: np.asarray(x, np.float64), u))
        lr_t = float(rate(t))  # the schedule is read at the count before the increment
        theirs.append({k: oracles[k].step(grads[t][k], params[t][k], lr_t) for k in grads[t]})
    return ours, theirs


def max_relative_deviation(ours, theirs, floor: float = 0.0) -> float:
    """max |u - ref| / max(|ref|, floor * largest |ref| of that step), where ref != 0.

    ``floor = 0`` is the plain elementwise relative deviation. A float32 EMA
    that has nearly cancelled (``|m_t| << |g|``, as where the mean gradient
    changes sign) loses relative precision whatever the implementation, so the
    float32 comparison measures errors relative to the step's scale below
    ``floor`` times its largest element.
    """
    worst = 0.0
    for u, r in zip(ours, theirs, strict=True):
        top = max(float(np.max(np.abs(r[k]))) for k in r)
        for k in r:
            nz = r[k] != 0
            if np.any(nz):
                den = np.maximum(np.abs(r[k][nz]), floor * top)
                worst = max(worst, float(np.max(np.abs(u[k][nz] - r[k][nz]) / den)))
    return worst


def exact_zeros_match(ours, theirs) -> bool:
    return all(
        np.all((u[k] == 0) == (r[k] == 0)) for u, r in zip(ours, theirs, strict=True) for k in r
    )


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_matches_oracle(name, x64):
    ours, theirs = run_pair(name, jnp.float64)
    assert exact_zeros_match(ours, theirs), "zero updates differ from the oracle's"
    assert max_relative_deviation(ours, theirs) < 1e-9


# The stream mixes noise up to 30 with means down to 0.01, so a float32 EMA
# carries absolute rounding errors of ~1e-7 * 30 per step next to values of
# ~1e-2: about 1e-4 relative, which the measured worst case (3e-4) reflects.
F32_FLOOR = 1e-3
F32_RTOL = 1e-3


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_matches_oracle(name):
    ours, theirs = run_pair(name, jnp.float32)
    assert max_relative_deviation(ours, theirs, F32_FLOOR) < F32_RTOL


def test_never_updated_and_zero_variance_coordinates():
    """Where m = v = 0 nothing moves; a constant gradient gets a full step."""
    with jax.enable_x64(True):
        for name in ("svag", "m_svag", "m_vassd", "m_vassd_adam"):
            ours, _ = run_pair(name, jnp.float64, learning_rate=0.1, steps=50)
            assert all(u["w"][0, 0] == 0 for u in ours)
            # zero variance: gamma = 1, so the step is the full (sign or raw) step
            full = 0.7 if name in ("svag", "m_svag") else 1.0
            np.testing.assert_allclose([u["b"][0] for u in ours[1:]], -0.1 * full, rtol=1e-9)


# ----------------------------------------------------------------------------
# Against optax, where optax ships the same algorithm.
# ----------------------------------------------------------------------------

OPTAX_TWINS = {
    "adam": (lambda: osv.adam(SCHEDULE), lambda: optax.adam(SCHEDULE)),
    "adam_eps": (
        lambda: osv.adam(1e-2, b1=0.8, b2=0.95, eps=1e-4),
        lambda: optax.adam(1e-2, b1=0.8, b2=0.95, eps=1e-4),
    ),
    "m_ssd": (lambda: osv.m_ssd(SCHEDULE, beta=0.8), lambda: optax.signum(SCHEDULE, beta=0.8)),
    "ssd": (lambda: osv.ssd(SCHEDULE), lambda: optax.sign_sgd(SCHEDULE)),
}


def run_twins(ours_tx, theirs_tx, dtype, steps=STEPS):
    grads, params = stream(steps)
    cast = functools.partial(jax.tree.map, lambda x: jnp.asarray(x, dtype))
    s1, s2 = ours_tx.init(cast(params[0])), theirs_tx.init(cast(params[0]))
    u1s, u2s = [], []
    for t in range(steps):
        u1, s1 = ours_tx.update(cast(grads[t]), s1, cast(params[t]))
        u2, s2 = theirs_tx.update(cast(grads[t]), s2, cast(params[t]))
        u1s.append(jax.tree.map(np.asarray, u1))
        u2s.append(jax.tree.map(np.asarray, u2))
    return u1s, u2s


@pytest.mark.standard_promotion  # optax's own adam, signum, amsgrad
@pytest.mark.parametrize("name", sorted(OPTAX_TWINS))
def test_equals_optax_float64(name, x64):
    make_ours, make_theirs = OPTAX_TWINS[name]
    ours, theirs = run_twins(make_ours(), make_theirs(), jnp.float64, steps=100)
    assert max_relative_deviation(ours, theirs) < 1e-12
    assert exact_zeros_match(ours, theirs)


@pytest.mark.standard_promotion  # optax's own adam, signum, amsgrad
@pytest.mark.parametrize("name", sorted(OPTAX_TWINS))
def test_equals_optax_float32(name):
    """Sign methods are bit-identical; Adam differs only by optax's float32 1 - b2**t.

    optax rounds b2 = 0.999 to float32 before raising it to t, which puts its
    bias correction off by up to ~1e-5 relative; ours is exact to float32
    (see ``blocks.debias_denominator``).
    """
    make_ours, make_theirs = OPTAX_TWINS[name]
    ours, theirs = run_twins(make_ours(), make_theirs(), jnp.float32, steps=100)
    if name in ("m_ssd", "ssd"):
        for u, r in zip(ours, theirs, strict=True):
            for k in r:
                np.testing.assert_array_equal(u[k], r[k])
    else:
        assert max_relative_deviation(ours, theirs) < 3e-5


@pytest.mark.standard_promotion  # optax's own adam, signum, amsgrad
def test_optax_amsgrad_differs_from_torch_semantics(x64):
    """optax.amsgrad maxes the debiased v; ours (torch's) maxes the raw v.

    With a gradient that shrinks, the early, bias-inflated vh holds optax's max,
    so optax takes smaller steps than torch/ours.
    """
    g = [{"x": np.array([1.0 / (t + 1)])} for t in range(20)]
    ours, theirs = osv.amsgrad(0.1), optax.amsgrad(0.1)
    s1, s2 = ours.init({"x": jnp.zeros(1)}), theirs.init({"x": jnp.zeros(1)})
    ref = oracle.AMSGrad((1,))
    for t in range(20):
        u1, s1 = ours.update(g[t], s1)
        u2, s2 = theirs.update(g[t], s2)
        r = ref.step(g[t]["x"], None, 0.1)
        np.testing.assert_allclose(u1["x"], r, rtol=1e-12)
    assert abs(float(u2["x"][0])) < 0.9 * abs(float(u1["x"][0]))


def test_m_vassd_large_leaf_matches_oracle():
    """Leaves of 2^18+ elements take the inline-erf path on a CPU (blocks): the same
    float32 accuracy against the oracle as the small leaves above, and the same
    updates as XLA's erf to the polynomial's accuracy."""
    from optax_signvar import blocks

    n, steps, lr = blocks._INLINE_ERF_MIN_SIZE, 20, 0.01
    rng = np.random.default_rng(1)
    mean = rng.normal(size=n) * rng.choice([0.01, 1.0], size=n)
    scale = rng.choice([0.0, 0.1, 1.0, 30.0], size=n)
    ref = oracle.MVASSD((n,))
    tx = osv.m_vassd(lr)
    state = tx.init(jnp.zeros(n, jnp.float32))
    small = osv.m_vassd(lr)  # the same stream in leaves below the threshold: XLA's erf
    chunks = 4
    small_state = small.init(list(jnp.zeros((chunks, n // chunks), jnp.float32)))
    update, small_update = jax.jit(tx.update), jax.jit(small.update)
    ours, theirs = [], []
    for t in range(steps):
        g = mean * np.cos(t / 5.0) + scale * rng.normal(size=n)
        u, state = update(jnp.asarray(g, jnp.float32), state)
        us, small_state = small_update(
            list(jnp.asarray(g, jnp.float32).reshape(chunks, -1)), small_state
        )
        np.testing.assert_allclose(np.concatenate(us), u, rtol=0, atol=1e-6 * lr)
        ours.append({"x": np.asarray(u, np.float64)})
        theirs.append({"x": ref.step(g, None, lr)})
    assert max_relative_deviation(ours, theirs, F32_FLOOR) < F32_RTOL
