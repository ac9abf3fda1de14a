"""Gradient transformations of Dissecting Adam: sign x variance adaptation.

Balles & Hennig (2018) read Adam as the product of two aspects: the *sign* of
the momentum and a per-coordinate *variance adaptation* of its magnitude. The
four quadrants, with momentum:

=====================  ==================  =========================
                       no adaptation       variance adaptation
=====================  ==================  =========================
raw direction          M-SGD               M-SVAG
sign                   M-SSD (= signum)    M-VASSD (Adam is close)
=====================  ==================  =========================

and, without momentum, SSD and SVAG. Each transformation here returns the
*unit-rate* direction; the named optimizers in :mod:`optax_signvar.alias` chain
it with ``optax.scale_by_learning_rate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from optax_signvar import _common, blocks

__all__ = [
    "MomentumState",
    "VarianceAdaptationState",
    "scale_by_debiased_momentum",
    "scale_by_m_svag",
    "scale_by_m_vassd",
    "scale_by_sign",
    "scale_by_sign_momentum",
    "scale_by_svag",
]


class MomentumState(NamedTuple):
    """State of :func:`scale_by_debiased_momentum` and :func:`scale_by_sign_momentum`."""

    count: jax.Array  # int32, number of updates so far
    mu: optax.Updates  # EMA of the gradient


class VarianceAdaptationState(NamedTuple):
    """State of the variance-adapted transformations (SVAG, M-SVAG, M-VASSD)."""

    count: jax.Array  # int32, number of updates so far
    mu: optax.Updates  # EMA of the gradient
    nu: optax.Updates  # EMA of the squared gradient


def _momentum_transform(
    beta: float, mu_dtype: Any, direction: Callable[[Any, jax.Array], Any]
) -> optax.GradientTransformationExtraArgs:
    """An EMA of the gradient followed by ``direction(mu, count)``."""
    _common.check_decay("beta", beta)

    def init_fn(params):
        return MomentumState(count=_common.zero_count(), mu=_common.zeros_moment(params, mu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        mu = blocks.ema(updates, state.mu, beta)
        return _common.cast_like(direction(mu, count), updates), MomentumState(count, mu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_debiased_momentum(
    beta: float = 0.9, *, mu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates to the debiased EMA of the gradient (M-SGD's direction).

    .. math::
      m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad u_t = \frac{m_t}{1-\beta^t}.

    This is Dissecting Adam's momentum, an average; ``optax.trace`` instead sums
    (``trace = g + beta * trace``), which scales the step by about ``1/(1-beta)``.

    Args:
      beta: EMA decay, in [0, 1).
      mu_dtype: dtype of the EMA (default: the parameters' dtype).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_debiased_momentum(0.9)
      >>> state = tx.init(jnp.zeros(2))
      >>> print(tx.update(jnp.array([1.0, -2.0]), state)[0].round(4))
      [ 1. -2.]

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, Alg. 2, 2018.
    """
    return _momentum_transform(
        beta,
        mu_dtype,
        lambda mu, count: blocks.bias_correction(mu, blocks.debias_denominator(beta, count)),
    )


def scale_by_sign_momentum(
    beta: float = 0.9, *, mu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates to the sign of the EMA of the gradient (M-SSD's direction).

    .. math:: m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad u_t = \operatorname{sign}(m_t).

    The sign needs no bias correction. Identical to the direction of
    ``optax.signum``.

    Args:
      beta: EMA decay, in [0, 1).
      mu_dtype: dtype of the EMA (default: the parameters' dtype).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_sign_momentum(0.9)
      >>> state = tx.init(jnp.zeros(3))
      >>> tx.update(jnp.array([0.5, 0.0, -2.0]), state)[0]
      Array([ 1.,  0., -1.], dtype=float32)

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_,
      Alg. 2, 2018.
    """
    return _momentum_transform(beta, mu_dtype, lambda mu, count: blocks.sign(mu))


def scale_by_sign() -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates to their sign (SSD's direction): :math:`u_t = \operatorname{sign}(g_t)`.

    Stateless. Identical to the direction of ``optax.sign_sgd``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_sign()
      >>> tx.update(jnp.array([0.5, 0.0, -2.0]), tx.init(jnp.zeros(3)))[0]
      Array([ 1.,  0., -1.], dtype=float32)

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_, 2018.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return blocks.sign(updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _variance_adapted(
    beta: float,
    mu_dtype: Any,
    nu_dtype: Any,
    direction: Callable[[Any, Any, Any, jax.Array], Any],
) -> optax.GradientTransformationExtraArgs:
    """EMAs of ``g`` and ``g**2`` with the shared variance estimate.

    ``direction(g, mu_hat, nu_hat, count)`` forms the update from the debiased
    moments; this is the only place the moments are updated and debiased.
    """
    _common.check_decay("beta", beta)

    def init_fn(params):
        return VarianceAdaptationState(
            count=_common.zero_count(),
            mu=_common.zeros_moment(params, mu_dtype),
            nu=_common.zeros_moment(params, nu_dtype, widen_half=True),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        mu = blocks.ema(updates, state.mu, beta)
        nu = blocks.ema(updates, state.nu, beta, order=2)
        denominator = blocks.debias_denominator(beta, count)
        mu_hat = blocks.bias_correction(mu, denominator)
        nu_hat = blocks.bias_correction(nu, denominator)
        out = direction(updates, mu_hat, nu_hat, count)
        return _common.cast_like(out, updates), VarianceAdaptationState(count, mu, nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_svag(
    beta: float = 0.9, *, mu_dtype: Any = None, nu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic variance-adapted gradient (SVAG): the gradient times its factor.

    .. math::
      s_t = \frac{\max(\hat v_t - \hat m_t^2, 0)}{1-\rho_t}, \qquad
      \gamma_t = \frac{\hat m_t^2}{\hat m_t^2 + s_t}, \qquad u_t = \gamma_t\, g_t,

    with :math:`\rho_t` from :func:`optax_signvar.blocks.relative_variance_rho`
    and :math:`s_1 = 0`. :math:`\gamma_t` is clipped to [0, 1] and is 0 where
    :math:`m = v = 0`.

    Args:
      beta: decay of both moments, in [0, 1).
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of the second moment (default: the parameters' dtype,
        float32 for 16-bit parameters).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_svag(0.9)
      >>> tx.update(jnp.array([1.0, 0.0]), tx.init(jnp.zeros(2)))[0]
      Array([1., 0.], dtype=float32)

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_,
      eqs. 17 and 23, 2018.
    """

    def direction(g, mu_hat, nu_hat, count):
        variance = blocks.variance_estimate(mu_hat, nu_hat, blocks.variance_scale(beta, count))
        return blocks.multiply(blocks.variance_factor(mu_hat, variance), g)

    return _variance_adapted(beta, mu_dtype, nu_dtype, direction)


def _momentum_variance(mu_hat: Any, nu_hat: Any, beta: float, count: jax.Array) -> Any:
    """The variance of the debiased momentum, :math:`\\rho_t s_t` (one scalar per step)."""
    scale = blocks.relative_variance_rho(beta, count) * blocks.variance_scale(beta, count)
    return blocks.variance_estimate(mu_hat, nu_hat, scale)


def scale_by_m_svag(
    beta: float = 0.9, *, mu_dtype: Any = None, nu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""Momentum SVAG (M-SVAG): the debiased momentum times its variance factor.

    .. math::
      \gamma_t = \frac{\hat m_t^2}{\hat m_t^2 + \rho_t s_t}, \qquad
      u_t = \gamma_t\, \hat m_t,

    where :math:`\rho_t s_t` estimates the variance of :math:`\hat m_t` (see
    :func:`scale_by_svag` for :math:`s_t`). The first step is an SGD step.

    Args:
      beta: decay of both moments, in [0, 1).
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of the second moment (default: the parameters' dtype,
        float32 for 16-bit parameters).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_m_svag(0.9)
      >>> print(tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))[0].round(4))
      [ 1. -3.]

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_,
      Alg. 1 and eq. 25, 2018.
    """

    def direction(g, mu_hat, nu_hat, count):
        variance = _momentum_variance(mu_hat, nu_hat, beta, count)
        return blocks.multiply(blocks.variance_factor(mu_hat, variance), mu_hat)

    return _variance_adapted(beta, mu_dtype, nu_dtype, direction)


def scale_by_m_vassd(
    beta: float = 0.9, factor: str = "erf", *, mu_dtype: Any = None, nu_dtype: Any = None
) -> optax.GradientTransformationExtraArgs:
    r"""Variance-adapted sign descent with momentum (M-VASSD).

    .. math::
      \eta_t^2 = \frac{\rho_t s_t}{\hat m_t^2}, \qquad
      u_t = \gamma_s(\eta_t)\, \operatorname{sign}(\hat m_t),

    with the optimal factor for a sign, :math:`\gamma_s = \operatorname{erf}(1 /
    (\sqrt 2 \eta))` (``factor="erf"``), or Adam's implicit approximation
    :math:`(1+\eta^2)^{-1/2}` (``factor="adam"``).

    Args:
      beta: decay of both moments, in [0, 1).
      factor: ``"erf"`` or ``"adam"``.
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of the second moment (default: the parameters' dtype,
        float32 for 16-bit parameters).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_m_vassd(0.9)
      >>> tx.update(jnp.array([0.5, -3.0]), tx.init(jnp.zeros(2)))[0]
      Array([ 1., -1.], dtype=float32)

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_,
      sec. 3.1 and Fig. 3, 2018.
    """
    if factor not in blocks.SIGN_FACTORS:
        raise ValueError(f"factor must be one of {blocks.SIGN_FACTORS}, got {factor!r}.")

    def direction(g, mu_hat, nu_hat, count):
        variance = _momentum_variance(mu_hat, nu_hat, beta, count)
        gamma = blocks.sign_variance_factor(mu_hat, variance, factor)
        return blocks.multiply(gamma, blocks.sign(mu_hat))

    return _variance_adapted(beta, mu_dtype, nu_dtype, direction)
