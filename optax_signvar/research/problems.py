r"""Test problems from the papers, shared by the tests, benchmarks and notebooks.

Three families, each pure JAX (jit- and vmap-able) with a loss that plugs into
:func:`optax_signvar.research.ablate`:

* **Stochastic quadratic problems** (Balles & Hennig, 2018, sec. 2 and Fig. 2):
  :math:`f(x) = \tfrac12 (x-x^*)^\top Q (x-x^*)` with Gaussian gradient noise,
  the diagonal dominance :func:`p_diag` and the optimal local step size and
  expected improvement of SGD and of stochastic sign descent, in closed form
  but for one Monte Carlo term under correlated noise
  (:func:`optimal_local_step`, :func:`optimal_local_step_terms`) and fully by
  Monte Carlo (:func:`optimal_local_step_mc`).
* **AMSGrad's online counterexample** (Reddi et al., 2018, sec. 3): the regret
  loss :func:`reddi_loss`, the projection :func:`reddi_project` and the
  paper's hyperparameters :func:`reddi_hyperparameters`.
* **Wilson et al.'s construction** (2017, sec. 3.3), on which sign methods
  find :math:`w \propto \operatorname{sign}(X^\top y)`: :func:`wilson_data`,
  :func:`least_squares_loss` and :func:`sign_accuracy`.

**Noise models of the quadratics.** The stochastic gradient is :math:`g =
\nabla f(x) + \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, \Sigma)`,
with three models (:func:`stochastic_quadratic`'s ``noise_model``):

* ``"data"`` (the default): the paper's sQP (sec. 2). Its text reads:
  "Consider the loss function :math:`\ell(\theta; x) = 0.5(\theta - x)^T
  Q(\theta - x)` [...] and “data” coming from the distribution :math:`x \sim
  \mathcal{N}(x^*, \nu^2 I)` with :math:`\nu \in \mathbb{R}_+`", so ``noise``
  :math:`\nu` is the **standard deviation** of the data and :math:`g = Q(\theta
  - x) = \nabla f + Q(x^* - x)` has covariance :math:`\Sigma = \nu^2 Q^2`.
  This is the covariance that eq. (13) needs: SGD's expected improvement
  :math:`\tfrac12 (\nabla\mathcal L^\top \nabla\mathcal L)^2 / (\nabla
  \mathcal L^\top Q \nabla\mathcal L + \nu^2 \sum_i \lambda_i^3)` contains
  :math:`\operatorname{tr}(Q\Sigma) = \nu^2 \operatorname{tr}(Q^3)`. The
  paper's next sentence, "Stochastic gradients are given by :math:`g(\theta)
  = Q(\theta - x) \sim \mathcal{N}(\nabla \mathcal{L}(\theta), \nu^2 Q)`",
  disagrees with both (with :math:`\nu^2 Q`, eq. (13) would have :math:`\nu^2
  \sum_i \lambda_i^2`); we follow the data model and eq. (13). The paper's
  objective, eq. (11), adds the constant :math:`\tfrac{\nu^2}2
  \operatorname{tr}(Q)`; :func:`quadratic_loss` leaves it out (its minimum is
  0). On an axis-aligned problem coordinate :math:`i`'s gradient is
  :math:`\lambda_i (e_i + \nu z_i)`, :math:`e = x - x^*`: its sign does not
  depend on :math:`\lambda_i` at all.
* ``"hessian"``: :math:`\Sigma = \nu Q`, ``noise`` :math:`\nu` a *variance*
  scale (the paper's sentence read literally with :math:`\nu` for
  :math:`\nu^2`; also the gradient noise of least squares near its optimum).
  The default before the data model.
* ``"isotropic"``: :math:`\Sigma = \nu I`, ``noise`` :math:`\nu` a *variance*
  scale. With it, in the noise-dominated regime the expected improvement of
  sign descent is :math:`2/\pi` times SGD's for *every* axis-aligned
  :math:`Q` (both are :math:`\propto (\sum_i \lambda_i^2 e_i^2)^2 / (\nu
  \sum_i \lambda_i)`): sign descent can win only in the signal-dominated
  transient, never near the noise floor.

Whatever the model, a :class:`StochasticQuadratic` stores the variance scale
(:math:`\nu^2` for ``"data"``) and a factor :math:`F` with :math:`\Sigma = F
\operatorname{diag}(\text{noise}) F^\top`; every formula downstream
(:func:`noisy_gradient`, :func:`noise_covariance`,
:func:`optimal_local_step`) is written in :math:`F` and ``noise`` only.
``benchmarks/reproduce/sqp.py`` runs Fig. 2 under all three.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "StochasticQuadratic",
    "WilsonData",
    "haar_rotation",
    "least_squares_loss",
    "noise_covariance",
    "noisy_gradient",
    "noisy_quadratic_loss",
    "optimal_local_step",
    "optimal_local_step_mc",
    "optimal_local_step_terms",
    "p_diag",
    "quadratic_loss",
    "quadratic_spectrum",
    "reddi_hyperparameters",
    "reddi_loss",
    "reddi_project",
    "sign_accuracy",
    "stochastic_quadratic",
    "wilson_data",
]


# --------------------------------------------------------------------------- #
# Stochastic quadratic problems (Dissecting Adam, sec. 2).
# --------------------------------------------------------------------------- #


class StochasticQuadratic(NamedTuple):
    r"""A stochastic quadratic problem, a pytree (so it can be vmapped over).

    :math:`f(x) = \tfrac12 (x-x^*)^\top Q (x-x^*)` with stochastic gradients
    :math:`g = Q(x - x^*) + \varepsilon`, :math:`\varepsilon = F
    (\sqrt{\nu} \odot z)`, :math:`z \sim \mathcal N(0, I)`, so
    :math:`\varepsilon \sim \mathcal N(0, \Sigma)` with :math:`\Sigma = F
    \operatorname{diag}(\nu) F^\top`.

    Attributes:
      hessian: :math:`Q`, symmetric positive semi-definite, shape ``(d, d)``.
      optimum: :math:`x^*`, shape ``(d,)``.
      noise: the noise *variance* scale, a scalar or shape ``(d,)``:
        :math:`\nu^2` for :func:`stochastic_quadratic`'s ``"data"`` noise (whose
        argument ``noise`` :math:`\nu` is a standard deviation), :math:`\nu` for
        its ``"hessian"`` and ``"isotropic"`` noise (see the module's note).
      noise_factor: :math:`F`, a square root of the noise covariance's shape:
        ``None`` (the default; :math:`F = I`, so :math:`\Sigma =
        \operatorname{diag}(\nu)`: isotropic noise for a scalar :math:`\nu`),
        shape ``(d,)`` (:math:`F = \operatorname{diag}(f)`, a diagonal
        :math:`\Sigma = \operatorname{diag}(f^2 \nu)`) or shape ``(d, d)`` (a
        full :math:`\Sigma`). Its shape, not its values, decides what
        :func:`optimal_local_step` computes in closed form (see
        :func:`optimal_local_step_terms`). :func:`stochastic_quadratic`'s
        ``"data"`` noise stores :math:`F = R \operatorname{diag}(\lambda) = QR`
        (:math:`\Sigma = \nu^2 Q^2`), its ``"hessian"`` noise :math:`F = R
        \operatorname{diag}(\sqrt \lambda)` (:math:`\Sigma = \nu Q`), each as a
        vector when :math:`R = I`.
    """

    hessian: jax.Array
    optimum: jax.Array
    noise: jax.Array
    noise_factor: jax.Array | None = None


def _factor_kind(problem: StochasticQuadratic) -> str:
    """The static structure of the noise factor F: "identity", "diagonal" or "matrix".

    Compared with the Hessian's rank so that it also reads a batch of problems right.
    """
    factor = problem.noise_factor
    if factor is None:
        return "identity"
    return "matrix" if jnp.ndim(factor) == jnp.ndim(problem.hessian) else "diagonal"


def _noise_from_normal(problem: StochasticQuadratic, z: jax.Array) -> jax.Array:
    """The noise F (sqrt(nu) z) for standard normal z of shape (..., d): exact sampling."""
    scaled = jnp.sqrt(problem.noise) * z
    kind = _factor_kind(problem)
    if kind == "identity":
        return scaled
    factor = jnp.asarray(problem.noise_factor)
    return factor * scaled if kind == "diagonal" else scaled @ factor.T


def _noise_variances(problem: StochasticQuadratic) -> jax.Array:
    """The diagonal of Sigma, shape (d,)."""
    nu = jnp.broadcast_to(problem.noise, problem.optimum.shape)
    kind = _factor_kind(problem)
    if kind == "identity":
        return nu
    factor = jnp.asarray(problem.noise_factor)
    return factor**2 * nu if kind == "diagonal" else factor**2 @ nu


def noise_covariance(problem: StochasticQuadratic) -> jax.Array:
    r"""The covariance :math:`\Sigma = F \operatorname{diag}(\nu) F^\top` of the gradient noise.

    Args:
      problem: a :class:`StochasticQuadratic` (one problem, not a batch).

    Returns:
      :math:`\Sigma`, shape ``(d, d)``: :math:`\nu^2 Q^2` for
      :func:`stochastic_quadratic`'s ``"data"`` noise (:math:`\nu` a standard
      deviation), :math:`\nu Q` for its ``"hessian"`` noise and :math:`\nu I`
      for its ``"isotropic"`` noise (:math:`\nu` a variance scale).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> prob = problems.stochastic_quadratic(jax.random.key(0), 4, "b", True, 0.1)
      >>> q = prob.hessian
      >>> bool(jnp.allclose(problems.noise_covariance(prob), 0.1**2 * q @ q, atol=1e-3))
      True
      >>> hess = problems.stochastic_quadratic(jax.random.key(0), 4, "b", True, 0.1, "hessian")
      >>> bool(jnp.allclose(problems.noise_covariance(hess), 0.1 * q, atol=1e-5))
      True

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.2, 2018.
    """
    if _factor_kind(problem) == "matrix":
        factor = jnp.asarray(problem.noise_factor)
        nu = jnp.broadcast_to(problem.noise, problem.optimum.shape)
        return (factor * nu) @ factor.T
    return jnp.diag(_noise_variances(problem))


def quadratic_spectrum(key: jax.Array, dim: int, kind: str = "a") -> jax.Array:
    r"""Eigenvalues of the two spectra of Dissecting Adam's Fig. 2.

    * ``"a"``: :math:`\lambda_i \sim U[0.1, 1.1]`, well conditioned;
    * ``"b"``: ``round(0.9 * dim)`` eigenvalues :math:`\sim U[0, 1]` and the
      rest :math:`\sim U[30, 60]`: a few large outliers, ill conditioned.

    Args:
      key: a JAX random key.
      dim: the dimension :math:`d` (static).
      kind: ``"a"`` or ``"b"``.

    Returns:
      The eigenvalues, shape ``(dim,)``, in no particular order.

    Example:
      >>> import jax
      >>> from optax_signvar.research import problems
      >>> lam = problems.quadratic_spectrum(jax.random.key(0), 100, "b")
      >>> int((lam >= 30).sum()), bool(lam.max() <= 60)
      (10, True)

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.2 and Fig. 2, 2018.
    """
    k_small, k_large = jax.random.split(key)
    if kind == "a":
        return jax.random.uniform(k_small, (dim,), minval=0.1, maxval=1.1)
    if kind == "b":
        n_small = round(0.9 * dim)
        small = jax.random.uniform(k_small, (n_small,), minval=0.0, maxval=1.0)
        large = jax.random.uniform(k_large, (dim - n_small,), minval=30.0, maxval=60.0)
        return jnp.concatenate([small, large])
    raise ValueError(f'kind must be "a" or "b", got {kind!r}.')


def haar_rotation(key: jax.Array, dim: int) -> jax.Array:
    r"""A uniformly random (Haar-distributed) orthogonal matrix.

    The Q factor of the QR decomposition of a standard Gaussian matrix
    :math:`G = QR`, with each column multiplied by the sign of the matching
    diagonal entry of :math:`R` (without this fix the distribution depends on
    the QR routine's sign convention and is not uniform; Mezzadri, 2007).

    Args:
      key: a JAX random key.
      dim: the dimension :math:`d` (static).

    Returns:
      An orthogonal matrix, shape ``(dim, dim)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> r = problems.haar_rotation(jax.random.key(0), 5)
      >>> bool(jnp.allclose(r @ r.T, jnp.eye(5), atol=1e-5))
      True

    References:
      Mezzadri, `How to generate random matrices from the classical compact
      groups <https://arxiv.org/abs/math-ph/0609050>`_, 2007.
    """
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diag(r))


def stochastic_quadratic(
    key: jax.Array,
    dim: int = 100,
    spectrum: str = "a",
    rotated: bool = False,
    noise: float | jax.Array = 0.0,
    noise_model: str = "data",
) -> StochasticQuadratic:
    r"""Draws a stochastic quadratic problem of Dissecting Adam's Fig. 2.

    .. math::
      Q = R \operatorname{diag}(\lambda) R^\top, \qquad
      x^* \sim \mathcal N(0, I), \qquad
      g = Q(x - x^*) + \varepsilon,\ \varepsilon \sim \mathcal N(0, \Sigma),

    with :math:`\lambda` from :func:`quadratic_spectrum`, :math:`R = I`
    (axis-aligned) or :func:`haar_rotation` (rotated; Haar on the orthogonal
    group, which gives the same distribution of :math:`Q` as the paper's
    uniform rotation, since flipping a column of :math:`R` leaves :math:`Q`
    unchanged), and

    * ``noise_model="data"`` (the default, the paper's sQP): :math:`g = Q(x -
      \xi)` with data :math:`\xi \sim \mathcal N(x^*, \nu^2 I)`, so
      :math:`\Sigma = \nu^2 Q^2`; ``noise`` :math:`\nu` is the data's
      **standard deviation** (the paper's :math:`\nu \in \{0, 0.1, 4\}`).
      Sampled exactly as :math:`\varepsilon = R \operatorname{diag}(\nu
      \lambda)\, z` from the stored factor :math:`R \operatorname{diag}
      (\lambda)` and variance scale :math:`\nu^2`.
    * ``"hessian"``: :math:`\Sigma = \nu Q`, ``noise`` :math:`\nu` a
      **variance** scale; factor :math:`R \operatorname{diag}(\sqrt\lambda)`.
    * ``"isotropic"``: :math:`\Sigma = \nu I`, ``noise`` :math:`\nu` a
      **variance** scale; no factor.

    Stored factors are vectors when axis-aligned (a diagonal :math:`\Sigma`,
    closed-form oracle) and matrices when rotated (see the module's note).

    Args:
      key: a JAX random key (eigenvalues, rotation and optimum; the same for
        every noise model).
      dim: the dimension :math:`d` (static).
      spectrum: ``"a"`` or ``"b"`` (see :func:`quadratic_spectrum`).
      rotated: a random rotation (True) or the identity (False).
      noise: :math:`\nu`: the data's standard deviation for ``"data"``, the
        gradient noise's variance scale for ``"hessian"`` and ``"isotropic"``.
      noise_model: ``"data"`` (:math:`\Sigma = \nu^2 Q^2`), ``"hessian"``
        (:math:`\Sigma = \nu Q`) or ``"isotropic"`` (:math:`\Sigma = \nu I`,
        ``noise_factor=None``) (static).

    Returns:
      A :class:`StochasticQuadratic` (its ``noise`` field is the variance
      scale: :math:`\nu^2` for ``"data"``).

    Example:
      >>> import jax
      >>> from optax_signvar.research import problems
      >>> prob = problems.stochastic_quadratic(jax.random.key(0), 10, "b", noise=0.1)
      >>> prob.hessian.shape, float(problems.p_diag(prob.hessian))
      ((10, 10), 1.0)
      >>> prob.noise_factor.shape, round(float(prob.noise), 6)  # lambda, nu^2: Sigma = 0.01 Q^2
      ((10,), 0.01)
      >>> rot = problems.stochastic_quadratic(jax.random.key(0), 10, "b", True, 0.1)
      >>> rot.noise_factor.shape  # R diag(lambda): a full Sigma = 0.01 Q^2
      (10, 10)

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.2 and Fig. 2, 2018.
    """
    if noise_model not in _NOISE_MODELS:
        raise ValueError(f"noise_model must be one of {_NOISE_MODELS}, got {noise_model!r}.")
    k_spec, k_rot, k_opt = jax.random.split(key, 3)
    lam = quadratic_spectrum(k_spec, dim, spectrum)
    # Sigma = F diag(scale) F^T: data nu^2 (R lam)(R lam)^T = nu^2 Q^2, hessian nu Q
    root = lam if noise_model == "data" else jnp.sqrt(lam)
    if rotated:
        r = haar_rotation(k_rot, dim)
        hessian = (r * lam) @ r.T
        hessian = 0.5 * (hessian + hessian.T)  # exactly symmetric despite rounding
        factor = r * root
    else:
        hessian = jnp.diag(lam)
        factor = root
    optimum = jax.random.normal(k_opt, (dim,))
    nu = jnp.asarray(noise, hessian.dtype)
    return StochasticQuadratic(
        hessian,
        optimum,
        nu**2 if noise_model == "data" else nu,
        None if noise_model == "isotropic" else factor,
    )


_NOISE_MODELS = ("data", "hessian", "isotropic")


def quadratic_loss(problem: StochasticQuadratic, x: jax.Array) -> jax.Array:
    r"""The (noise-free) objective :math:`f(x) = \tfrac12 (x-x^*)^\top Q (x-x^*)`.

    Args:
      problem: a :class:`StochasticQuadratic`.
      x: the point, shape ``(d,)``.

    Returns:
      :math:`f(x)`, a scalar (the minimum is 0).

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> prob = problems.StochasticQuadratic(jnp.diag(jnp.array([1.0, 4.0])),
      ...                                     jnp.zeros(2), jnp.asarray(0.0))
      >>> float(problems.quadratic_loss(prob, jnp.array([1.0, 1.0])))
      2.5

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.2, 2018.
    """
    e = x - problem.optimum
    return 0.5 * e @ problem.hessian @ e


def noisy_gradient(problem: StochasticQuadratic, x: jax.Array, key: jax.Array) -> jax.Array:
    r"""One stochastic gradient :math:`g = Q(x-x^*) + \varepsilon`.

    :math:`\varepsilon = F (\sqrt\nu \odot z) \sim \mathcal N(0, \Sigma)`,
    :math:`z \sim \mathcal N(0, I)` (see :class:`StochasticQuadratic` and the
    module's note on this convention).

    Args:
      problem: a :class:`StochasticQuadratic`.
      x: the point, shape ``(d,)``.
      key: a JAX random key for the noise.

    Returns:
      :math:`g`, shape ``(d,)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> prob = problems.stochastic_quadratic(jax.random.key(0), 3, noise=0.0)
      >>> g = problems.noisy_gradient(prob, jnp.zeros(3), jax.random.key(1))
      >>> bool(jnp.allclose(g, -prob.hessian @ prob.optimum))
      True

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.2, 2018.
    """
    eps = _noise_from_normal(problem, jax.random.normal(key, x.shape, x.dtype))
    return problem.hessian @ (x - problem.optimum) + eps


def noisy_quadratic_loss(problem: StochasticQuadratic, x: jax.Array, key: jax.Array) -> jax.Array:
    r"""A training loss whose value is :math:`f(x)` and whose gradient is noisy.

    .. math::
      \ell(x; \varepsilon) = f(x) + \varepsilon^\top (x - \operatorname{sg}(x)),

    where :math:`\operatorname{sg}` stops the gradient: the value is the exact
    :math:`f(x)` (so :func:`optax_signvar.research.ablate`'s loss column is noise free)
    and :math:`\nabla \ell` is :func:`noisy_gradient`'s :math:`g`.
    ``functools.partial(noisy_quadratic_loss, problem)`` is a ``loss_fn`` for
    :func:`optax_signvar.research.ablate`.

    Args:
      problem: a :class:`StochasticQuadratic`.
      x: the point, shape ``(d,)``.
      key: a JAX random key for the noise.

    Returns:
      :math:`f(x)`, a scalar, with the stochastic gradient attached.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> prob = problems.stochastic_quadratic(jax.random.key(0), 3, noise=4.0)
      >>> x, key = jnp.ones(3), jax.random.key(1)
      >>> g = jax.grad(problems.noisy_quadratic_loss, argnums=1)(prob, x, key)
      >>> bool(jnp.allclose(g, problems.noisy_gradient(prob, x, key)))
      True

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.2, 2018.
    """
    noise = noisy_gradient(problem, x, key) - problem.hessian @ (x - problem.optimum)
    return quadratic_loss(problem, x) + noise @ (x - jax.lax.stop_gradient(x))


def p_diag(matrix: jax.Array) -> jax.Array:
    r"""The diagonal mass of a matrix, Dissecting Adam's measure of axis alignment.

    .. math::
      p_{\text{diag}}(Q) = \frac{\sum_i |q_{ii}|}{\sum_{i,j} |q_{ij}|} \in (0, 1],

    1 for a diagonal matrix; the paper shows sign descent can only gain on
    SGD where :math:`p_{\text{diag}}` is large (and the noise high).

    Args:
      matrix: a square matrix, not zero.

    Returns:
      :math:`p_{\text{diag}}`, a scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> float(problems.p_diag(jnp.array([[2.0, -1.0], [-1.0, 2.0]])))
      0.6666666865348816

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.1, 2018.
    """
    a = jnp.abs(matrix)
    return jnp.trace(a) / jnp.sum(a)


_DIRECTIONS = ("raw", "sign")
_MC_SAMPLES = 512


def _check_direction(direction: str) -> None:
    if direction not in _DIRECTIONS:
        raise ValueError(f'direction must be "raw" or "sign", got {direction!r}.')


def _direction_moments(
    problem: StochasticQuadratic,
    x: jax.Array,
    direction: str,
    key: jax.Array | None,
    num_samples: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """grad f(x), E[p], E[p^T Q p]; closed form but the pairwise sign term of a full Sigma."""
    _check_direction(direction)
    q = problem.hessian
    grad = q @ (x - problem.optimum)
    q_diag = jnp.diag(q)
    kind = _factor_kind(problem)
    if direction == "raw":
        # E[g^T Q g] = grad^T Q grad + tr(Q Sigma)
        if kind == "matrix":
            trace = jnp.sum(q * noise_covariance(problem))
        else:
            trace = q_diag @ _noise_variances(problem)
        return grad, grad, grad @ q @ grad + trace
    sigma = jnp.sqrt(_noise_variances(problem)).astype(grad.dtype)
    noisy = sigma > 0
    # erf(g / (sqrt2 sigma)) is E[sign] for sigma > 0; its limit sigma -> 0 is sign(g)
    safe = jnp.where(noisy, sigma, 1.0)
    mean = jnp.where(noisy, jax.lax.erf(grad / (math.sqrt(2.0) * safe)), jnp.sign(grad))
    # E[s_i^2] = P(g_i != 0): 1 with noise, else 0 where the gradient is exactly 0
    second = jnp.where(noisy | (grad != 0), 1.0, 0.0).astype(grad.dtype)
    # E[s^T Q s] = E[s]^T Q E[s] + sum_i q_ii Var(s_i) + sum_{i != j} q_ij Cov(s_i, s_j)
    curvature = mean @ q @ mean + q_diag @ (second - mean**2)
    if kind == "matrix":
        # correlated noise: Cov(s_i, s_j) needs bivariate normal orthant probabilities
        # with nonzero means, no closed form -> Monte Carlo, centred at the exact E[s]
        key = jax.random.key(0) if key is None else key
        z = jax.random.normal(key, (num_samples, *grad.shape), grad.dtype)
        centred = jnp.sign(grad + _noise_from_normal(problem, z)) - mean
        off = q - jnp.diag(q_diag)
        curvature = curvature + jnp.mean(jnp.sum((centred @ off) * centred, axis=-1))
    return grad, mean, curvature


def _step_and_improvement(
    grad: jax.Array, mean: jax.Array, curvature: jax.Array
) -> tuple[jax.Array, jax.Array]:
    slope = grad @ mean
    positive = curvature > 0
    safe = jnp.where(positive, curvature, 1.0)
    step = jnp.where(positive, slope / safe, 0.0)
    return step, jnp.where(positive, 0.5 * slope**2 / safe, 0.0)


def optimal_local_step(
    problem: StochasticQuadratic,
    x: jax.Array,
    direction: str = "raw",
    *,
    key: jax.Array | None = None,
    num_samples: int = _MC_SAMPLES,
) -> tuple[jax.Array, jax.Array]:
    r"""The optimal local step size and expected improvement of SGD or SSD.

    For the update :math:`x \leftarrow x - \alpha p`,
    :math:`\mathbb E[f(x - \alpha p)] = f(x) - \alpha \nabla f^\top \mathbb E[p]
    + \tfrac{\alpha^2}2 \mathbb E[p^\top Q p]` is minimised by

    .. math::
      \alpha^* = \frac{\nabla f^\top \mathbb E[p]}{\mathbb E[p^\top Q p]},
      \qquad
      f(x) - \mathbb E[f(x - \alpha^* p)]
        = \frac{(\nabla f^\top \mathbb E[p])^2}{2\, \mathbb E[p^\top Q p]}.

    What is exact and what is sampled (:func:`optimal_local_step_terms` says
    it for a given problem):

    * ``direction="raw"`` (SGD, :math:`p = g`), **closed form** for any
      :math:`\Sigma`: :math:`\mathbb E[p] = \nabla f`, :math:`\mathbb
      E[p^\top Q p] = \nabla f^\top Q \nabla f + \operatorname{tr}(Q\Sigma)`
      (:math:`\nu^2 \operatorname{tr}(Q^3) = \nu^2 \sum_i \lambda_i^3` for the
      paper's data noise, so the improvement is its eq. (13), :math:`\nu
      \operatorname{tr}(Q^2)` for Hessian-shaped noise, :math:`\nu
      \operatorname{tr} Q` for isotropic noise).
    * ``direction="sign"`` (SSD, :math:`p = \operatorname{sign}(g)`):
      :math:`\mathbb E[p_i] = \operatorname{erf}(\nabla_i f / \sqrt{2
      \Sigma_{ii}})` and :math:`\mathbb E[p_i^2] = 1` are **closed form** for
      any Gaussian noise, and :math:`\mathbb E[p^\top Q p] = \mathbb E[p]^\top
      Q\, \mathbb E[p] + \sum_i q_{ii} \operatorname{Var}(p_i) + \sum_{i \neq
      j} q_{ij} \operatorname{Cov}(p_i, p_j)`. With a diagonal :math:`\Sigma`
      (``noise_factor`` ``None`` or a vector: isotropic noise, or data or
      Hessian-shaped noise on an axis-aligned problem) the signs are
      independent, the covariances vanish and everything is **closed form**.
      For the data noise on :math:`Q = \operatorname{diag}(\lambda)`,
      :math:`\Sigma_{ii} = \nu^2 \lambda_i^2`, so :math:`\mathbb E[p_i] =
      \operatorname{erf}(e_i / (\sqrt2 \nu))`, :math:`e = x - x^*`, and
      :math:`\mathbb E[p^\top Q p] = \operatorname{tr} Q` (for :math:`\nu >
      0`): the improvement :math:`(\sum_i \lambda_i |e_i|
      \operatorname{erf}(|e_i| / (\sqrt2 \nu)))^2 / (2 \sum_i \lambda_i)` is
      the paper's bound (14) with :math:`p_{\text{diag}} = 1`, attained
      (:math:`2\rho_i - 1 = \operatorname{erf}(|\nabla_i f| / \sqrt{2
      \Sigma_{ii}})`). With a full :math:`\Sigma` (``noise_factor`` a matrix:
      data or Hessian-shaped noise on a rotated problem, where
      :math:`\Sigma_{ii} = \nu^2 (Q^2)_{ii}` resp. :math:`\nu q_{ii}`)
      :math:`\operatorname{Cov}(p_i, p_j)` needs
      bivariate normal orthant probabilities with nonzero means, which have
      no closed form: the pairwise sum is a **Monte Carlo** estimate from
      ``num_samples`` sampled signs, :math:`\frac1K \sum_k (p^{(k)} - \mathbb
      E[p])^\top (Q - \operatorname{diag} Q) (p^{(k)} - \mathbb E[p])`
      (unbiased; centred at the exact mean, so only the covariances are
      sampled), and :math:`\alpha^*` and the improvement are ratio estimates.

    Where :math:`\mathbb E[p^\top Q p] = 0` (at the optimum without noise) both
    are 0. This is the oracle of the paper's Fig. 2: it uses the true
    gradient, :math:`Q` and the noise model.

    Args:
      problem: a :class:`StochasticQuadratic`.
      x: the point, shape ``(d,)``.
      direction: ``"raw"`` (SGD) or ``"sign"`` (SSD).
      key: a JAX random key for the Monte Carlo term (used only for
        ``"sign"`` with a full :math:`\Sigma`); ``None``: a fixed key, i.e.
        the same samples at every call (common random numbers).
      num_samples: number of Monte Carlo samples (static).

    Returns:
      ``(step_size, improvement)``: :math:`\alpha^*` and the expected decrease
      of :math:`f` under it, two scalars.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> prob = problems.StochasticQuadratic(jnp.eye(2), jnp.zeros(2), jnp.asarray(0.0))
      >>> step, gain = problems.optimal_local_step(prob, jnp.array([1.0, 1.0]), "sign")
      >>> float(step), float(gain)  # sign(g) = (1, 1): one step of 1 reaches x* = 0
      (1.0, 1.0)

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.1-2.2, 2018.
    """
    return _step_and_improvement(*_direction_moments(problem, x, direction, key, num_samples))


def optimal_local_step_terms(
    problem: StochasticQuadratic, direction: str = "raw", num_samples: int = _MC_SAMPLES
) -> dict[str, str]:
    r"""Which terms of :func:`optimal_local_step` are closed form and which Monte Carlo.

    Decided by the *shape* of ``problem.noise_factor`` (static, so it holds for
    every call on the problem, and for a batch of problems of one structure).

    Args:
      problem: a :class:`StochasticQuadratic` (or a batch of them).
      direction: ``"raw"`` (SGD) or ``"sign"`` (SSD).
      num_samples: the ``num_samples`` passed to :func:`optimal_local_step`.

    Returns:
      ``{"E[p]": ..., "E[p^T Q p] diagonal": ..., "E[p^T Q p] pairwise": ...}``,
      each ``"closed form"`` or ``"Monte Carlo (N samples per call)"``.

    Example:
      >>> import jax
      >>> from optax_signvar.research import problems
      >>> rot = problems.stochastic_quadratic(jax.random.key(0), 10, "b", True, 4.0)
      >>> problems.optimal_local_step_terms(rot, "sign")["E[p^T Q p] pairwise"]
      'Monte Carlo (512 samples per call)'
      >>> problems.optimal_local_step_terms(rot, "raw")["E[p^T Q p] pairwise"]
      'closed form'

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.1-2.2, 2018.
    """
    _check_direction(direction)
    exact = "closed form"
    sampled = direction == "sign" and _factor_kind(problem) == "matrix"
    return {
        "E[p]": exact,
        "E[p^T Q p] diagonal": exact,
        "E[p^T Q p] pairwise": (
            f"Monte Carlo ({num_samples} samples per call)" if sampled else exact
        ),
    }


def optimal_local_step_mc(
    problem: StochasticQuadratic,
    x: jax.Array,
    key: jax.Array,
    direction: str = "raw",
    num_samples: int = 10_000,
) -> tuple[jax.Array, jax.Array]:
    r"""Monte Carlo estimate of :func:`optimal_local_step`, every term sampled.

    Draws ``num_samples`` stochastic gradients :math:`g^{(k)}` at ``x`` (as
    :func:`noisy_gradient`), forms :math:`p^{(k)} = g^{(k)}` or
    :math:`\operatorname{sign}(g^{(k)})`, and plugs the sample means of
    :math:`p` and :math:`p^\top Q p` into the same formulas. It makes none of
    the closed form's assumptions beyond the noise model, so agreement of the
    two checks the closed form, and the Monte Carlo pairwise term of
    :func:`optimal_local_step` (a ratio estimate: consistent, not unbiased).

    Args:
      problem: a :class:`StochasticQuadratic`.
      x: the point, shape ``(d,)``.
      key: a JAX random key.
      direction: ``"raw"`` (SGD) or ``"sign"`` (SSD).
      num_samples: number of gradient samples (static).

    Returns:
      ``(step_size, improvement)``, two scalars.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> prob = problems.stochastic_quadratic(jax.random.key(0), 10, "b", noise=4.0)
      >>> x = jnp.zeros(10)
      >>> exact = problems.optimal_local_step(prob, x, "sign")[1]
      >>> mc = problems.optimal_local_step_mc(prob, x, jax.random.key(1), "sign")[1]
      >>> bool(abs(mc / exact - 1) < 0.05)
      True

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 2.1-2.2, 2018.
    """
    _check_direction(direction)
    grad = problem.hessian @ (x - problem.optimum)
    z = jax.random.normal(key, (num_samples, *x.shape), x.dtype)
    g = grad + _noise_from_normal(problem, z)
    p = jnp.sign(g) if direction == "sign" else g
    curvature = jnp.mean(jnp.einsum("ki,ij,kj->k", p, problem.hessian, p))
    return _step_and_improvement(grad, jnp.mean(p, axis=0), curvature)


# --------------------------------------------------------------------------- #
# AMSGrad's counterexample (Reddi et al., sec. 3).
# --------------------------------------------------------------------------- #


def reddi_loss(x: jax.Array, t: jax.Array, c: float = 3.0) -> jax.Array:
    r"""The regret term of AMSGrad's online counterexample at round ``t``.

    .. math::
      f_t(x) = \begin{cases} C x & t \bmod 3 = 1 \\ -x & \text{otherwise}
      \end{cases}, \qquad x \in [-1, 1],\ t = 1, 2, \dots

    The best fixed point is :math:`x^* = -1` (for :math:`C > 2`); this returns
    :math:`f_t(x) - f_t(-1)`, which has the gradient of :math:`f_t`, so the
    running mean of the loss is the average regret :math:`R_t / t` (the
    ``mean_loss`` column of :func:`optax_signvar.research.ablate` with
    ``inputs=jnp.arange(1, steps + 1)`` and ``project=reddi_project``).

    Args:
      x: the iterate, a scalar in :math:`[-1, 1]`.
      t: the round, an integer :math:`\geq 1`.
      c: :math:`C > 2`.

    Returns:
      :math:`f_t(x) - f_t(-1)`, a scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> [float(problems.reddi_loss(jnp.array(1.0), t)) for t in (1, 2, 3)]
      [6.0, -2.0, -2.0]

    References:
      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, sec. 3, 2018.
    """
    big = jnp.asarray(t) % 3 == 1
    return jnp.where(big, c * (x + 1.0), -(x + 1.0))


def reddi_project(x: jax.Array) -> jax.Array:
    r"""The projection onto the feasible set :math:`[-1, 1]` (a clip).

    Reddi et al. project in the norm :math:`\sqrt{V_t}`; in one dimension
    every such projection onto an interval is the clip.

    Args:
      x: the iterate after an update.

    Returns:
      :math:`\min(\max(x, -1), 1)`.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> problems.reddi_project(jnp.array([-3.0, 0.5, 2.0])).tolist()
      [-1.0, 0.5, 1.0]

    References:
      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, sec. 3, 2018.
    """
    return jnp.clip(x, -1.0, 1.0)


def reddi_hyperparameters(c: float = 3.0, rate: float = 0.5) -> dict:
    r"""The hyperparameters of Reddi et al.'s Theorem 1 for constant :math:`C`.

    :math:`\beta_1 = 0`, :math:`\beta_2 = 1/(1+C^2)` and
    :math:`\alpha_t = \alpha / \sqrt t` (an optax schedule of the 0-based
    count, :math:`\alpha / \sqrt{\text{count} + 1}`); the theorem needs
    :math:`\alpha < \sqrt{1 - \beta_2}`.

    Args:
      c: :math:`C > 2`.
      rate: :math:`\alpha`.

    Returns:
      ``{"learning_rate": schedule, "b1": 0.0, "b2": 1/(1+C^2)}``, keyword
      arguments of :func:`optax_signvar.adam` and :func:`optax_signvar.amsgrad`.

    Example:
      >>> import optax_signvar as osv
      >>> from optax_signvar.research import problems
      >>> h = problems.reddi_hyperparameters(3.0)
      >>> h["b2"], float(h["learning_rate"](3))
      (0.1, 0.25)
      >>> opt = osv.amsgrad(**h, bias_correction=False)  # the paper's Algorithm 2

    References:
      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, sec. 3, Theorem 1, 2018.
    """
    if not c > 2:
        raise ValueError(f"the counterexample needs C > 2, got {c}.")

    def schedule(count: jax.Array | int) -> jax.Array:
        return rate / jnp.sqrt(jnp.asarray(count, jnp.float32) + 1.0)

    return {"learning_rate": schedule, "b1": 0.0, "b2": 1.0 / (1.0 + c**2)}


# --------------------------------------------------------------------------- #
# Wilson et al.'s construction (sec. 3.3).
# --------------------------------------------------------------------------- #


class WilsonData(NamedTuple):
    r"""Training and test samples of Wilson et al.'s construction.

    Attributes:
      x_train: features of the training samples, shape ``(n, 6 (n + m))``.
      y_train: their labels in :math:`\{-1, +1\}`, shape ``(n,)``.
      x_test: features of the test samples, shape ``(m, 6 (n + m))``.
      y_test: their labels, shape ``(m,)``.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def wilson_data(key: jax.Array, num_train: int, num_test: int = 0, p: float = 7 / 8) -> WilsonData:
    r"""Samples Wilson et al.'s binary classification problem.

    Sample :math:`i` has label :math:`y_i = +1` with probability :math:`p >
    1/2` (else :math:`-1`) and features (1-based, as the paper)
    :math:`x_{i1} = y_i`, :math:`x_{i2} = x_{i3} = 1`, and the *unique*
    features :math:`x_{ij} = 1` for :math:`j = 4 + 5(i-1), \dots,
    4 + 5(i-1) + 2(1-y_i)` (one for a positive sample, five for a negative),
    all others 0. The ``num_test`` test samples are samples
    ``num_train + 1, ...`` of the same sequence, so each has unique features
    that no training sample has. If the training labels have
    :math:`\sum_i y_i > 0`,

    .. math::
      X \operatorname{sign}(X^\top y) = 4 y,

    so methods whose iterates stay proportional to :math:`\operatorname{sign}
    (X^\top y)` (sign descent, Adam) interpolate the training set, and predict
    :math:`\operatorname{sign}(\tau (y + 2)) = +1` on every new sample (test
    accuracy :math:`\approx p`, the majority class), while the minimum-norm
    solution that SGD finds from 0 classifies new samples right.

    Args:
      key: a JAX random key.
      num_train: :math:`n` (static).
      num_test: number of fresh test samples (static).
      p: probability of the label +1.

    Returns:
      A :class:`WilsonData` with features in :math:`\mathbb R^{6(n+m)}`
      (:math:`\mathbb R^{6n}` as in the paper for ``num_test=0``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> data = problems.wilson_data(jax.random.key(0), 20, num_test=5)
      >>> x, y = data.x_train, data.y_train
      >>> bool(y.sum() > 0), bool(jnp.all(x @ jnp.sign(x.T @ y) == 4 * y))
      (True, True)

    References:
      Wilson, Roelofs, Stern, Srebro & Recht, `The Marginal Value of Adaptive
      Gradient Methods in Machine Learning <https://arxiv.org/abs/1705.08292>`_,
      sec. 3.3, 2017.
    """
    n = num_train + num_test
    y = jnp.where(jax.random.bernoulli(key, p, (n,)), 1.0, -1.0)
    dim = 6 * n
    cols = jnp.arange(dim)
    start = 3 + 5 * jnp.arange(n)[:, None]
    count = jnp.where(y[:, None] > 0, 1, 5)  # unique features: 1 (positive), 5 (negative)
    unique = (cols >= start) & (cols < start + count)
    x = unique.astype(jnp.float32)
    x = x.at[:, 0].set(y).at[:, 1].set(1.0).at[:, 2].set(1.0)
    return WilsonData(x[:num_train], y[:num_train], x[num_train:], y[num_train:])


def least_squares_loss(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    r"""The full-batch least-squares loss :math:`\frac1{2n}\|Xw - y\|^2`.

    Args:
      w: the weights, shape ``(d,)``.
      x: the features, shape ``(n, d)``.
      y: the targets, shape ``(n,)``.

    Returns:
      The loss, a scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> float(problems.least_squares_loss(jnp.zeros(2), jnp.eye(2), jnp.ones(2)))
      0.5

    References:
      Wilson, Roelofs, Stern, Srebro & Recht, `The Marginal Value of Adaptive
      Gradient Methods in Machine Learning <https://arxiv.org/abs/1705.08292>`_,
      sec. 3.3, 2017.
    """
    r = x @ w - y
    return 0.5 * jnp.mean(r**2)


def sign_accuracy(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    r"""The accuracy of the classifier :math:`\operatorname{sign}(Xw)`.

    A score of exactly 0 counts as wrong (it predicts neither class).

    Args:
      w: the weights, shape ``(d,)``.
      x: the features, shape ``(n, d)``.
      y: the labels in :math:`\{-1, +1\}`, shape ``(n,)``.

    Returns:
      The fraction of samples with :math:`\operatorname{sign}(x_i^\top w) =
      y_i`, a scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar.research import problems
      >>> x, y = jnp.array([[1.0], [-2.0], [3.0]]), jnp.array([1.0, 1.0, 1.0])
      >>> float(problems.sign_accuracy(jnp.ones(1), x, y))
      0.6666666865348816

    References:
      Wilson, Roelofs, Stern, Srebro & Recht, `The Marginal Value of Adaptive
      Gradient Methods in Machine Learning <https://arxiv.org/abs/1705.08292>`_,
      sec. 3.3, 2017.
    """
    return jnp.mean(jnp.sign(x @ w) == y)
