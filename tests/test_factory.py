"""The family factory: every named optimizer is one point of ``dissect``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_signvar as osv
from optax_signvar import research
from tests.test_oracle import SCHEDULE, stream

B = {"final_lr": 0.05, "gamma": 1e-2}
# a_0 as the optimizer reads it (int32 count); optax's schedule mixes a Python float
# with that int32, which strict promotion (tests/conftest.py) rejects in test code
with jax.numpy_dtype_promotion("standard"):
    A0 = float(SCHEDULE(jnp.int32(0)))

# name -> (named optimizer, the same point through dissect). The table of docs/factory.rst.
POINTS = {
    "m_sgd": (osv.m_sgd(SCHEDULE, beta=0.8), osv.dissect(SCHEDULE, b1=0.8)),
    "ssd": (osv.ssd(SCHEDULE), osv.dissect(SCHEDULE, momentum=False, direction="sign")),
    "m_ssd": (osv.m_ssd(SCHEDULE), osv.dissect(SCHEDULE, direction="sign")),
    "svag": (
        osv.svag(SCHEDULE),
        osv.dissect(SCHEDULE, momentum=False, variance_adaptation="optimal"),
    ),
    "m_svag": (osv.m_svag(SCHEDULE), osv.dissect(SCHEDULE, variance_adaptation="optimal")),
    "m_vassd": (
        osv.m_vassd(SCHEDULE),
        osv.dissect(SCHEDULE, direction="sign", variance_adaptation="optimal"),
    ),
    "m_vassd_adam": (
        osv.m_vassd(SCHEDULE, variance_adaptation="adam"),
        osv.dissect(SCHEDULE, direction="sign", variance_adaptation="adam"),
    ),
    "adam": (osv.adam(SCHEDULE, b2=0.99), osv.dissect(SCHEDULE, normalization="rms", b2=0.99)),
    "amsgrad": (
        osv.amsgrad(SCHEDULE),
        osv.dissect(SCHEDULE, normalization="rms", max_tracking=True),
    ),
    "amsgrad_paper": (
        osv.amsgrad(SCHEDULE, bias_correction=False),
        osv.dissect(SCHEDULE, normalization="rms", max_tracking=True, bias_correction=False),
    ),
    "adabound": (
        osv.adabound(SCHEDULE, weight_decay=1e-3, **B),
        osv.dissect(SCHEDULE, normalization="rms", bounds=B, weight_decay=1e-3),
    ),
    "amsbound": (
        osv.amsbound(SCHEDULE, **B),
        osv.dissect(SCHEDULE, normalization="rms", max_tracking=True, bounds=B, weight_decay=0.0),
    ),
    "adaboundw": (
        osv.adaboundw(SCHEDULE, weight_decay=1e-2, **B),
        # AdaBoundW's lam * a_t / a_0 is the factory's (AdamW's) a_t * (lam / a_0)
        osv.dissect(
            SCHEDULE,
            normalization="rms",
            bounds=B,
            weight_decay=1e-2 / A0,
            decoupled=True,
        ),
    ),
    "amsboundw": (
        osv.amsboundw(SCHEDULE, weight_decay=1e-2, **B),
        osv.dissect(
            SCHEDULE,
            normalization="rms",
            max_tracking=True,
            bounds=B,
            weight_decay=1e-2 / A0,
            decoupled=True,
        ),
    ),
}

# The named scale_by_* transformations are the same points at unit rate.
SCALE_BY = {
    "m_sgd": osv.scale_by_debiased_momentum(0.8),
    "ssd": osv.scale_by_sign(),
    "m_ssd": osv.scale_by_sign_momentum(),
    "svag": osv.scale_by_svag(),
    "m_svag": osv.scale_by_m_svag(),
    "m_vassd": osv.scale_by_m_vassd(),
    "m_vassd_adam": osv.scale_by_m_vassd(variance_adaptation="adam"),
    "adam": osv.scale_by_adam(b2=0.99),
    "amsgrad": osv.scale_by_amsgrad(),
    "amsgrad_paper": osv.scale_by_amsgrad(bias_correction=False),
    "amsbound": osv.scale_by_adabound(SCHEDULE, max_tracking=True, **B),
}


def run(tx, steps=300):
    grads, params = stream(steps)
    cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)  # noqa: E731
    state = tx.init(cast(params[0]))
    update = jax.jit(tx.update)
    out = []
    for g, p in zip(grads, params, strict=True):
        u, state = update(cast(g), state, cast(p))
        out.append(u)
    return out


def assert_bitwise_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", sorted(POINTS))
def test_named_optimizer_is_a_point_of_dissect(name):
    named, point = POINTS[name]
    assert_bitwise_equal(run(named), run(point))


# optax.scale_by_learning_rate evaluates the schedule with its int32 count
@pytest.mark.standard_promotion
@pytest.mark.parametrize("name", sorted(SCALE_BY))
def test_scale_by_transform_is_the_point_at_unit_rate(name):
    named, _ = POINTS[name]
    unit = optax.chain(SCALE_BY[name], optax.scale_by_learning_rate(SCHEDULE))
    assert_bitwise_equal(run(named), run(unit))


REJECTED = [
    (dict(direction="sign", max_tracking=True), "max_tracking keeps the running max"),
    (dict(momentum=False, max_tracking=True), "max_tracking keeps the running max"),
    (dict(normalization="rms", variance_adaptation="optimal"), "already is Adam's implicit"),
    (dict(normalization="rms", direction="sign"), "a sign has no magnitude"),
    (dict(variance="minibatch"), "nothing would use it"),
    (
        dict(variance_adaptation="optimal", variance="minibatch", max_tracking=True),
        "max_tracking",
    ),
    (dict(variance_adaptation="optimal", bias_correction=False), "debiased moments"),
    (dict(variance_adaptation="optimal", b2=0.999), "b2 is only used"),
    (dict(direction="diagonal"), "direction must be one of"),
    (dict(variance_adaptation="erf"), "variance_adaptation must be one of"),
    (dict(normalization="rms", bounds={"final_lr": 0.1, "gamma": 2.0}), "gamma"),
    (dict(weight_decay=-1.0), "weight_decay"),
]


@pytest.mark.parametrize("kwargs,reason", REJECTED)
def test_ill_defined_points_are_rejected_with_the_reason(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        osv.dissect(0.1, **kwargs)


def test_variance_adapted_sgd_with_adabound_bounds():
    """A point no paper named: M-SVAG's factor as a rate, clipped into AdaBound's bounds."""
    opt = osv.dissect(1.0, variance_adaptation="optimal", bounds={"final_lr": 0.1, "gamma": 0.1})
    rng = np.random.default_rng(0)
    state = opt.init(jnp.zeros(50))
    for t in range(1, 200):
        g = jnp.asarray(rng.normal(size=50) + np.linspace(-1, 1, 50), jnp.float32)
        u, state = opt.update(g, state)
        mu_hat = state[0].mu / (1 - 0.9 ** int(state[0].count))
        rate = np.asarray(-u / mu_hat)
        lo, hi = 0.1 * (0.1 * t) / (0.1 * t + 1), 0.1 * (1 + 1 / (0.1 * t))
        assert np.all(rate >= lo * (1 - 1e-5)) and np.all(rate <= hi * (1 + 1e-5))
    # late in training both bounds are ~final_lr: an M-SGD step at the final rate
    late = state[0]._replace(count=jnp.asarray(10**8, jnp.int32))
    u, new = opt.update(g, (late, state[1]))
    mu_hat = new[0].mu / (1 - 0.9 ** int(new[0].count))
    np.testing.assert_allclose(u, -0.1 * mu_hat, rtol=1e-4)


def test_sign_descent_with_max_tracked_variance_adaptation_is_allowed():
    opt = osv.dissect(0.1, direction="sign", variance_adaptation="optimal", max_tracking=True)
    state = opt.init(jnp.zeros(3))
    for g in ([1.0, -1.0, 0.5], [0.1, -1.0, -0.5], [1.0, -1.0, 0.5]):
        u, state = opt.update(jnp.array(g), state)
    assert np.all(np.abs(u) <= 0.1 + 1e-7)
    assert np.all(np.asarray(state[0].nu_max) >= np.asarray(state[0].nu))


def test_minibatch_variance_replaces_the_moving_average():
    g = jnp.array([1.0, 2.0, -1.0])
    var = jnp.array([0.0, 4.0, 1e6])
    for momentum in (False, True):
        opt = osv.dissect(
            1.0, momentum=momentum, variance_adaptation="optimal", variance="minibatch"
        )
        state = opt.init(g)
        assert state[0].nu is None  # no second moment is kept
        u, _ = opt.update(g, state, grad_variance=var)
        # t = 1: mh = g and rho_1 = 1, so the factor is g^2 / (g^2 + var)
        np.testing.assert_allclose(u, -g * g**2 / (g**2 + var), rtol=1e-6)
        with pytest.raises(ValueError, match="grad_variance"):
            opt.update(g, state)
    # the named optimizers take it as an extra argument too, and fall back to the EMA
    named = osv.m_svag(1.0)
    u, _ = named.update(g, named.init(g), grad_variance=var)
    np.testing.assert_allclose(u, -g * g**2 / (g**2 + var), rtol=1e-6)


def noisy_quadratic(x, key):
    noise = 2.0 * jax.random.normal(key, x.shape)
    return 0.5 * jnp.sum(jnp.linspace(0.1, 1.0, x.shape[0]) * x**2) + jnp.sum(noise * x)


def test_ablation_four_quadrants_table():
    quadrants = {
        "M-SGD": dict(learning_rate=0.1),
        "M-SSD": dict(learning_rate=0.01, direction="sign"),
        "M-SVAG": dict(learning_rate=0.1, variance_adaptation="optimal"),
        "M-VASSD": dict(learning_rate=0.01, direction="sign", variance_adaptation="optimal"),
        "adam (named)": osv.adam(0.01),
    }
    rows = research.ablate(
        quadrants, noisy_quadratic, jnp.full(20, 3.0), steps=300, seeds=[0, 1, 2], log_every=100
    )
    assert {r["config"] for r in rows} == set(quadrants)
    assert {r["step"] for r in rows} == {0, 100, 200, 299}
    assert len(rows) == len(quadrants) * 3 * 4
    summary = research.summarize(rows)
    first = {s["config"]: s["mean"] for s in summary if s["step"] == 0}
    last = {s["config"]: s["mean"] for s in summary if s["step"] == 299}
    # shared seeds: every configuration starts from the same point and noise
    assert len({round(v, 6) for v in first.values()}) == 1
    assert all(last[c] < first[c] for c in quadrants)
    assert all(s["n"] == 3 for s in summary)


def test_ablation_shares_seeds_and_records_eval():
    same = {"a": dict(learning_rate=0.1), "b": dict(learning_rate=0.1)}
    rows = research.ablate(
        same,
        noisy_quadratic,
        lambda key: jax.random.normal(key, (5,)),
        steps=20,
        seeds=[3, 4],
        eval_fn=lambda x: jnp.sum(x**2),
    )
    a = [(r["seed"], r["step"], r["loss"], r["eval"]) for r in rows if r["config"] == "a"]
    b = [(r["seed"], r["step"], r["loss"], r["eval"]) for r in rows if r["config"] == "b"]
    assert a == b
    by_seed = {
        s: [r["eval"] for r in rows if r["config"] == "a" and r["seed"] == s] for s in (3, 4)
    }
    assert by_seed[3] != by_seed[4]
    with pytest.raises(ValueError):
        research.ablate(same, noisy_quadratic, jnp.ones(2), steps=0)
