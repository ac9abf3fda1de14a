"""The named unit-rate transformations: each is one point of
:func:`optax_signvar.scale_by_dissection`.

They return the *unit-rate* direction, to chain with your own clipping, masking
or rate; the named optimizers (:mod:`optax_signvar.alias`) are the same points
with the rate. Balles & Hennig (2018) read Adam as the product of two aspects,
the *sign* of the momentum and a per-coordinate *variance adaptation* of its
magnitude. The four quadrants, with momentum:

=====================  ==================  =========================
                       no adaptation       variance adaptation
=====================  ==================  =========================
raw direction          M-SGD               M-SVAG
sign                   M-SSD (= signum)    M-VASSD (Adam is close)
=====================  ==================  =========================

and, without momentum, SSD and SVAG; then Adam, and its fixes AMSGrad
(max-tracking) and AdaBound (dynamic bounds).
"""

from __future__ import annotations

from typing import Any, get_args

import optax

from optax_signvar import _deprecation
from optax_signvar._checks import check_adam_args, check_decay, check_one_of
from optax_signvar.dissection import Bounds, Dissection, VarianceAdaptation
from optax_signvar.layout import Layout
from optax_signvar.transform import scale_by_dissection

__all__ = [
    "scale_by_adabound",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_debiased_momentum",
    "scale_by_m_svag",
    "scale_by_m_vassd",
    "scale_by_sign",
    "scale_by_sign_momentum",
    "scale_by_svag",
]

# M-VASSD's old ``factor`` named the formula; ``variance_adaptation`` names the choice.
OLD_FACTOR_NAMES = {"erf": "optimal"}


def sign_adaptation(function: str, value: Any) -> VarianceAdaptation:
    """M-VASSD's ``variance_adaptation``, its old spelling ``"erf"`` mapped (with a warning)."""
    value = _deprecation.renamed_value(function, "variance_adaptation", value, OLD_FACTOR_NAMES)
    check_one_of("variance_adaptation", value, get_args(VarianceAdaptation))
    return value


def scale_by_debiased_momentum(
    beta: float = 0.9,
    *,
    mu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates to the debiased EMA of the gradient (M-SGD's direction).

    .. math::
      m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad u_t = \frac{m_t}{1-\beta^t}.

    This is Dissecting Adam's momentum, an average; ``optax.trace`` instead sums
    (``trace = g + beta * trace``), which scales the step by about ``1/(1-beta)``.

    Args:
      beta: EMA decay, in [0, 1).
      mu_dtype: dtype of the EMA (default: the parameters' dtype).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

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
    check_decay("beta", beta)
    return scale_by_dissection(Dissection(), b1=beta, mu_dtype=mu_dtype, layout=layout)


def scale_by_sign_momentum(
    beta: float = 0.9,
    *,
    mu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates to the sign of the EMA of the gradient (M-SSD's direction).

    .. math:: m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad u_t = \operatorname{sign}(m_t).

    The sign needs no bias correction. Identical to the direction of
    ``optax.signum``.

    Args:
      beta: EMA decay, in [0, 1).
      mu_dtype: dtype of the EMA (default: the parameters' dtype).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

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
    check_decay("beta", beta)
    return scale_by_dissection(
        Dissection(direction="sign"), b1=beta, mu_dtype=mu_dtype, layout=layout
    )


def scale_by_sign(*, layout: Layout = "tree") -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates to their sign (SSD's direction): :math:`u_t = \operatorname{sign}(g_t)`.

    Keeps only the step count. Identical to the direction of ``optax.sign_sgd``.

    Args:
      layout: accepted as by every transformation of the package; with no
        moments to keep, both layouts are the same.

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
    return scale_by_dissection(Dissection(momentum=False, direction="sign"), layout=layout)


def scale_by_svag(
    beta: float = 0.9,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic variance-adapted gradient (SVAG): the gradient times its factor.

    .. math::
      s_t = \frac{\max(\hat v_t - \hat m_t^2, 0)}{1-\rho_t}, \qquad
      \gamma_t = \frac{\hat m_t^2}{\hat m_t^2 + s_t}, \qquad u_t = \gamma_t\, g_t,

    with :math:`\rho_t` from :func:`optax_signvar.blocks.relative_variance_rho`
    and :math:`s_1 = 0`. :math:`\gamma_t` lies in [0, 1] by construction
    (:math:`s_t \geq 0`, no clip is needed, see
    :func:`optax_signvar.blocks.variance_factor`) and is 0 where :math:`m = v = 0`.

    Args:
      beta: decay of both moments, in [0, 1).
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of the second moment (default: the parameters' dtype,
        float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

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
    check_decay("beta", beta)
    return scale_by_dissection(
        Dissection(momentum=False, variance_adaptation="optimal"),
        b1=beta,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


def scale_by_m_svag(
    beta: float = 0.9,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
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
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

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
    check_decay("beta", beta)
    return scale_by_dissection(
        Dissection(variance_adaptation="optimal"),
        b1=beta,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


@_deprecation.renamed_arguments(factor=("variance_adaptation", OLD_FACTOR_NAMES))
def scale_by_m_vassd(
    beta: float = 0.9,
    variance_adaptation: VarianceAdaptation = "optimal",
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Variance-adapted sign descent with momentum (M-VASSD).

    .. math::
      \eta_t^2 = \frac{\rho_t s_t}{\hat m_t^2}, \qquad
      u_t = \gamma_s(\eta_t)\, \operatorname{sign}(\hat m_t),

    with the optimal factor for a sign, :math:`\gamma_s = \operatorname{erf}(1 /
    (\sqrt 2 \eta))` (``variance_adaptation="optimal"``), or Adam's implicit
    approximation :math:`(1+\eta^2)^{-1/2}` (``variance_adaptation="adam"``).
    ``factor="erf"`` / ``factor="adam"`` are the old spellings.

    Args:
      beta: decay of both moments, in [0, 1).
      variance_adaptation: ``"optimal"`` or ``"adam"``.
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of the second moment (default: the parameters' dtype,
        float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

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
    check_decay("beta", beta)
    return scale_by_dissection(
        Dissection(
            direction="sign",
            variance_adaptation=sign_adaptation("scale_by_m_vassd", variance_adaptation),
        ),
        b1=beta,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates according to Adam.

    .. math::
      \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \hat v_t = \frac{v_t}{1-\beta_2^t},
      \quad u_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}.

    The same arithmetic as ``optax.scale_by_adam``; the second moment of
    16-bit parameters is kept in float32 unless ``nu_dtype`` says otherwise.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of the second moment (default: the parameters' dtype,
        float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_adam(eps=0.0)
      >>> print(tx.update(jnp.array([2.0, -0.5]), tx.init(jnp.zeros(2)))[0].round(4))
      [ 1. -1.]

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, 2015.
    """
    check_adam_args(b1, b2, eps)
    return scale_by_dissection(
        Dissection(normalization="rms"),
        b1=b1,
        b2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    bias_correction: bool = True,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates according to AMSGrad (Adam with max-tracking).

    By default, as ``torch.optim.Adam(amsgrad=True)`` and the AMSBound reference
    code, the maximum is taken over the *raw* second moment and debiased after:

    .. math::
      \hat v^{\max}_t = \max(\hat v^{\max}_{t-1}, v_t), \qquad
      u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v^{\max}_t / (1-\beta_2^t)} + \epsilon}.

    With ``bias_correction=False`` it is the paper's Algorithm 2, no bias
    correction at all: :math:`u_t = m_t / (\sqrt{\hat v^{\max}_t} + \epsilon)`.

    ``optax.scale_by_amsgrad`` instead takes the maximum over the *debiased*
    :math:`\hat v_t`; since :math:`1-\beta_2^t` grows with ``t``, its maximum
    can be held by an early, inflated :math:`\hat v_t` for a long time, and its
    steps differ from PyTorch's until the bias correction has died out.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      bias_correction: ``True`` for PyTorch's form, ``False`` for the paper's.
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of both second-moment buffers (default: the parameters'
        dtype, float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_amsgrad(eps=0.0)
      >>> print(tx.update(jnp.array([2.0, -0.5]), tx.init(jnp.zeros(2)))[0].round(4))
      [ 1. -1.]

    References:
      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, 2018.
    """
    check_adam_args(b1, b2, eps)
    return scale_by_dissection(
        Dissection(normalization="rms", max_tracking=True, bias_correction=bias_correction),
        b1=b1,
        b2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


@_deprecation.renamed_arguments(amsbound="max_tracking")
def scale_by_adabound(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    final_lr: optax.ScalarOrSchedule = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma: float = 1e-3,
    *,
    max_tracking: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates according to AdaBound (or AMSBound), at unit rate.

    With :math:`f_t` the final (SGD) rate at step ``t`` and :math:`a_t` the
    learning rate,

    .. math::
      r_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{1}{\sqrt{v_t} + \epsilon},
      \qquad
      u_t = \operatorname{clip}\Big(r_t,\ \frac{f_t}{a_t}\big(1 - \tfrac{1}{\gamma t + 1}\big),\
            \frac{f_t}{a_t}\big(1 + \tfrac{1}{\gamma t}\big)\Big)\, m_t,

    (AMSBound: :math:`v_t` replaced by its running max). Followed by
    ``optax.scale_by_learning_rate(learning_rate)``, the step is
    :math:`-\operatorname{clip}(a_t r_t, \eta_l(t), \eta_u(t))\, m_t`, the
    reference package's update. ``learning_rate`` is taken here only to form
    :math:`f_t / a_t`: with a float ``final_lr`` that is ``final_lr / a_0``
    (the reference scales ``final_lr`` with the schedule); a schedule
    ``final_lr`` is :math:`f_t` itself.

    Args:
      learning_rate: the rate :math:`a_t` (float or schedule) the chain applies.
      final_lr: the SGD rate the bounds converge to (float or schedule).
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      gamma: convergence speed of the bounds, in [0, 1) (0: no bounds, Adam).
      max_tracking: track the max of the second moment (AMSBound); the old
        spelling ``amsbound=`` still works, with a ``DeprecationWarning``.
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of the second-moment buffers (default: the parameters'
        dtype, float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar
      >>> tx = optax_signvar.scale_by_adabound(learning_rate=1e-3, final_lr=0.1)
      >>> print(tx.update(jnp.array([2.0, -0.5]), tx.init(jnp.zeros(2)))[0].round(4))
      [ 1. -1.]

    References:
      Luo, Xiong, Liu & Sun, `Adaptive Gradient Methods with Dynamic Bound of
      Learning Rate <https://openreview.net/forum?id=Bkg3g2R9FX>`_, 2019.
    """
    check_adam_args(b1, b2, eps)
    return scale_by_dissection(
        Dissection(normalization="rms", max_tracking=max_tracking, bounds=Bounds(final_lr, gamma)),
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )
