"""Gradient transformations of Adam and its fixes: AMSGrad's max-tracking and
AdaBound's dynamic bounds.

Each returns the *unit-rate* direction; the named optimizers in
:mod:`optax_signvar.alias` chain it with ``optax.scale_by_learning_rate``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_signvar import _common, blocks

__all__ = [
    "AdamState",
    "MaxTrackingState",
    "scale_by_adabound",
    "scale_by_adam",
    "scale_by_amsgrad",
]


class AdamState(NamedTuple):
    """State of :func:`scale_by_adam` and of :func:`scale_by_adabound` (AdaBound)."""

    count: jax.Array  # int32, number of updates so far
    mu: optax.Updates  # EMA of the gradient
    nu: optax.Updates  # EMA of the squared gradient


class MaxTrackingState(NamedTuple):
    """State of :func:`scale_by_amsgrad` and of :func:`scale_by_adabound` (AMSBound)."""

    count: jax.Array  # int32, number of updates so far
    mu: optax.Updates  # EMA of the gradient
    nu: optax.Updates  # EMA of the squared gradient
    nu_max: optax.Updates  # running max of the raw ``nu``


def _check_adam_args(b1: Any, b2: Any, eps: Any) -> None:
    _common.check_decay("b1", b1)
    _common.check_decay("b2", b2)
    _common.check_range("eps", eps, 0.0)


def _init_moments(params: Any, mu_dtype: Any, nu_dtype: Any, max_tracking: bool):
    mu = _common.zeros_moment(params, mu_dtype)
    nu = _common.zeros_moment(params, nu_dtype, widen_half=True)
    if max_tracking:
        return MaxTrackingState(_common.zero_count(), mu, nu, nu)
    return AdamState(_common.zero_count(), mu, nu)


def _update_moments(updates: Any, state: Any, b1: Any, b2: Any):
    """The step count, both EMAs and (with max-tracking) the max of the raw ``nu``."""
    count = optax.safe_increment(state.count)
    mu = blocks.ema(updates, state.mu, b1)
    nu = blocks.ema(updates, state.nu, b2, order=2)
    if isinstance(state, MaxTrackingState):
        new_state = MaxTrackingState(count, mu, nu, blocks.running_max(state.nu_max, nu))
    else:
        new_state = AdamState(count, mu, nu)
    return count, new_state


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
    _check_adam_args(b1, b2, eps)

    def init_fn(params):
        return _init_moments(params, mu_dtype, nu_dtype, max_tracking=False)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count, state = _update_moments(updates, state, b1, b2)
        mu_hat = blocks.bias_correction(state.mu, blocks.debias_denominator(b1, count))
        nu_hat = blocks.bias_correction(state.nu, blocks.debias_denominator(b2, count))
        return _common.cast_like(blocks.rms_normalize(mu_hat, nu_hat, eps), updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
    _check_adam_args(b1, b2, eps)

    def init_fn(params):
        return _init_moments(params, mu_dtype, nu_dtype, max_tracking=True)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count, state = _update_moments(updates, state, b1, b2)
        mu, nu_max = state.mu, state.nu_max
        if bias_correction:
            mu = blocks.bias_correction(mu, blocks.debias_denominator(b1, count))
            nu_max = blocks.bias_correction(nu_max, blocks.debias_denominator(b2, count))
        return _common.cast_like(blocks.rms_normalize(mu, nu_max, eps), updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _safe_ratio(num: Any, den: Any) -> jax.Array:
    den = jnp.asarray(den)
    return jnp.where(den != 0, num / jnp.where(den != 0, den, 1), 0.0)


def rate_ratio(
    value: optax.ScalarOrSchedule, learning_rate: optax.ScalarOrSchedule, name: str = "final_lr"
) -> Any:
    """``value_t / a_t`` as a float, a 0-d array or a schedule of the step count.

    A float ``value`` scales with the rate schedule, as the AdaBound reference
    does under a PyTorch scheduler (``value_t = value * a_t / a_0``), so the
    ratio is the constant ``value / a_0``; a schedule ``value`` is ``value_t``.
    """
    if callable(value):
        return lambda count: _safe_ratio(
            value(count), learning_rate(count) if callable(learning_rate) else learning_rate
        )
    a0 = _common.initial_value(learning_rate)
    v0 = _common.concrete_value(a0)
    if v0 is not None and v0 == 0.0:
        raise ValueError(
            f"learning_rate is 0 at step 0, so a float {name} (scaled by a_t / a_0) is "
            f"undefined; pass {name} as a schedule instead."
        )
    # dividing by the Python float keeps the ratio in the precision of `value`
    return value / v0 if v0 is not None else _safe_ratio(value, a0)


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
    _check_adam_args(b1, b2, eps)
    _common.check_rate("learning_rate", learning_rate)
    _common.check_rate("final_lr", final_lr)
    _common.check_range("gamma", gamma, 0.0, 1.0, low_open=True, high_open=True)
    ratio = rate_ratio(final_lr, learning_rate)

    def init_fn(params):
        return _init_moments(params, mu_dtype, nu_dtype, max_tracking=amsbound)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        # The rate schedule is read at the count before the increment, as
        # optax.scale_by_learning_rate does; the bounds use t after it.
        scale = ratio(state.count) if callable(ratio) else ratio
        count, state = _update_moments(updates, state, b1, b2)
        step = jnp.sqrt(blocks.debias_denominator(b2, count)) / blocks.debias_denominator(b1, count)
        nu = state.nu_max if amsbound else state.nu
        lower, upper = blocks.dynamic_bounds(scale, gamma, count)
        rate = blocks.clip_rate(blocks.adaptive_rate(nu, eps, step), lower, upper)
        return _common.cast_like(blocks.multiply(rate, state.mu), updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
