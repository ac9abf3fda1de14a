"""Unusual inputs give the right numbers or a clear error, never silently wrong ones.

Complex parameters (moments of ``|g|**2``, updates along ``g``, the sign as
``g/|g|``), integer gradients (computed in floating point) and parameters
(refused), gradient trees whose leaves are ``None`` or of another shape than
the state's, and hyperparameters written into ``optax.inject_hyperparams``'
state out of their range (NaN by default, named by a ``checkify`` check when
asked).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import optax_signvar as osv
from optax_signvar.minibatch import per_example_grad_moments
from tests.registry import NAMES, OPTIMIZERS, make

# M-VASSD's optimal factor is the sign agreement of a *real* Gaussian: refused for complex
COMPLEX_REFUSED = {"m_vassd"}
COMPLEX_NAMES = [n for n in NAMES if n not in COMPLEX_REFUSED]
STATEFUL = [n for n in NAMES if n != "ssd"]  # ssd keeps no buffer to compare a gradient with


def complex_stream(steps: int = 6, n: int = 5, seed: int = 0) -> list[jax.Array]:
    rng = np.random.default_rng(seed)
    drift = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    return [
        jnp.asarray(
            drift + 0.5 * (rng.standard_normal(n) + 1j * rng.standard_normal(n)), "complex64"
        )
        for _ in range(steps)
    ]


def is_dissected(x) -> bool:
    return isinstance(x, osv.DissectedState)


def run(opt, grads, params=None):
    params = jnp.zeros_like(grads[0]) if params is None else params
    state = opt.init(params)
    updates = []
    for g in grads:
        u, state = opt.update(g, state, params)
        updates.append(u)
    return updates, state


# --------------------------------------------------------------------------- #
# Complex numbers.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", COMPLEX_NAMES)
def test_rotating_the_gradient_phase_rotates_the_updates(name):
    """u(e^{i phi} g_t) = e^{i phi} u(g_t): moments of |g|^2, updates along g."""
    grads = complex_stream()
    phase = np.complex64(np.exp(0.7j))
    plain, state = run(make(name), grads)
    rotated, _ = run(make(name), [phase * g for g in grads])
    for u, r in zip(plain, rotated, strict=True):
        assert u.dtype == r.dtype == jnp.complex64
        assert np.any(np.abs(np.asarray(u)) > 0)
        np.testing.assert_allclose(np.asarray(r), phase * np.asarray(u), atol=1e-6, rtol=1e-5)
    inner = next(x for x in jax.tree.leaves(state, is_leaf=is_dissected) if is_dissected(x))
    if inner.nu is not None:  # |g|^2 is real: half the memory of a complex buffer
        assert inner.nu.dtype == jnp.float32


@pytest.mark.parametrize("name", COMPLEX_NAMES)
def test_complex_with_zero_imaginary_part_is_the_real_optimizer(name):
    grads = [g.real for g in complex_stream()]
    real, _ = run(make(name), grads)
    cplx, _ = run(make(name), [g.astype(jnp.complex64) for g in grads])
    for r, c in zip(real, cplx, strict=True):
        np.testing.assert_allclose(np.asarray(c).real, np.asarray(r), rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(c).imag, 0.0)


@pytest.mark.standard_promotion  # optax's own adam
def test_complex_adam_equals_optax_adam():  # complex128, to 1e-12
    with jax.enable_x64(True):
        _complex_adam_equals_optax_adam()


def _complex_adam_equals_optax_adam():
    grads = [g.astype(jnp.complex128) for g in complex_stream(steps=50)]
    ours, _ = run(osv.adam(0.1), grads)
    theirs, _ = run(optax.adam(0.1), grads)
    for u, v in zip(ours, theirs, strict=True):
        assert u.dtype == jnp.complex128
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-12, atol=1e-15)


def test_adam_on_an_imaginary_gradient_steps_along_it():
    """The issue's example: optax.adam(0.1) at g = 1j gives -0.1j, and so does ours."""
    u, _ = run(osv.adam(0.1), [jnp.array([1j], jnp.complex64)])
    np.testing.assert_allclose(np.asarray(u[0]), [-0.1j], rtol=1e-6)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: osv.m_vassd(0.1),
        lambda: osv.scale_by_m_vassd(),
        lambda: osv.dissect(0.1, direction="sign", variance_adaptation="optimal", momentum=False),
    ],
)
def test_the_optimal_sign_factor_refuses_complex_parameters(factory):
    with pytest.raises(ValueError, match=r"\['w'\].*complex64.*real numbers only"):
        factory().init({"w": jnp.zeros(2, jnp.complex64), "b": jnp.zeros(2)})


def test_the_adam_sign_factor_takes_complex_parameters():
    u, _ = run(osv.m_vassd(0.1, variance_adaptation="adam"), complex_stream())
    assert all(np.all(np.abs(np.asarray(x)) <= 0.1 + 1e-7) for x in u)


def test_complex_gradient_for_real_parameters_is_an_error():
    opt = osv.m_svag(0.1)
    state = opt.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="complex gradient"):
        opt.update(jnp.array([1j, 1.0], jnp.complex64), state)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_minibatch_variance_of_a_complex_gradient_is_real(chunk_size):
    """E|G - mean|^2 / (B (B - 1)), not the complex E(G - mean)^2."""
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.standard_normal((8, 3)) + 1j * rng.standard_normal((8, 3)), "complex64")
    params = {"w": jnp.asarray([0.5 + 0.2j, -1.0j, 2.0], jnp.complex64)}

    def loss_fn(p, x):
        return jnp.abs(jnp.sum(p["w"] * x) - 1.0) ** 2

    mean, var = per_example_grad_moments(loss_fn, params, xs, chunk_size=chunk_size)
    per_example = np.stack([np.asarray(jax.grad(loss_fn)(params, x)["w"]) for x in xs])
    want = np.sum(np.abs(per_example - per_example.mean(0)) ** 2, 0) / (8 * 7)
    assert var["w"].dtype == jnp.float32 and mean["w"].dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(var["w"]), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mean["w"]), per_example.mean(0), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Integers.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", NAMES)
def test_integer_gradients_are_computed_in_floating_point(name):
    ints = [jnp.array([1, -2, 3, 0], jnp.int32), jnp.array([2, -1, 1, 1], jnp.int32)]
    params = jnp.ones(4)
    got, _ = run(make(name), ints, params)
    want, _ = run(make(name), [g.astype(jnp.float32) for g in ints], params)
    for u, w in zip(got, want, strict=True):
        assert u.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(u), np.asarray(w))
    assert np.any(np.asarray(got[-1]) != 0)


@pytest.mark.parametrize("name", NAMES)
def test_integer_parameters_are_refused_naming_the_leaf(name):
    with pytest.raises(ValueError, match=r"parameter \['step'\] \(int32\).*integer"):
        make(name).init({"w": jnp.zeros(2), "step": jnp.zeros(2, jnp.int32)})


# --------------------------------------------------------------------------- #
# Structure and shape.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", STATEFUL)
def test_a_none_gradient_where_the_state_holds_a_buffer_is_an_error(name):
    opt = make(name)
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones(2)}
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"\['a'\] is None, the state's \w+ holds float32\[2, 3\]"):
        jax.jit(opt.update)({"a": None, "b": jnp.ones(2)}, state, params)


@pytest.mark.parametrize("name", STATEFUL)
def test_a_broadcasting_gradient_shape_is_an_error(name):
    opt = make(name)
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones(2)}
    state = opt.init(params)
    grads = {"a": jnp.ones((4, 2, 3)), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"\['a'\] is float32\[4, 2, 3\].*float32\[2, 3\]"):
        opt.update(grads, state, params)


def test_none_leaves_of_the_params_take_none_gradients():
    opt = osv.adam(0.1)
    params = {"a": jnp.ones(2), "frozen": None}
    state = opt.init(params)
    u, state2 = opt.update({"a": jnp.ones(2), "frozen": None}, state, params)
    assert u["frozen"] is None and state2[0].mu["frozen"] is None
    assert jax.tree.structure(state2) == jax.tree.structure(state)


def test_a_missing_leaf_is_named():
    opt = osv.m_svag(0.1)
    state = opt.init({"a": jnp.ones(2), "b": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"only in the state's mu: \[\"\['b'\]\"\]"):
        opt.update({"a": jnp.ones(2)}, state)


# --------------------------------------------------------------------------- #
# Traced hyperparameters.
# --------------------------------------------------------------------------- #

# (optimizer, its arguments, the hyperparameter written into the state, a bad value)
TRACED_BAD = [
    ("adam", {}, "b1", 1.0),
    ("adam", {}, "b2", 1.0),
    ("adam", {}, "eps", -1.0),
    ("adam", {}, "learning_rate", -0.1),
    ("m_svag", {}, "beta", 1.0),
    ("m_sgd", {}, "beta", -0.5),
    ("adabound", {}, "gamma", -1e-3),
    ("adabound", {}, "final_lr", -0.1),
    ("adaboundw", {"weight_decay": 1e-3}, "weight_decay", -1.0),
]


def _injected(name, kwargs, hyperparameter, value):
    entry = OPTIMIZERS[name]
    opt = optax.inject_hyperparams(entry.factory)(**{**entry.kwargs, **kwargs})
    params = jnp.ones(3)
    state = opt.init(params)
    state.hyperparams[hyperparameter] = jnp.asarray(value, jnp.float32)
    return opt, state, params


@pytest.mark.parametrize("name,kwargs,hyperparameter,value", TRACED_BAD)
def test_an_injected_value_out_of_range_makes_the_update_nan(name, kwargs, hyperparameter, value):
    """Not a finite step in a wrong direction (an ascent, a wrong sign): NaN."""
    opt, state, params = _injected(name, kwargs, hyperparameter, value)
    u, _ = jax.jit(opt.update)(jnp.array([1.0, -2.0, 0.5]), state, params)
    assert np.all(np.isnan(np.asarray(u)))


@pytest.mark.parametrize("name,kwargs,hyperparameter,value", TRACED_BAD)
def test_traced_checks_name_the_injected_argument(name, kwargs, hyperparameter, value):
    opt, state, params = _injected(name, kwargs, hyperparameter, value)
    with osv.set_traced_checks(True):
        err, _ = checkify.checkify(jax.jit(opt.update))(jnp.ones(3), state, params)
    message = err.get()
    assert message is not None and message.startswith(f"{hyperparameter} must be in")


@pytest.mark.parametrize("name", NAMES)
def test_valid_injected_values_are_not_touched(name):
    entry = OPTIMIZERS[name]
    plain = entry.factory(**entry.kwargs)
    opt = optax.inject_hyperparams(entry.factory)(**entry.kwargs)
    grads = [jnp.array([1.0, -2.0, 0.5]), jnp.array([0.5, -1.0, 1.5])]
    with osv.set_traced_checks(True):
        checked = checkify.checkify(jax.jit(opt.update))
        params, s1, s2 = jnp.ones(3), plain.init(jnp.ones(3)), opt.init(jnp.ones(3))
        for g in grads:
            u1, s1 = plain.update(g, s1, params)
            err, (u2, s2) = checked(g, s2, params)
            assert err.get() is None
            # float32 hyperparameters (inject_hyperparams') against Python floats
            np.testing.assert_allclose(np.asarray(u2), np.asarray(u1), rtol=2e-5)


def test_set_traced_checks_restores_the_previous_setting():
    from optax_signvar._checks import traced_checks_enabled

    assert not traced_checks_enabled()
    with osv.set_traced_checks(True):
        assert traced_checks_enabled()
        with osv.set_traced_checks(False):
            assert not traced_checks_enabled()
        assert traced_checks_enabled()
    assert not traced_checks_enabled()


def test_adabound_with_gamma_zero_is_unbounded():
    """gamma -> 0 sends the bounds to [0, inf): with eps = 0, AdaBound is Adam."""
    grads = [g.real for g in complex_stream(steps=20)]
    bounded, _ = run(osv.adabound(0.1, final_lr=0.0, gamma=0.0, eps=0.0), grads)
    adam, _ = run(osv.adam(0.1, eps=0.0), grads)
    for u, w in zip(bounded, adam, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(w), rtol=2e-6)


def test_diagnostics_of_a_complex_state_do_not_depend_on_the_phase():
    grads = complex_stream(steps=8, n=64)
    opt = osv.m_svag(0.1)
    _, plain = run(opt, grads)
    _, rotated = run(opt, [np.complex64(np.exp(1.1j)) * g for g in grads])
    d = osv.diagnostics(plain, opt, grads=grads[-1])
    r = osv.diagnostics(rotated, opt, grads=np.complex64(np.exp(1.1j)) * grads[-1])
    assert set(d) == set(r)
    for key in d:
        if key == "sign_agreement":  # a complex coordinate has a phase, not a sign
            assert np.isnan(d[key]) and np.isnan(r[key])
        else:
            np.testing.assert_allclose(float(r[key]), float(d[key]), rtol=1e-5, atol=1e-6)
    assert 0.0 < float(d["gamma_mean"]) < 1.0 and float(d["grad_cosine"]) > 0.0
