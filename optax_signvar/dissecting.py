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

and, without momentum, SSD and SVAG. Each transformation here is one point of
:func:`optax_signvar.core.scale_by_dissection` and returns the *unit-rate*
direction; the named optimizers (:mod:`optax_signvar.alias`) are the same
points with the rate, built by :func:`optax_signvar.dissect`.
"""

from __future__ import annotations

from typing import Any

import optax

from optax_signvar.core import Dissection, scale_by_dissection

# m_vassd's ``factor`` names the formula; the dissection names the choice.
_FACTOR_TO_ADAPTATION = {"erf": "optimal", "adam": "adam"}


def sign_adaptation(factor: str) -> str:
    """The ``variance_adaptation`` of M-VASSD's ``factor`` ("erf" or "adam")."""
    if factor not in _FACTOR_TO_ADAPTATION:
        raise ValueError(f"factor must be one of {tuple(_FACTOR_TO_ADAPTATION)}, got {factor!r}.")
    return _FACTOR_TO_ADAPTATION[factor]


__all__ = [
    "scale_by_debiased_momentum",
    "scale_by_m_svag",
    "scale_by_m_vassd",
    "scale_by_sign",
    "scale_by_sign_momentum",
    "scale_by_svag",
]


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
    return scale_by_dissection(Dissection(), beta=beta, mu_dtype=mu_dtype)


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
    return scale_by_dissection(Dissection(direction="sign"), beta=beta, mu_dtype=mu_dtype)


def scale_by_sign() -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates to their sign (SSD's direction): :math:`u_t = \operatorname{sign}(g_t)`.

    Keeps only the step count. Identical to the direction of ``optax.sign_sgd``.

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
    return scale_by_dissection(Dissection(momentum=False, direction="sign"))


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
    return scale_by_dissection(
        Dissection(momentum=False, variance_adaptation="optimal"),
        beta=beta,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )


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
    return scale_by_dissection(
        Dissection(variance_adaptation="optimal"), beta=beta, mu_dtype=mu_dtype, nu_dtype=nu_dtype
    )


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
    return scale_by_dissection(
        Dissection(direction="sign", variance_adaptation=sign_adaptation(factor)),
        beta=beta,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
