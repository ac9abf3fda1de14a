"""Gradient transformations of Adam and its fixes: AMSGrad's max-tracking and
AdaBound's dynamic bounds.

Each is one point of :func:`optax_signvar.core.scale_by_dissection` and returns
the *unit-rate* direction; the named optimizers (:mod:`optax_signvar.alias`)
are the same points with the rate, built by :func:`optax_signvar.dissect`.
"""

from __future__ import annotations

from typing import Any

import optax

from optax_signvar import _common
from optax_signvar.core import Bounds, Dissection, scale_by_dissection

__all__ = [
    "scale_by_adabound",
    "scale_by_adam",
    "scale_by_amsgrad",
]


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
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
    _common.check_adam_args(b1, b2, eps)
    return scale_by_dissection(
        Dissection(normalization="rms"),
        beta=b1,
        beta2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )


def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    bias_correction: bool = True,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
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
    _common.check_adam_args(b1, b2, eps)
    return scale_by_dissection(
        Dissection(normalization="rms", max_tracking=True, bias_correction=bias_correction),
        beta=b1,
        beta2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )


def scale_by_adabound(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    final_lr: optax.ScalarOrSchedule = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma: float = 1e-3,
    *,
    amsbound: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
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
      gamma: convergence speed of the bounds, in (0, 1).
      amsbound: track the max of the second moment (AMSBound).
      mu_dtype: dtype of the first moment (default: the parameters' dtype).
      nu_dtype: dtype of the second-moment buffers (default: the parameters'
        dtype, float32 for 16-bit parameters).

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
    _common.check_adam_args(b1, b2, eps)
    return scale_by_dissection(
        Dissection(normalization="rms", max_tracking=amsbound, bounds=Bounds(final_lr, gamma)),
        learning_rate=learning_rate,
        beta=b1,
        beta2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
