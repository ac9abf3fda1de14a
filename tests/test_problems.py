"""The papers' test problems (optax_signvar.research.problems) and the properties they show."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_signvar as osv
from optax_signvar import research
from optax_signvar.research import problems

DIM = 8  # one shape for every quadratic: eager ops compile once per shape

# --------------------------------------------------------------------------- #
# Stochastic quadratics.
# --------------------------------------------------------------------------- #


@functools.partial(jax.jit, static_argnames=("direction", "num_samples"))
def _simulated_improvement(problem, x, key, step, direction, num_samples):
    """f(x) - mean_k f(x - step p_k), p_k from sampled gradients: the decrease itself."""
    g = jax.vmap(lambda k: problems.noisy_gradient(problem, x, k))(
        jax.random.split(key, num_samples)
    )
    p = jnp.sign(g) if direction == "sign" else g
    after = jax.vmap(lambda q: problems.quadratic_loss(problem, x - step * q))(p)
    return problems.quadratic_loss(problem, x) - jnp.mean(after)


@pytest.mark.parametrize("noise_model", ["data", "hessian", "isotropic"])
@pytest.mark.parametrize("direction", ["raw", "sign"])
@pytest.mark.parametrize(
    "spectrum, rotated, noise", [("a", False, 0.0), ("b", False, 0.1), ("b", True, 4.0)]
)
def test_closed_form_local_step_matches_monte_carlo(
    direction, spectrum, rotated, noise, noise_model
):
    key = jax.random.key(7)
    prob = problems.stochastic_quadratic(key, DIM, spectrum, rotated, noise, noise_model)
    x = jax.random.normal(jax.random.key(8), (DIM,))
    # rotated + data/hessian noise + sign: the pairwise term is Monte Carlo; many samples here
    step, gain = problems.optimal_local_step(
        prob, x, direction, key=jax.random.key(11), num_samples=50_000
    )
    # the data noise at nu = 4 on (b) is ~180 per coordinate: the sampled slope grad^T mean(p)
    # has a relative standard error of ~3 % at 200k samples (raw); 1M samples and ~4 SE there
    loud = noise_model == "data" and noise > 1
    num, rtol = (1_000_000, 0.05) if loud else (200_000, 0.02)
    mc_step, mc_gain = problems.optimal_local_step_mc(
        prob, x, jax.random.key(9), direction, num_samples=num
    )
    np.testing.assert_allclose(mc_step, step, rtol=rtol)
    np.testing.assert_allclose(mc_gain, gain, rtol=rtol)
    # independent of both formulas: the simulated decrease of f under the closed-form step
    simulated = _simulated_improvement(prob, x, jax.random.key(10), step, direction, num)
    np.testing.assert_allclose(simulated, gain, rtol=max(rtol, 0.03))


def test_which_terms_are_monte_carlo():
    mc = "Monte Carlo (64 samples per call)"
    for rotated, noise_model, pairwise in [
        (False, "data", "closed form"),
        (True, "data", mc),
        (False, "hessian", "closed form"),
        (True, "hessian", mc),
        (False, "isotropic", "closed form"),
        (True, "isotropic", "closed form"),
    ]:
        prob = problems.stochastic_quadratic(jax.random.key(0), DIM, "b", rotated, 1.0, noise_model)
        terms = problems.optimal_local_step_terms(prob, "sign", num_samples=64)
        assert terms["E[p^T Q p] pairwise"] == pairwise
        assert terms["E[p]"] == terms["E[p^T Q p] diagonal"] == "closed form"
        raw = problems.optimal_local_step_terms(prob, "raw", num_samples=64)
        assert set(raw.values()) == {"closed form"}
    with pytest.raises(ValueError, match="direction"):
        problems.optimal_local_step_terms(prob, "adam")
    with pytest.raises(ValueError, match="noise_model"):
        problems.stochastic_quadratic(jax.random.key(0), DIM, noise_model="diagonal")


@functools.partial(jax.jit, static_argnames=("num_samples",))
def _sign_curvature(prob, x, key, num_samples):
    """E[s^T Q s] of optimal_local_step's hybrid estimator, from slope / step."""
    grad = jax.grad(problems.quadratic_loss, argnums=1)(prob, x)
    step, _ = problems.optimal_local_step(prob, x, "sign", key=key, num_samples=num_samples)
    sigma = jnp.sqrt(jnp.diag(problems.noise_covariance(prob)))
    return grad @ jax.lax.erf(grad / (np.sqrt(2) * sigma)) / step


@pytest.mark.parametrize("noise", [0.1, 4.0])
def test_hybrid_pairwise_monte_carlo_matches_full_monte_carlo(noise):
    # rotated Q with the data noise (the default): a full Sigma, E[s_i s_j] has no closed form
    prob = problems.stochastic_quadratic(jax.random.key(3), DIM, "b", True, noise)
    # near x*: the noise dominates and the signs are strongly correlated
    x = prob.optimum + 0.1 * jax.random.normal(jax.random.key(4), (DIM,))
    keys = jax.random.split(jax.random.key(5), 200)
    hybrid = jax.vmap(lambda k: _sign_curvature(prob, x, k, 512))(keys)
    # an independent estimate: every term sampled
    s = jnp.sign(
        jax.vmap(lambda k: problems.noisy_gradient(prob, x, k))(
            jax.random.split(jax.random.key(6), 400_000)
        )
    )
    full = float(jnp.mean(jnp.einsum("ki,ij,kj->k", s, prob.hessian, s)))
    # unbiased: the mean over 200 x 512 samples is within 1 %; one call of 512 within 10 %
    np.testing.assert_allclose(float(jnp.mean(hybrid)), full, rtol=0.01)
    np.testing.assert_allclose(hybrid, full, rtol=0.1)
    # and the pairwise term matters here: the closed form that ignores it is far off
    diag = problems.StochasticQuadratic(
        prob.hessian,
        prob.optimum,
        jnp.asarray(1.0),  # the factor holds sqrt(Sigma_ii) already: variance scale 1
        jnp.sqrt(jnp.diag(problems.noise_covariance(prob))),
    )  # same marginals, independent coordinates: closed form
    independent = float(_sign_curvature(diag, x, jax.random.key(0), 8))
    assert abs(independent / full - 1) > 0.05


def test_hybrid_with_a_diagonal_factor_matches_the_closed_form():
    # a (d, d) factor that happens to be diagonal: the sampled covariances are ~0
    prob = problems.stochastic_quadratic(jax.random.key(3), DIM, "b", False, 4.0)
    assert prob.noise_factor is not None and prob.noise_factor.shape == (DIM,)
    as_matrix = prob._replace(noise_factor=jnp.diag(prob.noise_factor))
    x = jax.random.normal(jax.random.key(4), (DIM,))
    exact = problems.optimal_local_step(prob, x, "sign")
    hybrid = problems.optimal_local_step(as_matrix, x, "sign", num_samples=20_000)
    np.testing.assert_allclose(hybrid, exact, rtol=0.01)
    np.testing.assert_allclose(
        problems.noise_covariance(as_matrix), problems.noise_covariance(prob), rtol=1e-6
    )


def test_isotropic_noise_gives_two_over_pi_and_hessian_noise_lets_sign_descent_win():
    # noise-dominated (nu huge), axis-aligned ill-conditioned (b) problem
    prob = problems.stochastic_quadratic(jax.random.key(0), 100, "b", False, 1e6, "isotropic")
    x = jnp.zeros(100)
    sgd = problems.optimal_local_step(prob, x, "raw")[1]
    ssd = problems.optimal_local_step(prob, x, "sign")[1]
    np.testing.assert_allclose(ssd / sgd, 2 / np.pi, rtol=1e-3)
    # Hessian-shaped noise, once the large-eigenvalue directions are solved (as after a few
    # steps): the sign normalises each coordinate's noise and wins by a wide margin
    prob = problems.stochastic_quadratic(jax.random.key(0), 100, "b", False, 4.0, "hessian")
    large = jnp.diag(prob.hessian) >= 30
    x = jnp.where(large, prob.optimum, 0.0)
    sgd = problems.optimal_local_step(prob, x, "raw")[1]
    ssd = problems.optimal_local_step(prob, x, "sign")[1]
    assert float(ssd / sgd) > 5


@pytest.mark.parametrize("direction", ["raw", "sign"])
def test_closed_form_step_is_the_best_step(direction):
    # E[f(x - a p)] is a parabola in a: its value at a* beats a* (1 +- 0.2)
    prob = problems.stochastic_quadratic(jax.random.key(3), DIM, "b", False, 0.1)
    x = jnp.zeros(DIM)
    step, _ = problems.optimal_local_step(prob, x, direction)
    decrease = [
        float(_simulated_improvement(prob, x, jax.random.key(4), c * step, direction, 50_000))
        for c in (0.8, 1.0, 1.2)
    ]
    assert decrease[1] > max(decrease[0], decrease[2])


def test_noise_free_sign_step_without_gradient_is_zero():
    # at the optimum without noise sign(g) = 0: no curvature, step 0 (not 0/0)
    prob = problems.StochasticQuadratic(jnp.eye(3), jnp.ones(3), jnp.asarray(0.0))
    for direction in ("raw", "sign"):
        step, gain = problems.optimal_local_step(prob, jnp.ones(3), direction)
        assert float(step) == 0.0 and float(gain) == 0.0


def test_noisy_quadratic_loss_has_the_exact_value_and_the_noisy_gradient():
    prob = problems.stochastic_quadratic(jax.random.key(0), DIM, "b", True, 4.0)
    x, key = jnp.linspace(-1, 1, DIM), jax.random.key(1)
    value, grad = jax.value_and_grad(problems.noisy_quadratic_loss, argnums=1)(prob, x, key)
    np.testing.assert_allclose(value, problems.quadratic_loss(prob, x), rtol=1e-6)
    np.testing.assert_allclose(grad, problems.noisy_gradient(prob, x, key), rtol=1e-5)
    exact = jax.grad(problems.quadratic_loss, argnums=1)(prob, x)
    assert float(jnp.max(jnp.abs(grad - exact))) > 0.1  # the noise (data std 4) is there


def test_gradient_noise_has_variance_nu():
    prob = problems.stochastic_quadratic(jax.random.key(0), DIM, "a", True, 0.1, "isotropic")
    assert prob.noise_factor is None
    keys = jax.random.split(jax.random.key(1), 20_000)
    g = jax.jit(jax.vmap(lambda k: problems.noisy_gradient(prob, jnp.zeros(DIM), k)))(keys)
    cov = np.cov(np.asarray(g).T)
    np.testing.assert_allclose(cov, 0.1 * np.eye(DIM), atol=0.01)
    np.testing.assert_allclose(problems.noise_covariance(prob), 0.1 * np.eye(DIM), rtol=1e-6)


@pytest.mark.parametrize("rotated", [False, True])
def test_hessian_noise_has_covariance_nu_q(rotated):
    nu = 0.5
    prob = problems.stochastic_quadratic(jax.random.key(0), DIM, "b", rotated, nu, "hessian")
    keys = jax.random.split(jax.random.key(1), 40_000)
    g = jax.jit(jax.vmap(lambda k: problems.noisy_gradient(prob, jnp.zeros(DIM), k)))(keys)
    cov = np.cov(np.asarray(g, np.float64).T)
    q = np.asarray(prob.hessian, np.float64)
    # entrywise standard error of a sample covariance: sqrt((S_ii S_jj + S_ij^2) / n)
    d = np.diag(nu * q)
    se = np.sqrt((np.outer(d, d) + (nu * q) ** 2) / len(keys))
    assert np.max(np.abs(cov - nu * q) / (se + 1e-12)) < 5
    np.testing.assert_allclose(problems.noise_covariance(prob), nu * q, rtol=1e-4, atol=1e-4)
    # the loss's gradient carries the same noise
    x, key = jnp.ones(DIM), jax.random.key(2)
    np.testing.assert_allclose(
        jax.grad(problems.noisy_quadratic_loss, argnums=1)(prob, x, key),
        problems.noisy_gradient(prob, x, key),
        rtol=1e-5,
        atol=1e-5,
    )


def test_p_diag():
    assert float(problems.p_diag(jnp.diag(jnp.array([1.0, 50.0, 0.3])))) == 1.0
    rotated = problems.stochastic_quadratic(jax.random.key(0), DIM, "b", True)
    assert float(problems.p_diag(rotated.hessian)) < 0.6
    aligned = problems.stochastic_quadratic(jax.random.key(0), DIM, "b", False)
    assert float(problems.p_diag(aligned.hessian)) == 1.0


def test_haar_rotation_is_orthogonal_and_random():
    r1 = problems.haar_rotation(jax.random.key(0), DIM)
    r2 = problems.haar_rotation(jax.random.key(1), DIM)
    np.testing.assert_allclose(r1 @ r1.T, np.eye(DIM), atol=1e-5)
    np.testing.assert_allclose(r1.T @ r1, np.eye(DIM), atol=1e-5)
    assert float(jnp.max(jnp.abs(r1 - r2))) > 0.1


def test_spectra():
    a = problems.quadratic_spectrum(jax.random.key(0), 20, "a")
    assert 0.1 <= float(a.min()) and float(a.max()) <= 1.1
    b = problems.quadratic_spectrum(jax.random.key(0), 20, "b")
    assert int(jnp.sum(b <= 1.0)) == 18 and int(jnp.sum((b >= 30) & (b <= 60))) == 2
    # the same key gives the same spectrum, rotated or not
    rotated = problems.stochastic_quadratic(jax.random.key(2), DIM, "b", True)
    aligned = problems.stochastic_quadratic(jax.random.key(2), DIM, "b", False)
    np.testing.assert_array_equal(rotated.hessian, rotated.hessian.T)
    eig = np.linalg.eigvalsh(np.asarray(rotated.hessian, np.float64))
    np.testing.assert_allclose(eig, np.sort(np.diag(aligned.hessian)), atol=1e-4)
    with pytest.raises(ValueError, match="kind"):
        problems.quadratic_spectrum(jax.random.key(0), 10, "c")


# --------------------------------------------------------------------------- #
# AMSGrad's counterexample.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("t", [1, 2, 3, 4, 301])
def test_regret_loss_has_the_gradient_of_f_t(t):
    c = 3.0
    f_t = lambda x: jnp.where(t % 3 == 1, c * x, -x)  # noqa: E731
    for x in (-1.0, -0.3, 0.7, 1.0):
        x = jnp.asarray(x)
        np.testing.assert_allclose(jax.grad(problems.reddi_loss)(x, t, c), jax.grad(f_t)(x), rtol=0)
        np.testing.assert_allclose(
            problems.reddi_loss(x, t, c), f_t(x) - f_t(jnp.asarray(-1.0)), rtol=1e-6
        )
    # over one cycle the regret of x is (C - 2)(x + 1) >= 0
    cycle = sum(float(problems.reddi_loss(jnp.asarray(0.5), s, c)) for s in (1, 2, 3))
    assert cycle == pytest.approx((c - 2) * 1.5)


def test_reddi_hyperparameters_and_projection():
    h = problems.reddi_hyperparameters(10.0, rate=0.3)
    assert h["b1"] == 0.0 and h["b2"] == pytest.approx(1 / 101)
    np.testing.assert_allclose(h["learning_rate"](jnp.arange(4)), 0.3 / np.sqrt([1, 2, 3, 4]))
    np.testing.assert_array_equal(
        problems.reddi_project(jnp.array([-2.0, -1.0, 0.2, 1.0, 5.0])),
        np.float32([-1, -1, 0.2, 1, 1]),
    )
    with pytest.raises(ValueError, match="C > 2"):
        problems.reddi_hyperparameters(2.0)


def test_adam_drifts_to_plus_one_and_amsgrad_to_minus_one():
    c, steps = 3.0, 300
    h = problems.reddi_hyperparameters(c)
    configs = {
        "Adam": dict(
            learning_rate=h["learning_rate"],
            normalization="rms",
            b1=0.0,
            b2=h["b2"],
            bias_correction=False,
        ),
        "AMSGrad": osv.amsgrad(**h, bias_correction=False),
    }
    rows = research.ablate(
        configs,
        functools.partial(problems.reddi_loss, c=c),
        jnp.asarray(0.0),
        steps=steps,
        inputs=jnp.arange(1, steps + 1),
        project=problems.reddi_project,
        log_every=30,
        eval_fn=lambda x: {"x": x},
    )
    x = {n: [r["x"] for r in rows if r["config"] == n] for n in configs}
    regret = {n: [r["mean_loss"] for r in rows if r["config"] == n][-1] for n in configs}
    assert x["Adam"][-1] > 0.95 and x["AMSGrad"][-1] < -0.95
    assert np.mean(x["Adam"][len(x["Adam"]) // 2 :]) > 0.9  # it stays there
    assert regret["Adam"] > 0.6  # -> (C - 2) 2/3 at x = +1
    assert regret["AMSGrad"] < 0.1


# --------------------------------------------------------------------------- #
# Wilson et al.'s construction.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilson_identity_and_structure(seed):
    data = problems.wilson_data(jax.random.key(seed), 20, num_test=200, p=0.75)
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    assert x.shape == (20, 6 * 220) and data.x_test.shape == (200, 6 * 220)
    assert y.sum() > 0
    np.testing.assert_array_equal(x @ np.sign(x.T @ y), 4 * y)
    np.testing.assert_array_equal(x[:, 0], y)
    np.testing.assert_array_equal(x[:, 1:3], 1.0)
    unique = x[:, 3:].sum(axis=1)
    np.testing.assert_array_equal(unique, np.where(y > 0, 1, 5))
    # sample i's unique features start at 0-based column 3 + 5 i, for train and test alike
    for i in range(20):
        assert x[i, 3 + 5 * i] == 1.0
    x_test = np.asarray(data.x_test)
    train_cols = np.flatnonzero(x[:, 3:].any(axis=0))
    test_cols = np.flatnonzero(x_test[:, 3:].any(axis=0))
    assert not set(train_cols) & set(test_cols)  # no test point shares a unique feature


def test_wilson_labels_follow_p():
    data = problems.wilson_data(jax.random.key(0), 20, num_test=200, p=0.875)
    y = jnp.concatenate([data.y_train, data.y_test])
    assert set(np.unique(y).tolist()) == {-1.0, 1.0}
    assert float(jnp.mean(y > 0)) == pytest.approx(0.875, abs=0.07)


def _train(opt, data, steps):
    x, y = data.x_train, data.y_train
    loss = lambda w: problems.least_squares_loss(w, x, y)  # noqa: E731

    @jax.jit
    def run(w):
        def step(carry, _):
            w, state = carry
            updates, state = opt.update(jax.grad(loss)(w), state, w)
            w = w + updates
            return (w, state), w

        return jax.lax.scan(step, (w, opt.init(w)), length=steps)[1]

    return run(jnp.zeros(x.shape[1]))


@pytest.mark.parametrize(
    "name, opt, exact",
    [
        ("SSD", osv.ssd(0.02), True),
        ("M-SSD", osv.m_ssd(0.02), True),
        ("Adam", osv.adam(0.02), False),
    ],
)
def test_sign_methods_stay_proportional_to_sign_xty(name, opt, exact):
    data = problems.wilson_data(jax.random.key(0), 20, num_test=200)
    s = np.sign(np.asarray(data.x_train.T @ data.y_train))
    ws = np.asarray(_train(opt, data, 30))
    lam = ws[:, 0]  # s_0 = sign(sum_i y_i^2) = 1
    assert np.all(lam != 0)
    if exact:
        np.testing.assert_array_equal(ws, lam[:, None] * s)
    else:  # Adam: up to eps
        np.testing.assert_allclose(ws, lam[:, None] * s, rtol=1e-5, atol=1e-8)
    # so it predicts the majority class +1 on every fresh sample: tau (y + 2) > 0
    assert lam[-1] > 0
    pred = np.sign(np.asarray(data.x_test) @ ws[-1])
    np.testing.assert_array_equal(pred, 1.0)
    acc = float(problems.sign_accuracy(ws[-1], data.x_test, data.y_test))
    assert acc == pytest.approx(float(jnp.mean(data.y_test > 0)))


def test_gradient_descent_leaves_the_sign_line_and_generalizes():
    data = problems.wilson_data(jax.random.key(0), 20, num_test=200)
    s = np.sign(np.asarray(data.x_train.T @ data.y_train))
    w = np.asarray(_train(osv.m_sgd(0.1), data, 300))[-1]
    cos = w @ s / (np.linalg.norm(w) * np.linalg.norm(s))
    assert cos < 0.9
    assert float(problems.least_squares_loss(w, data.x_train, data.y_train)) < 1e-4
    assert float(problems.sign_accuracy(w, data.x_test, data.y_test)) == 1.0


# --------------------------------------------------------------------------- #
# The paper's data noise (Dissecting Adam sec. 2): x ~ N(x*, nu^2 I), g = Q(theta - x).
# --------------------------------------------------------------------------- #


def test_data_noise_is_the_default():
    default = problems.stochastic_quadratic(jax.random.key(0), DIM, "b", True, 0.1)
    data = problems.stochastic_quadratic(jax.random.key(0), DIM, "b", True, 0.1, "data")
    for a, b in zip(default, data, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(default.noise, 0.01, rtol=1e-6)  # the variance scale nu^2


@pytest.mark.parametrize("rotated", [False, True])
def test_data_noise_has_covariance_nu_squared_q_squared(rotated):
    nu = 0.5  # a standard deviation of the data
    prob = problems.stochastic_quadratic(jax.random.key(0), DIM, "a", rotated, nu)
    q = np.asarray(prob.hessian, np.float64)
    sigma = nu**2 * q @ q
    np.testing.assert_allclose(problems.noise_covariance(prob), sigma, rtol=1e-4, atol=1e-5)
    keys = jax.random.split(jax.random.key(1), 40_000)
    g = jax.jit(jax.vmap(lambda k: problems.noisy_gradient(prob, jnp.zeros(DIM), k)))(keys)
    cov = np.cov(np.asarray(g, np.float64).T)
    d = np.diag(sigma)
    se = np.sqrt((np.outer(d, d) + sigma**2) / len(keys))
    assert np.max(np.abs(cov - sigma) / (se + 1e-12)) < 5
    # the same as sampling the data: g = Q (theta - x), x ~ N(x*, nu^2 I)
    xs = prob.optimum + nu * jax.random.normal(jax.random.key(2), (40_000, DIM))
    g_data = (jnp.zeros(DIM) - xs) @ prob.hessian.T
    cov_data = np.cov(np.asarray(g_data, np.float64).T)
    assert np.max(np.abs(cov_data - sigma) / (se + 1e-12)) < 5
    np.testing.assert_allclose(jnp.mean(g_data, 0), -prob.hessian @ prob.optimum, atol=0.05)


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize("nu", [0.1, 4.0])
def test_data_noise_sgd_improvement_is_eq_13(rotated, nu):
    # I_SGD = 1/2 |grad|^4 / (grad^T Q grad + nu^2 sum lambda_i^3), eq. (13)
    prob = problems.stochastic_quadratic(jax.random.key(5), DIM, "b", rotated, nu)
    x = jax.random.normal(jax.random.key(6), (DIM,))
    grad = prob.hessian @ (x - prob.optimum)
    lam = np.linalg.eigvalsh(np.asarray(prob.hessian, np.float64))
    eq13 = (
        0.5 * float(grad @ grad) ** 2 / (float(grad @ prob.hessian @ grad) + nu**2 * (lam**3).sum())
    )
    step, gain = problems.optimal_local_step(prob, x, "raw")
    np.testing.assert_allclose(gain, eq13, rtol=1e-3)
    np.testing.assert_allclose(
        step, float(grad @ grad) / (0.5 * float(grad @ grad) ** 2 / eq13), rtol=1e-3
    )


@pytest.mark.parametrize("nu", [0.1, 4.0])
def test_data_noise_axis_aligned_ssd_attains_eq_14(nu):
    # axis-aligned: E[sign g_i] = erf(e_i / (sqrt2 nu)) whatever lambda_i, E[s^T Q s] = tr Q,
    # so I_SSD equals eq. (14)'s bound with p_diag = 1
    prob = problems.stochastic_quadratic(jax.random.key(5), DIM, "b", False, nu)
    x = jax.random.normal(jax.random.key(6), (DIM,))
    lam = np.asarray(jnp.diag(prob.hessian), np.float64)
    e = np.asarray(x - prob.optimum, np.float64)
    rho_term = np.asarray(jax.scipy.special.erf(jnp.abs(e) / (np.sqrt(2) * nu)), np.float64)
    eq14 = 0.5 * (rho_term * lam * np.abs(e)).sum() ** 2 / lam.sum()
    step, gain = problems.optimal_local_step(prob, x, "sign")
    np.testing.assert_allclose(gain, eq14, rtol=1e-4)


def test_data_noise_lets_sign_descent_win_the_noisy_ill_conditioned_axis_aligned_problem():
    # once the large-eigenvalue directions are solved, SGD's nu^2 sum lambda^3 is dominated
    # by the outliers while SSD's sign ignores each coordinate's scale
    prob = problems.stochastic_quadratic(jax.random.key(0), 100, "b", False, 4.0)
    large = jnp.diag(prob.hessian) >= 30
    x = jnp.where(large, prob.optimum, 0.0)
    sgd = problems.optimal_local_step(prob, x, "raw")[1]
    ssd = problems.optimal_local_step(prob, x, "sign")[1]
    assert float(ssd / sgd) > 5
