"""Properties the papers state, checked on the named optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_signvar as osv


def tree_grads(seed, n=1):
    rng = np.random.default_rng(seed)
    return [
        {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.float32(rng.normal())}
        for _ in range(n)
    ]


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.999])
def test_first_m_svag_step_is_an_sgd_step(beta):
    (g,) = tree_grads(0)
    opt = osv.m_svag(0.3, beta=beta)
    u, _ = opt.update(g, opt.init(g))
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(g), strict=True):
        np.testing.assert_allclose(a, -0.3 * b, rtol=1e-5)


def test_adam_is_invariant_to_rescaling_the_gradient():
    grads = tree_grads(1, 50)
    for c in (1e-3, 1e3):
        opt = osv.adam(0.1, eps=0.0)
        s1, s2 = opt.init(grads[0]), opt.init(grads[0])
        for g in grads:
            u1, s1 = opt.update(g, s1)
            u2, s2 = opt.update(jax.tree.map(lambda x, c=c: c * x, g), s2)
            for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4)


@pytest.mark.parametrize("factory", [osv.svag, osv.m_svag, osv.m_vassd])
def test_variance_adaptation_is_scale_invariant(factory):
    """gamma depends on the signal-to-noise ratio only, not on the gradient's scale."""
    grads = tree_grads(2, 30)
    opt = factory(1.0)
    s1, s2 = opt.init(grads[0]), opt.init(grads[0])
    for g in grads:
        u1, s1 = opt.update(g, s1)
        u2, s2 = opt.update(jax.tree.map(lambda x: 10.0 * x, g), s2)
    scale = 1.0 if factory is osv.m_vassd else 10.0  # the sign does not scale
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
        np.testing.assert_allclose(scale * a, b, rtol=1e-3)


def test_m_svag_damps_noise_and_passes_signal():
    """On a pure-noise coordinate M-SVAG's factor is small; on a clean one it is 1."""
    rng = np.random.default_rng(3)
    opt = osv.m_svag(1.0)
    state = opt.init(jnp.zeros(2))
    ratios = []
    for _ in range(300):
        g = jnp.array([rng.normal(), 1.0], jnp.float32)
        u, state = opt.update(g, state)
        mu_hat = state[0].mu / (1 - 0.9 ** int(state[0].count))
        ratios.append(np.asarray(u / -mu_hat))
    ratios = np.array(ratios[50:])
    assert ratios[:, 0].mean() < 0.5
    np.testing.assert_allclose(ratios[:, 1], 1.0, rtol=1e-5)


@pytest.mark.parametrize("factory", [osv.adabound, osv.amsbound])
def test_late_adabound_steps_are_sgd_steps_with_final_lr(factory):
    grads = tree_grads(4, 20)
    opt = factory(learning_rate=1e-3, final_lr=0.05)
    state = opt.init(grads[0])
    for g in grads[:-1]:
        _, state = opt.update(g, state)
    inner = state[1]
    late = (state[0], inner._replace(count=jnp.asarray(10**9, jnp.int32)), state[2])
    u, new = opt.update(grads[-1], late)
    for a, m in zip(jax.tree.leaves(u), jax.tree.leaves(new[1].mu), strict=True):
        np.testing.assert_allclose(a, -0.05 * m, rtol=1e-4)


def test_adabound_bound_grows_with_the_step_count():
    """The reference multiplies gamma by t (a known port bug is to forget it)."""
    g = jnp.ones(1)
    opt = osv.adabound(learning_rate=10.0, final_lr=0.1, gamma=0.5)
    state = opt.init(g)
    steps = []
    for _ in range(5):
        u, state = opt.update(g, state)
        steps.append(-float(u[0]) / float(state[1].mu[0]))
    # Adam's rate (~10) sits above the upper bound 0.1 * (1 + 1/(0.5 t)): clipped to it
    np.testing.assert_allclose(steps, [0.1 * (1 + 1 / (0.5 * t)) for t in range(1, 6)], rtol=1e-5)


def _reddi_run(opt, c=3.0, steps=3000):
    """AMSGrad's online problem: f_t(x) = C x if t mod 3 == 1 else -x on [-1, 1]."""

    def body(carry, t):
        x, state = carry
        g = jnp.where(t % 3 == 1, c, -1.0) * jnp.ones_like(x)
        u, state = opt.update(g, state, x)
        return (jnp.clip(x + u, -1.0, 1.0), state), None

    x0 = jnp.zeros(1)
    (x, _), _ = jax.lax.scan(body, (x0, opt.init(x0)), jnp.arange(1, steps + 1))
    return float(x[0])


def test_reddi_counterexample_adam_drifts_amsgrad_converges():
    c = 3.0
    b2 = 1.0 / (1.0 + c**2)

    def lr(count):  # a / sqrt(t), t = count + 1
        return 0.5 / jnp.sqrt(count + 1.0)

    adam_x = _reddi_run(osv.adam(lr, b1=0.0, b2=b2, eps=0.0), c)
    ams_x = _reddi_run(osv.amsgrad(lr, b1=0.0, b2=b2, eps=0.0, bias_correction=False), c)
    assert adam_x > 0.9  # the worst point, x = +1
    assert ams_x < -0.9  # the optimum, x = -1
