"""optax_signvar.diagnostics: per-step scalars read from an optimizer state."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_signvar as osv
from optax_signvar import _hyperparams
from optax_signvar.monitoring import diagnostics
from tests.registry import NAMES, OPTIMIZERS, dissect_points, make, point_id

STAT_KEYS = {
    "count",
    "active_fraction",
    "gamma_mean",
    "gamma_q10",
    "gamma_q50",
    "gamma_q90",
    "gamma_below_half",
    "eta2_median",
    "sign_agreement",
}
BOUND_KEYS = {"lower_bound", "upper_bound", "clipped_lower", "clipped_upper"}


def _params():
    return {"w": jnp.zeros((40, 5)), "b": jnp.zeros(7), "frozen": jnp.zeros(13)}


def _grads(i, params, noise=1.0):
    """Per-coordinate signals from clear to buried in noise, at scales 1e-2..1e2 (numpy:
    no jax op to compile); "frozen" never gets a gradient, so its coordinates stay inactive."""
    rng = np.random.default_rng(i)
    out = {}
    for name, p in sorted(params.items()):
        n = p.size
        mean = np.linspace(-1.0, 1.0, n) + noise * rng.standard_normal(n)
        g = 0.0 * mean if name == "frozen" else np.logspace(-2, 2, n) * mean
        out[name] = jnp.asarray(g.reshape(p.shape), p.dtype)
    return out


def _run(opt, steps=6, params=None) -> tuple[Any, Any]:
    params = _params() if params is None else params
    state, update = opt.init(params), jax.jit(opt.update)
    grads = None
    for i in range(steps):
        grads = _grads(i, params)
        _, state = update(grads, state, params)
    return state, grads


def _inner(state):
    (found,) = [
        x
        for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, osv.DissectedState))
        if isinstance(x, osv.DissectedState)
    ]
    return found


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def _numpy_stats(state, beta, beta2, grads=None):
    """Dissecting Adam's quantities in float64 numpy, from the state's buffers."""
    s = _inner(state)
    t = int(s.count)
    m = _flat(s.mu)
    v = _flat(s.nu_max if s.nu_max is not None else s.nu)
    active = (m != 0) | (v > 0)
    mh, vh = m / (1 - beta**t), v / (1 - beta2**t)
    rho = (1 - beta) * (1 + beta**t) / ((1 + beta) * (1 - beta**t))
    s_t = np.maximum(vh - mh**2, 0) / (1 - rho) if t >= 2 else np.zeros_like(mh)
    var = rho * s_t
    a_m, a_var = mh[active], var[active]
    gamma = a_m**2 / (a_m**2 + a_var)
    with np.errstate(divide="ignore"):
        eta2 = np.where(a_m != 0, a_var / a_m**2, np.inf)
        z = np.sqrt(a_m**2 / (2 * a_var))
    agree = 0.5 * (1 + np.array([math.erf(x) for x in z]))
    out = {
        "count": t,
        "active_fraction": active.mean(),
        "gamma_mean": gamma.mean(),
        "gamma_below_half": (gamma < 0.5).mean(),
        "eta2_median": np.median(eta2),
        "sign_agreement": agree.mean(),
    }
    for q in (0.1, 0.5, 0.9):
        out[f"gamma_q{round(100 * q)}"] = np.quantile(gamma, q)
    if grads is not None:
        g = _flat(grads)
        out["grad_norm"] = np.linalg.norm(g)
        out["grad_cosine"] = g @ m / (np.linalg.norm(g) * np.linalg.norm(m))
    return out, active, v


def _check_ranges(d):
    qs = [float(d[k]) for k in ("gamma_q10", "gamma_q50", "gamma_q90")]
    assert 0.0 <= qs[0] <= qs[1] <= qs[2] <= 1.0
    for k in ("gamma_mean", "gamma_below_half", "active_fraction"):
        assert 0.0 <= float(d[k]) <= 1.0, k
    assert 0.5 <= float(d["sign_agreement"]) <= 1.0
    assert float(d["eta2_median"]) >= 0.0
    assert all(v.dtype == jnp.float32 and v.shape == () for v in d.values())


@pytest.mark.parametrize(
    "name, opt, beta, beta2",
    [
        ("m_svag", osv.m_svag(0.1), 0.9, None),
        ("m_svag_beta", osv.m_svag(0.1, beta=0.7), 0.7, None),
        ("adam", osv.adam(1e-3, b1=0.8, b2=0.99), 0.8, 0.99),
        ("amsgrad", osv.amsgrad(1e-3), 0.9, 0.999),
    ],
)
def test_matches_numpy(name, opt, beta, beta2):
    state, grads = _run(opt)
    d = diagnostics(state, b1=beta, b2=beta2, grads=grads, max_coordinates=None)
    expected, _, _ = _numpy_stats(state, beta, beta if beta2 is None else beta2, grads)
    # the optimizer's own record gives the same decays (b2 = b1 for M-SVAG's one decay)
    via_optimizer = diagnostics(state, opt, grads=grads, max_coordinates=None)
    assert {k: float(v) for k, v in via_optimizer.items()} == {k: float(v) for k, v in d.items()}
    assert set(d) == STAT_KEYS | {"grad_norm", "grad_cosine"}
    for key, want in expected.items():
        np.testing.assert_allclose(float(d[key]), want, rtol=2e-5, atol=1e-6, err_msg=key)
    assert float(d["active_fraction"]) == pytest.approx(207 / 220)
    _check_ranges(d)
    # the default max_coordinates (16,384) is exact for this size
    default = diagnostics(state, opt, grads=grads)
    for key in d:
        assert float(default[key]) == float(d[key]), key


def test_jit_gives_the_same_numbers():
    opt = osv.m_svag(0.1)
    state, grads = _run(opt)
    eager = diagnostics(state, opt, grads=grads)
    jitted = jax.jit(lambda s, g: diagnostics(s, opt, grads=g))(state, grads)
    assert set(eager) == set(jitted)
    for key in eager:
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-6, err_msg=key)


def test_first_step_is_noise_free_and_fresh_state_is_nan():
    opt = osv.m_svag(0.1)
    params = _params()
    fresh = diagnostics(opt.init(params), opt)
    assert float(fresh["count"]) == 0 and float(fresh["active_fraction"]) == 0
    assert all(np.isnan(float(fresh[k])) for k in STAT_KEYS - {"count", "active_fraction"})
    # t = 1: s_1 = 0, so gamma = 1 and the sign is certain wherever m != 0
    d = diagnostics(_run(opt, steps=1)[0], opt)
    assert float(d["gamma_mean"]) == 1.0 and float(d["gamma_q10"]) == 1.0
    assert float(d["eta2_median"]) == 0.0 and float(d["sign_agreement"]) == 1.0


@pytest.mark.standard_promotion  # it wraps the state in optax.MultiSteps
def test_wrappers_find_the_state():
    inner_opt = osv.m_svag(0.1)  # a wrapper has no record: pass the package's optimizer
    plain, grads = _run(inner_opt)
    want = diagnostics(plain, inner_opt, grads=grads)
    wrapped = {
        # no optimizer: the decay (beta) is read from the state's hyperparams
        "inject_hyperparams": (optax.inject_hyperparams(osv.m_svag)(learning_rate=0.1), None),
        "apply_if_finite": (optax.apply_if_finite(inner_opt, 3), inner_opt),
        "masked": (optax.masked(inner_opt, lambda p: jax.tree.map(lambda _: True, p)), inner_opt),
    }
    for name, (opt, optimizer) in wrapped.items():
        state, _ = _run(opt)
        got = diagnostics(state, optimizer, grads=grads)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=f"{name}: {key}")
    # MultiSteps: the inner state after 3 real updates of two averaged mini-batches
    ms_state, grads = _run(optax.MultiSteps(inner_opt, 2))
    got = diagnostics(ms_state, inner_opt, grads=grads)
    assert float(got["count"]) == 3
    inner = diagnostics(ms_state.inner_opt_state, inner_opt, grads=grads)
    assert all(float(got[k]) == float(inner[k]) for k in got)
    _check_ranges(got)


def test_masked_state_and_grads():
    params = _params()
    mask = {"w": True, "b": False, "frozen": True}
    opt = osv.m_svag(0.1)
    state, grads = _run(optax.masked(opt, mask))
    d = diagnostics(state, opt)  # b is not tracked: 200 + 13 coordinates, 13 of them inactive
    assert float(d["active_fraction"]) == pytest.approx(200 / 213)
    with pytest.raises(ValueError, match="do not match the momentum"):
        diagnostics(state, opt, grads=grads)
    tracked = {k: v for k, v in grads.items() if mask[k]}
    d = diagnostics(state, opt, grads=tracked)
    assert 0.0 < float(d["grad_cosine"]) <= 1.0
    assert float(d["grad_norm"]) == pytest.approx(np.linalg.norm(_flat(tracked)), rel=1e-6)
    del params


def test_adabound_bounds_and_clipped_shares():
    schedule = optax.exponential_decay(1e-3, transition_steps=1, decay_rate=0.9)
    bounds = osv.Bounds(final_lr=0.01, gamma=0.1)
    opt = osv.adabound(schedule, final_lr=bounds.final_lr, gamma=bounds.gamma)
    state, _ = _run(opt, steps=5)
    d = jax.jit(lambda s: diagnostics(s, opt))(state)  # bounds, rate, decays: the optimizer's
    assert set(d) == STAT_KEYS | BOUND_KEYS
    restated = jax.jit(
        lambda s: diagnostics(s, b1=0.9, b2=0.999, bounds=bounds, learning_rate=schedule)
    )(state)
    assert {k: float(v) for k, v in restated.items()} == {k: float(v) for k, v in d.items()}
    _check_ranges(d)
    # step t = 5 used a_t = schedule(4) and f_t = final_lr * a_t / a_0
    t, a_t = 5, float(schedule(4))
    f_t = 0.01 * a_t / 1e-3
    lo, hi = f_t * (1 - 1 / (0.1 * t + 1)), f_t * (1 + 1 / (0.1 * t))
    assert float(d["lower_bound"]) == pytest.approx(lo, rel=1e-5)
    assert float(d["upper_bound"]) == pytest.approx(hi, rel=1e-5)
    assert float(d["lower_bound"]) <= float(d["upper_bound"])
    # the per-element rates in numpy: the scales 1e-2..1e2 put some below and some above
    _, active, v = _numpy_stats(state, 0.9, 0.999)
    rate = a_t * math.sqrt(1 - 0.999**t) / ((1 - 0.9**t) * (np.sqrt(v) + 1e-8))
    want_lo, want_hi = (rate < lo)[active].mean(), (rate > hi)[active].mean()
    assert 0 < want_lo < 1 and 0 < want_hi < 1
    assert float(d["clipped_lower"]) == pytest.approx(want_lo, abs=1e-6)
    assert float(d["clipped_upper"]) == pytest.approx(want_hi, abs=1e-6)
    for key in ("clipped_lower", "clipped_upper"):
        assert 0.0 <= float(d[key]) <= 1.0


def test_adabound_under_inject_hyperparams():
    opt = optax.inject_hyperparams(osv.amsbound)(learning_rate=1e-3, final_lr=0.01, gamma=0.1)
    state, _ = _run(opt, steps=5)
    hp = state.hyperparams
    b = osv.Bounds(hp["final_lr"], hp["gamma"])
    restated = diagnostics(
        state, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], bounds=b, learning_rate=hp["learning_rate"]
    )
    d = diagnostics(state)  # all of them from the state's hyperparams
    assert set(d) == STAT_KEYS | BOUND_KEYS
    assert {k: float(v) for k, v in restated.items()} == {k: float(v) for k, v in d.items()}
    jitted = jax.jit(diagnostics)(state)  # traced hyperparams
    for key in d:
        np.testing.assert_allclose(jitted[key], d[key], rtol=1e-6, err_msg=key)
    assert float(d["lower_bound"]) == pytest.approx(0.01 * (1 - 1 / 1.5), rel=1e-5)
    assert float(d["upper_bound"]) == pytest.approx(0.01 * 3, rel=1e-5)
    assert 0.0 <= float(d["clipped_lower"]) + float(d["clipped_upper"]) <= 1.0


def test_states_without_both_moments():
    params = _params()
    # ssd keeps no moment: the count only (and the gradient norm when given)
    state, grads = _run(osv.ssd(0.1))
    assert set(diagnostics(state)) == {"count"}
    d = diagnostics(state, grads=grads)
    assert set(d) == {"count", "grad_norm"} and float(d["count"]) == 6
    # m_sgd keeps the momentum only: its cosine with the gradient too (neither needs a decay)
    state, grads = _run(osv.m_sgd(0.1))
    assert set(diagnostics(state, grads=grads)) == {"count", "grad_norm", "grad_cosine"}
    with pytest.raises(ValueError, match="no second moment"):
        diagnostics(state, bounds=osv.Bounds(), learning_rate=0.1)
    del params


def test_clear_errors():
    params = _params()
    with pytest.raises(ValueError, match="no optax_signvar.DissectedState"):
        diagnostics(optax.adam(0.1).init(params))
    with pytest.raises(ValueError, match="found 2 DissectedStates"):
        diagnostics(optax.chain(osv.m_svag(0.1), osv.adam(0.1)).init(params))
    state = osv.m_svag(0.1).init(params)
    with pytest.raises(ValueError, match="bounds need the learning rate"):
        diagnostics(state, b1=0.9, bounds=osv.Bounds())
    with pytest.raises(ValueError, match="learning_rate is only used with AdaBound's bounds"):
        diagnostics(state, osv.m_svag(0.1), learning_rate=0.1)
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\]"):
        diagnostics(state, quantiles=(0.5, 1.5))
    with pytest.raises(ValueError, match="max_coordinates"):
        diagnostics(state, max_coordinates=0)


def test_custom_quantiles_and_subsampling():
    opt = osv.m_svag(0.1)
    state, _ = _run(opt)
    exact = diagnostics(state, opt, quantiles=(0.25, 0.999), max_coordinates=None)
    assert {"gamma_q25", "gamma_q99.9"} <= set(exact) and "gamma_q50" not in exact
    sub = diagnostics(state, opt, quantiles=(0.25, 0.999), max_coordinates=100)
    # means and shares stay exact; the order statistics come from ~100 of the 207 active
    for key in ("gamma_mean", "gamma_below_half", "sign_agreement", "active_fraction"):
        np.testing.assert_allclose(sub[key], exact[key], rtol=1e-6)
    assert abs(float(sub["gamma_q25"]) - float(exact["gamma_q25"])) < 0.1
    assert 0.0 <= float(sub["gamma_q25"]) <= float(sub["gamma_q99.9"]) <= 1.0
    assert 0.5 < float(sub["eta2_median"]) / float(exact["eta2_median"]) < 2.0


def test_half_precision_moments_and_strict_promotion():
    params = {"w": jnp.zeros(64)}
    opt, ab_opt = osv.m_svag(0.1, mu_dtype=jnp.bfloat16), osv.adabound(1e-3)
    state, grads = _run(opt, params=params)
    ab_state, _ = _run(ab_opt, params=params)
    with jax.numpy_dtype_promotion("strict"):
        d = jax.jit(lambda s, g: diagnostics(s, opt, grads=g))(state, grads)
        b = jax.jit(lambda s: diagnostics(s, ab_opt))(ab_state)
    assert set(b) == STAT_KEYS | BOUND_KEYS
    assert all(v.dtype == jnp.float32 for v in [*d.values(), *b.values()])
    _check_ranges(d)


def test_flax_nnx_optimizer_state():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    tx = osv.m_svag(0.1)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(0), (16, 3))
    for _ in range(2):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)
    d = diagnostics(optimizer.opt_state, tx, grads=grads)
    assert float(d["count"]) == 2 and float(d["active_fraction"]) == 1.0
    _check_ranges(d)


# --------------------------------------------------------------------------- #
# The hyperparameters are the optimizer's (issue: diagnostics restated b1=0.9,
# b2=b1, which is not Adam's b2=0.999).
# --------------------------------------------------------------------------- #


def _noisy_stream(opt, n=2000, steps=50, sigma=2.0):
    """A fixed mean per coordinate, linspace(-1, 1), under N(0, sigma^2) noise: the
    momentum's sign is right for about 80% of the coordinates after 50 steps."""
    rng = np.random.default_rng(0)
    mean = np.linspace(-1.0, 1.0, n)
    state, update = opt.init(jnp.zeros(n)), jax.jit(opt.update)
    for _ in range(steps):
        g = jnp.asarray(mean + sigma * rng.standard_normal(n), jnp.float32)
        _, state = update(g, state)
    return state, mean


def test_adam_defaults_are_read_from_the_optimizer():
    opt = osv.adam(0.1)  # b1=0.9, b2=0.999
    state, mean = _noisy_stream(opt)
    d = diagnostics(state, opt, max_coordinates=None)
    explicit = diagnostics(state, b1=0.9, b2=0.999, max_coordinates=None)
    assert {k: float(v) for k, v in d.items()} == {k: float(v) for k, v in explicit.items()}
    # the float64 numpy oracle, with Adam's decays
    expected, _, _ = _numpy_stats(state, 0.9, 0.999)
    for key, want in expected.items():
        np.testing.assert_allclose(float(d[key]), want, rtol=2e-5, atol=1e-6, err_msg=key)
    # seen: gamma_mean 0.515, sign_agreement 0.832; the momentum's sign is right for
    # 81.9% of the coordinates. The restated b2 = b1 = 0.9 gave 0.877 and 0.961.
    agree = float(np.mean(np.sign(np.asarray(_inner(state).mu)) == np.sign(mean)))
    assert agree == pytest.approx(0.82, abs=0.02)
    assert float(d["sign_agreement"]) == pytest.approx(agree, abs=0.03)
    assert float(d["gamma_mean"]) == pytest.approx(0.515, abs=0.01)
    wrong = diagnostics(state, b1=0.9, b2=0.9, max_coordinates=None)
    assert float(wrong["sign_agreement"]) > 0.95 and float(wrong["gamma_mean"]) > 0.85
    # an explicit b1 overrides the record; Adam's b2 stays the record's 0.999
    assert float(diagnostics(state, opt, b1=0.9)["gamma_mean"]) == float(d["gamma_mean"])


def test_bare_state_raises_rather_than_guesses():
    opt = osv.adam(0.1)
    state, _ = _run(opt, steps=2)
    with pytest.raises(ValueError, match="b1 is unknown") as info:
        diagnostics(state)
    message = str(info.value)  # the three ways
    assert "diagnostics(state, opt)" in message and "b1=" in message
    assert "inject_hyperparams" in message
    with pytest.raises(ValueError, match="b1 is unknown"):
        jax.jit(diagnostics)(state)
    with pytest.raises(ValueError, match="b1 is unknown"):
        diagnostics(state, b2=0.999)
    # an explicit b1 alone is Dissecting Adam's one decay (b2 = b1)
    m_state, _ = _run(osv.m_svag(0.1, beta=0.7))
    alone = diagnostics(m_state, b1=0.7)
    both = diagnostics(m_state, b1=0.7, b2=0.7)
    assert {k: float(v) for k, v in alone.items()} == {k: float(v) for k, v in both.items()}


def test_explicit_b1_with_a_one_decay_optimizer_moves_b2_too():
    opt = osv.m_svag(0.1, beta=0.7)
    state, _ = _run(opt)
    got = diagnostics(state, opt, b1=0.8)
    want = diagnostics(state, b1=0.8, b2=0.8)
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in want.items()}


@pytest.mark.parametrize(
    "factory, kwargs, b1, b2",
    [
        (osv.adam, {"learning_rate": 0.1, "b1": 0.8, "b2": 0.99}, 0.8, 0.99),
        (osv.adam, {"learning_rate": 0.1}, 0.9, 0.999),
        (osv.m_svag, {"learning_rate": 0.1, "beta": 0.7}, 0.7, 0.7),
        (osv.m_vassd, {"learning_rate": 0.1}, 0.9, 0.9),
    ],
    ids=["adam", "adam_defaults", "m_svag_beta", "m_vassd"],
)
def test_inject_hyperparams_gives_the_same_as_explicit(factory, kwargs, b1, b2):
    opt = optax.inject_hyperparams(factory)(**kwargs)
    state, grads = _run(opt)
    explicit = diagnostics(state, b1=b1, b2=b2, grads=grads)
    for got in (diagnostics(state, grads=grads), jax.jit(diagnostics)(state, grads=grads)):
        assert set(got) == set(explicit)
        for key in got:
            # the injected decays are float32 arrays, these Python floats
            np.testing.assert_allclose(got[key], explicit[key], rtol=2e-5, err_msg=key)


def test_injected_b1_without_b2_is_ambiguous():
    # dissect's b2=None is not a number, so inject_hyperparams keeps b1 only
    opt = optax.inject_hyperparams(osv.dissect)(learning_rate=0.1, variance_adaptation="optimal")
    state, _ = _run(opt)
    with pytest.raises(ValueError, match="b2 is unknown"):
        diagnostics(state)
    got = diagnostics(state, b2=0.9)
    want = diagnostics(state, b1=state.hyperparams["b1"], b2=0.9)
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in want.items()}


@pytest.mark.parametrize("name", ["adabound", "amsbound", "adaboundw", "amsboundw"])
def test_adabound_family_gives_bounds_statistics_without_restating(name):
    opt = make(name)
    state, _ = _run(opt, steps=4)
    d = diagnostics(state, opt)
    assert set(d) == STAT_KEYS | BOUND_KEYS
    final_lr = 1e-2  # the registry's, with learning_rate 1e-2: f_t = 1e-2
    t = 4
    assert float(d["lower_bound"]) == pytest.approx(final_lr * (1 - 1 / (1e-3 * t + 1)), rel=1e-5)
    assert float(d["upper_bound"]) == pytest.approx(final_lr * (1 + 1 / (1e-3 * t)), rel=1e-5)
    restated = diagnostics(
        state, b1=0.9, b2=0.999, eps=1e-8, bounds=osv.Bounds(final_lr, 1e-3), learning_rate=1e-2
    )
    assert {k: float(v) for k, v in restated.items()} == {k: float(v) for k, v in d.items()}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"b1": 1.0}, "b1"),
        ({"b1": -0.1}, "b1"),
        ({"b1": 0.9, "b2": 1.5}, "b2"),
        ({"beta": 1.0}, "b1"),  # the old spelling, named by the new
        ({"b1": 0.9, "eps": -1e-8, "bounds": osv.Bounds(), "learning_rate": 0.1}, "eps"),
        ({"b1": 0.9, "bounds": osv.Bounds(0.1, 1.5), "learning_rate": 0.1}, "gamma"),
        ({"b1": 0.9, "bounds": {"final_lr": 0.1, "gamma": -0.1}, "learning_rate": 0.1}, "gamma"),
        ({"b1": 0.9, "bounds": osv.Bounds(-0.1, 1e-3), "learning_rate": 0.1}, "final_lr"),
        ({"b1": 0.9, "bounds": osv.Bounds(), "learning_rate": -0.1}, "learning_rate"),
    ],
)
def test_invalid_hyperparameters_raise_naming_them(kwargs, name):
    state, _ = _run(osv.adabound(1e-2), steps=2)
    with pytest.warns(DeprecationWarning) if "beta" in kwargs else contextlib.nullcontext():
        with pytest.raises(ValueError, match=f"{name} must be in"):
            diagnostics(state, **kwargs)


def test_injected_values_are_checked_when_concrete():
    opt = optax.inject_hyperparams(osv.adabound)(learning_rate=1e-2)
    state, _ = _run(opt, steps=2)
    for key, value in [("b1", 1.0), ("b2", -0.5), ("gamma", -0.1), ("final_lr", -1.0)]:
        bad = state._replace(hyperparams={**state.hyperparams, key: jnp.asarray(value)})
        with pytest.raises(ValueError, match=f"{key} must be in"):
            diagnostics(bad)
        # traced (under jit) they cannot be checked in Python: no error
        assert set(jax.jit(diagnostics)(bad)) == STAT_KEYS | BOUND_KEYS


def test_traced_hyperparameters_are_not_checked():
    state, _ = _run(osv.m_svag(0.1), steps=2)
    # a traced b1 cannot be checked in Python: no error (the numbers are what they are)
    d = jax.jit(lambda s, b: diagnostics(s, b1=b))(state, jnp.float32(1.0))
    assert set(d) == STAT_KEYS


def test_optimizer_not_of_the_package():
    params = _params()
    state = osv.adam(0.1).init(params)
    for opt in (optax.adam(0.1), optax.chain(optax.clip(1.0), osv.adam(0.1))):
        with pytest.raises(ValueError, match="not one of optax_signvar's") as info:
            diagnostics(state, opt)
        assert "b1=" in str(info.value) and "the package's optimizer itself" in str(info.value)
    with pytest.raises(TypeError, match="optimizer must be"):
        diagnostics(state, 0.9)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("name", NAMES)
def test_every_named_optimizer_records_its_hyperparameters(name):
    opt = make(name)
    record = _hyperparams.lookup(opt)
    assert record is not None
    rms = record.dissection.normalization == "rms"
    assert record.b1 == 0.9 and record.b2 == (0.999 if rms else 0.9)
    assert (record.bounds is not None) == ("bound" in name)
    assert record.learning_rate == OPTIMIZERS[name].kwargs["learning_rate"]


@pytest.mark.parametrize("point", dissect_points(), ids=point_id)
def test_dissect_and_scale_by_dissection_record(point):
    opt = osv.dissect(0.1, b1=0.8, **point)
    record = _hyperparams.lookup(opt)
    assert record is not None and record.dissection == osv.Dissection(**point)
    want_b2 = 0.999 if point["normalization"] == "rms" else 0.8
    assert (record.b1, record.b2, record.eps, record.learning_rate) == (0.8, want_b2, 1e-8, 0.1)
    # the inner transformation carries it too; a re-wrap that keeps update keeps it
    core = osv.scale_by_dissection(osv.Dissection(**point), learning_rate=0.1, b1=0.8)
    assert _hyperparams.lookup(core) == record
    assert _hyperparams.lookup(optax.GradientTransformation(core.init, core.update)) == record


def test_scale_by_transformations_record():
    cases = {
        "scale_by_adam": (osv.scale_by_adam(), 0.9, 0.999),
        "scale_by_m_svag": (osv.scale_by_m_svag(0.7), 0.7, 0.7),
        "scale_by_sign_momentum": (osv.scale_by_sign_momentum(0.5), 0.5, 0.5),
        "scale_by_adabound": (osv.scale_by_adabound(1e-2), 0.9, 0.999),
    }
    for name, (tx, b1, b2) in cases.items():
        record = _hyperparams.lookup(tx)
        assert record is not None, name
        assert (record.b1, record.b2) == (b1, b2), name
    assert _hyperparams.lookup(osv.scale_by_adabound(1e-2)).bounds == osv.Bounds()  # pyright: ignore[reportOptionalMemberAccess]
    assert _hyperparams.lookup(optax.adam(0.1)) is None


def test_example_runs(capsys):
    # scikit-learn and tqdm are in the test extra: a missing one is a failure, not a skip.
    import sklearn  # noqa: F401
    import tqdm  # noqa: F401

    from optax_signvar.demo.diagnostics import main

    history = main(["--steps", "12", "--no-progress"])
    assert len(history["loss"]) == len(history["gamma_mean"]) == 12
    assert history["gamma_mean"][0] == 1.0  # the first M-SVAG step is an SGD step
    assert 0.0 < history["active_fraction"][-1] < 1.0  # digits has constant border pixels
    out = capsys.readouterr().out
    assert "P(sign)" in out and "test accuracy" in out


def _numpy_rates(state, b1, b2, a_t, eps=1e-8, adabound=False):
    """The per-element rates of the active coordinates in float64 numpy (AdaBound's form with
    ``adabound``: eps on the root of the raw v)."""
    s = _inner(state)
    t = int(s.count)
    _, active, v = _numpy_stats(state, b1, b2)
    if adabound:
        rate = a_t * math.sqrt(1 - b2**t) / ((1 - b1**t) * (np.sqrt(v) + eps))
    else:
        rate = a_t / ((1 - b1**t) * (np.sqrt(v / (1 - b2**t)) + eps))
    return rate[active]


def _check_rate_keys(d, rate, low, high, prefix="", rtol=2e-5):
    for q in (0.1, 0.5, 0.9):
        key = f"{prefix}rate_q{round(100 * q)}"
        np.testing.assert_allclose(float(d[key]), np.quantile(rate, q), rtol=rtol, err_msg=key)
    np.testing.assert_allclose(float(d[prefix + "rate_min"]), rate.min(), rtol=rtol)
    np.testing.assert_allclose(float(d[prefix + "rate_max"]), rate.max(), rtol=rtol)
    below, above = (rate < low).mean(), (rate > high).mean()
    assert float(d[f"{prefix}rate_below_{low:g}"]) == pytest.approx(below, abs=1e-6)
    assert float(d[f"{prefix}rate_above_{high:g}"]) == pytest.approx(above, abs=1e-6)


RATE_KEYS = {"rate_q10", "rate_q50", "rate_q90", "rate_min", "rate_max"}


@pytest.mark.parametrize(
    "opt, b1, b2",
    [
        (osv.adam(optax.exponential_decay(1e-3, 1, 0.9), b1=0.8, b2=0.99), 0.8, 0.99),
        (osv.amsgrad(optax.exponential_decay(1e-3, 1, 0.9)), 0.9, 0.999),  # v: the running max
    ],
    ids=["adam", "amsgrad"],
)
def test_rates_match_numpy(opt, b1, b2):
    schedule = optax.exponential_decay(1e-3, 1, 0.9)
    state, _ = _run(opt)
    rate = _numpy_rates(state, b1, b2, float(schedule(5)))  # step t = 6 used a_5
    low, high = np.quantile(rate, 0.3), np.quantile(rate, 0.8)  # shares strictly inside (0, 1)
    kwargs = dict(rates=True, rate_thresholds=(low, high), max_coordinates=None)
    d = jax.jit(lambda s: diagnostics(s, opt, **kwargs))(state)  # the rate from the record
    below, above = f"rate_below_{low:g}", f"rate_above_{high:g}"
    assert set(d) == STAT_KEYS | RATE_KEYS | {below, above}
    _check_rate_keys(d, rate, low, high)
    assert 0 < float(d[below]) < 1 and 0 < float(d[above]) < 1
    # the rate given as the schedule (no bounds needed), eagerly: the same numbers
    explicit = diagnostics(state, b1=b1, b2=b2, learning_rate=schedule, **kwargs)
    for key in d:
        np.testing.assert_allclose(explicit[key], d[key], rtol=1e-6, err_msg=key)
    # without rates=True the keys are as before
    assert set(diagnostics(state, opt)) == STAT_KEYS


@pytest.mark.parametrize("factory", [osv.adabound, osv.amsbound])
def test_rates_of_adabound_before_and_after_the_clip(factory):
    schedule = optax.exponential_decay(1e-3, transition_steps=1, decay_rate=0.9)
    opt = factory(schedule, final_lr=0.01, gamma=0.1)
    state, _ = _run(opt, steps=5)
    a_t = float(schedule(4))
    # AdaBound's form (eps on the root of the raw v; AMSBound's v: the running max)
    rate = _numpy_rates(state, 0.9, 0.999, a_t, adabound=True)
    d = jax.jit(lambda s: diagnostics(s, opt, rates=True, max_coordinates=None))(state)
    rate_keys = RATE_KEYS | {"rate_below_0.01", "rate_above_1000"}
    bounded = {"bounded_" + k for k in rate_keys}
    assert set(d) == STAT_KEYS | BOUND_KEYS | rate_keys | bounded
    _check_rate_keys(d, rate, 0.01, 1000.0)
    lo, hi = float(d["lower_bound"]), float(d["upper_bound"])
    assert 0 < (rate < lo).mean() and 0 < (rate > hi).mean()  # the clip bites at both ends
    _check_rate_keys(d, np.clip(rate, lo, hi), 0.01, 1000.0, prefix="bounded_", rtol=1e-5)
    assert lo <= float(d["bounded_rate_min"]) <= float(d["bounded_rate_max"]) <= hi
    # the shares the bounds clip are those of the unclipped rate beyond them
    assert float(d["clipped_lower"]) == pytest.approx((rate < lo).mean(), abs=1e-6)
    # restated by hand: the same
    restated = diagnostics(
        state,
        b1=0.9,
        b2=0.999,
        bounds=osv.Bounds(0.01, 0.1),
        learning_rate=schedule,
        rates=True,
        max_coordinates=None,
    )
    for key in d:
        np.testing.assert_allclose(restated[key], d[key], rtol=1e-6, err_msg=key)


def test_rates_subsampled_fresh_and_errors():
    opt = osv.adam(1e-3)
    state, _ = _run(opt)
    exact = diagnostics(state, opt, rates=True, max_coordinates=None)
    sub = diagnostics(state, opt, rates=True, max_coordinates=100)
    # extremes and shares stay exact; the quantiles come from ~100 of the 207 active
    for key in ("rate_min", "rate_max", "rate_below_0.01", "rate_above_1000"):
        np.testing.assert_allclose(sub[key], exact[key], rtol=1e-6, err_msg=key)
    assert 0.5 < float(sub["rate_q50"]) / float(exact["rate_q50"]) < 2.0
    # an inject_hyperparams state: the rate and decays from the state, traced under jit
    injected = optax.inject_hyperparams(osv.adam)(learning_rate=1e-3)
    traced = jax.jit(lambda s: diagnostics(s, rates=True))(_run(injected)[0])
    for key in exact:
        np.testing.assert_allclose(traced[key], exact[key], rtol=1e-5, err_msg=key)
    fresh = diagnostics(opt.init(_params()), opt, rates=True)
    assert all(np.isnan(float(fresh[k])) for k in RATE_KEYS)
    with pytest.raises(ValueError, match="does not divide by sqrt"):
        diagnostics(_run(osv.m_svag(0.1))[0], osv.m_svag(0.1), rates=True)
    with pytest.raises(ValueError, match="rates=True needs the learning rate"):
        diagnostics(state, b1=0.9, b2=0.999, rates=True)
    with pytest.raises(ValueError, match="rates need Adam's or AdaBound's state"):
        diagnostics(_run(osv.m_sgd(0.1))[0], learning_rate=0.1, rates=True)
    with pytest.raises(ValueError, match="rate_thresholds"):
        diagnostics(state, opt, rates=True, rate_thresholds=(10.0, 1.0))


def test_mixed_float64_and_float32_leaves_under_x64():
    # a state whose leaves differ in precision: the quantiles are taken in the widest dtype
    with jax.enable_x64(True):
        params = {
            "a": jnp.linspace(-1.0, 1.0, 7),
            "b": jnp.linspace(0.5, 2.0, 5, dtype=jnp.float32),
        }
        opt = osv.adam(1e-3)
        state = opt.init(params)
        grads = jax.tree.map(lambda x: x * 0.5 + 0.1, params)
        _, state = opt.update(grads, state, params)
        d = osv.diagnostics(state, opt, rates=True)
        assert all(v.dtype == jnp.float32 for v in d.values())
        assert np.isfinite(float(d["gamma_q50"])) and np.isfinite(float(d["rate_q50"]))
