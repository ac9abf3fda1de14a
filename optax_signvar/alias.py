"""Named optimizers, each one point of :func:`optax_signvar.dissect`.

Every function returns an :class:`optax.GradientTransformationExtraArgs`,
``optax.chain([weight decay], scale_by_dissection, [weight decay],
scale_by_learning_rate)``, and takes a float or an optax schedule wherever it
takes a rate. The decays keep the names their papers and optax give them:
``b1``, ``b2`` for the Adam family (``dissect``'s ``b1``, ``b2``), and ``beta``
for Dissecting Adam's methods, whose one decay serves both moments
(``dissect(..., b1=beta)``, as ``optax.signum``'s ``beta``). Each optimizer
carries ``dissect``'s record of its hyperparameters (decays, ``eps``, rate and,
for the AdaBound family, the bounds), which
``optax_signvar.diagnostics(state, opt)`` reads.
"""

from __future__ import annotations

from typing import Any

import optax

from optax_signvar import _deprecation, _rates
from optax_signvar._checks import check_adam_args, check_decay, check_range, concrete_value
from optax_signvar.dissection import Bounds, VarianceAdaptation
from optax_signvar.factory import dissect
from optax_signvar.layout import Layout
from optax_signvar.scale_by import OLD_FACTOR_NAMES, sign_adaptation

__all__ = [
    "adabound",
    "adaboundw",
    "adam",
    "amsbound",
    "amsboundw",
    "amsgrad",
    "m_sgd",
    "m_ssd",
    "m_svag",
    "m_vassd",
    "ssd",
    "svag",
]

Mask = Any  # a pytree of bools like the params, or a callable returning one


# --------------------------------------------------------------------------- #
# Dissecting Adam.
# --------------------------------------------------------------------------- #


def m_sgd(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.9,
    *,
    mu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Momentum SGD with an averaged, debiased momentum (Dissecting Adam's M-SGD).

    .. math::
      m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad
      u_t = -a_t \frac{m_t}{1-\beta^t}.

    Not ``optax.sgd(momentum=beta)``, which sums (``trace = g + beta * trace``)
    and so takes steps about ``1/(1-beta)`` times larger at the same rate.

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      beta: momentum decay, in [0, 1).
      mu_dtype: dtype of the momentum buffer (default: the parameters').
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.m_sgd(learning_rate=0.1)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, Alg. 2, 2018.
    """
    check_decay("beta", beta)
    return dissect(learning_rate, b1=beta, mu_dtype=mu_dtype, layout=layout)


def ssd(
    learning_rate: optax.ScalarOrSchedule, *, layout: Layout = "tree"
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic sign descent (SSD): :math:`u_t = -a_t \operatorname{sign}(g_t)`.

    Equal to ``optax.sign_sgd``.

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      layout: accepted as by every optimizer of the package; SSD keeps no
        moments, so both layouts are the same.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.ssd(learning_rate=0.01)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_, 2018.
    """
    return dissect(learning_rate, momentum=False, direction="sign", layout=layout)


def m_ssd(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.9,
    *,
    mu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Sign descent with momentum (M-SSD): :math:`u_t = -a_t \operatorname{sign}(m_t)`.

    Equal to ``optax.signum``.

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      beta: momentum decay, in [0, 1).
      mu_dtype: dtype of the momentum buffer (default: the parameters').
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.m_ssd(learning_rate=0.01)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_,
      Alg. 2, 2018.
    """
    check_decay("beta", beta)
    return dissect(learning_rate, direction="sign", b1=beta, mu_dtype=mu_dtype, layout=layout)


def svag(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.9,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic variance-adapted gradient (SVAG).

    .. math::
      \gamma_t = \frac{\hat m_t^2}{\hat m_t^2 + s_t}, \qquad u_t = -a_t \gamma_t g_t,

    with :math:`s_t` the variance estimate of
    :func:`optax_signvar.scale_by_svag` (:math:`s_1 = 0`).

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      beta: decay of both moments, in [0, 1).
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second moment (default: the parameters', float32
        for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.svag(learning_rate=0.1)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_,
      eqs. 17 and 23, 2018.
    """
    check_decay("beta", beta)
    return dissect(
        learning_rate,
        momentum=False,
        variance_adaptation="optimal",
        b1=beta,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


def m_svag(
    learning_rate: optax.ScalarOrSchedule,
    beta: float = 0.9,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Momentum SVAG (M-SVAG), Dissecting Adam's variance-adapted M-SGD.

    .. math::
      \gamma_t = \frac{\hat m_t^2}{\hat m_t^2 + \rho_t s_t}, \qquad
      u_t = -a_t \gamma_t \hat m_t.

    The first step is an SGD step; where :math:`m = v = 0` nothing moves.

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      beta: decay of both moments, in [0, 1).
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second moment (default: the parameters', float32
        for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.m_svag(learning_rate=0.1)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_,
      Alg. 1, 2018.
    """
    check_decay("beta", beta)
    return dissect(
        learning_rate,
        variance_adaptation="optimal",
        b1=beta,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


@_deprecation.renamed_arguments(factor=("variance_adaptation", OLD_FACTOR_NAMES))
def m_vassd(
    learning_rate: optax.ScalarOrSchedule,
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
      u_t = -a_t\, \gamma_s(\eta_t)\, \operatorname{sign}(\hat m_t),

    with :math:`\gamma_s = \operatorname{erf}(1/(\sqrt 2 \eta))`, the
    probability that the sign is right under a Gaussian model
    (``variance_adaptation="optimal"``), or Adam's implicit
    :math:`(1+\eta^2)^{-1/2}` (``variance_adaptation="adam"``), as in
    :func:`optax_signvar.dissect`. ``factor="erf"`` / ``factor="adam"`` are the
    old spellings (deprecated).

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      beta: decay of both moments, in [0, 1).
      variance_adaptation: ``"optimal"`` or ``"adam"``.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second moment (default: the parameters', float32
        for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.m_vassd(learning_rate=0.01)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_,
      sec. 3.1 and Fig. 3, 2018.
    """
    check_decay("beta", beta)
    return dissect(
        learning_rate,
        direction="sign",
        variance_adaptation=sign_adaptation("m_vassd", variance_adaptation),
        b1=beta,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


# --------------------------------------------------------------------------- #
# Adam, AMSGrad, AdaBound.
# --------------------------------------------------------------------------- #


def adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Adam, equal to ``optax.adam`` to float rounding.

    .. math::
      u_t = -a_t \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}.

    In Dissecting Adam's reading, :math:`\hat m/\sqrt{\hat v} =
    \operatorname{sign}(\hat m)\,(1+\eta^2)^{-1/2}`: sign descent with an
    implicit variance adaptation. Differs from ``optax.adam`` only in keeping
    the second moment of 16-bit parameters in float32 by default.

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second moment (default: the parameters', float32
        for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.adam(learning_rate=0.1)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, 2015.
    """
    check_adam_args(b1, b2, eps)
    return dissect(
        learning_rate,
        normalization="rms",
        b1=b1,
        b2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


def amsgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    bias_correction: bool = True,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""AMSGrad with PyTorch's semantics (or, optionally, the paper's).

    .. math::
      v^{\max}_t = \max(v^{\max}_{t-1}, v_t), \qquad
      u_t = -a_t \frac{m_t/(1-\beta_1^t)}{\sqrt{v^{\max}_t/(1-\beta_2^t)} + \epsilon}

    as ``torch.optim.Adam(amsgrad=True)``: the max over the *raw* second
    moment. ``bias_correction=False`` gives the paper's Algorithm 2,
    :math:`u_t = -a_t m_t / (\sqrt{v^{\max}_t} + \epsilon)`.
    ``optax.amsgrad`` differs from both: it takes the max over the *debiased*
    :math:`\hat v_t`, so an early, bias-inflated :math:`\hat v_t` can hold the
    max (see :func:`optax_signvar.scale_by_amsgrad`).

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      bias_correction: ``True`` for PyTorch's form, ``False`` for the paper's.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second-moment buffers (default: the parameters',
        float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.amsgrad(learning_rate=0.1)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Reddi, Kale & Kumar, `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, 2018.
    """
    check_adam_args(b1, b2, eps)
    return dissect(
        learning_rate,
        normalization="rms",
        max_tracking=True,
        bias_correction=bias_correction,
        b1=b1,
        b2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


def _bounded_adam(
    learning_rate: optax.ScalarOrSchedule,
    final_lr: optax.ScalarOrSchedule,
    b1: float,
    b2: float,
    eps: float,
    gamma: float,
    weight_decay: Any,
    mask: Mask,
    mu_dtype: Any,
    nu_dtype: Any,
    *,
    max_tracking: bool,
    decoupled: bool,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    """The AdaBound family: AdaBound's bounds on Adam's rate, +/- max-tracking and decoupling."""
    weight_decay = check_range("weight_decay", weight_decay, 0.0)
    if decoupled and concrete_value(weight_decay) != 0.0:
        # AdaBoundW decays by lam * a_t / a_0; the chain multiplies by a_t.
        weight_decay = _rates.rate_ratio(weight_decay, learning_rate, "weight_decay")
    check_adam_args(b1, b2, eps)
    return dissect(
        learning_rate,
        normalization="rms",
        max_tracking=max_tracking,
        bounds=Bounds(final_lr, gamma),
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=weight_decay,
        decoupled=decoupled,
        mask=mask,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )


def adabound(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    final_lr: optax.ScalarOrSchedule = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma: float = 1e-3,
    weight_decay: float = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""AdaBound: Adam whose per-element rates are clipped into bounds that
    converge to an SGD rate; step for step the ``adabound`` PyTorch package.

    .. math::
      r_t = \frac{a_t\sqrt{1-\beta_2^t}}{(1-\beta_1^t)(\sqrt{v_t}+\epsilon)}, \qquad
      u_t = -\operatorname{clip}\Big(r_t,\ f_t\big(1-\tfrac{1}{\gamma t+1}\big),\
        f_t\big(1+\tfrac{1}{\gamma t}\big)\Big)\, m_t

    With ``gamma = 1 - b2`` these are the paper's bound functions.

    Args:
      learning_rate: the Adam-phase rate :math:`a_t`, a float or a schedule.
      final_lr: the SGD rate the bounds converge to. A float is scaled with
        the schedule, ``f_t = final_lr * a_t / a_0``, as the
        reference package does under a PyTorch scheduler; a schedule is used as
        :math:`f_t` directly.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      gamma: convergence speed of the bounds, in [0, 1) (0: no bounds, Adam).
      weight_decay: coupled L2 coefficient :math:`\lambda`: ``g <- g + lambda * p``.
      mask: a tree of bools (or a callable of the params returning one)
        selecting the parameters that decay, as in ``optax.add_decayed_weights``.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second-moment buffer(s) (default: the
        parameters', float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.adabound(learning_rate=0.01, final_lr=0.1)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Luo, Xiong, Liu & Sun, `Adaptive Gradient Methods with Dynamic Bound of
      Learning Rate <https://openreview.net/forum?id=Bkg3g2R9FX>`_, 2019.
    """
    return _bounded_adam(
        learning_rate,
        final_lr,
        b1,
        b2,
        eps,
        gamma,
        weight_decay,
        mask,
        mu_dtype,
        nu_dtype,
        max_tracking=False,
        decoupled=False,
        layout=layout,
    )


def amsbound(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    final_lr: optax.ScalarOrSchedule = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma: float = 1e-3,
    weight_decay: float = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""AMSBound: AdaBound with AMSGrad's max-tracking of the raw second moment;
    step for step ``adabound.AdaBound(amsbound=True)``.

    .. math::
      v^{\max}_t = \max(v^{\max}_{t-1}, v_t), \qquad
      r_t = \frac{a_t\sqrt{1-\beta_2^t}}{(1-\beta_1^t)(\sqrt{v^{\max}_t}+\epsilon)}, \qquad
      u_t = -\operatorname{clip}\big(r_t,\ \eta_l(t),\ \eta_u(t)\big)\, m_t

    Args:
      learning_rate: the Adam-phase rate :math:`a_t`, a float or a schedule.
      final_lr: the SGD rate the bounds converge to. A float is scaled with
        the schedule, ``f_t = final_lr * a_t / a_0``, as the
        reference package does under a PyTorch scheduler; a schedule is used as
        :math:`f_t` directly.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      gamma: convergence speed of the bounds, in [0, 1) (0: no bounds, Adam).
      weight_decay: coupled L2 coefficient :math:`\lambda`: ``g <- g + lambda * p``.
      mask: a tree of bools (or a callable of the params returning one)
        selecting the parameters that decay, as in ``optax.add_decayed_weights``.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second-moment buffer(s) (default: the
        parameters', float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.amsbound(learning_rate=0.01, final_lr=0.1)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Luo, Xiong, Liu & Sun, `Adaptive Gradient Methods with Dynamic Bound of
      Learning Rate <https://openreview.net/forum?id=Bkg3g2R9FX>`_, 2019.
    """
    return _bounded_adam(
        learning_rate,
        final_lr,
        b1,
        b2,
        eps,
        gamma,
        weight_decay,
        mask,
        mu_dtype,
        nu_dtype,
        max_tracking=True,
        decoupled=False,
        layout=layout,
    )


def adaboundw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    final_lr: optax.ScalarOrSchedule = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma: float = 1e-3,
    weight_decay: float = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""AdaBoundW: AdaBound with decoupled weight decay.

    .. math::
      u_t = -\operatorname{clip}(\dots)\, m_t - \lambda \frac{a_t}{a_0} p_t

    (see :func:`adabound` for the clipped rate).

    Args:
      learning_rate: the Adam-phase rate :math:`a_t`, a float or a schedule.
      final_lr: the SGD rate the bounds converge to. A float is scaled with
        the schedule, ``f_t = final_lr * a_t / a_0``, as the
        reference package does under a PyTorch scheduler; a schedule is used as
        :math:`f_t` directly.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      gamma: convergence speed of the bounds, in [0, 1) (0: no bounds, Adam).
      weight_decay: decoupled decay :math:`\lambda`: ``u <- u - lambda * (a_t / a_0) * p``
        (``p <- (1 - lambda) p + u`` at a constant rate, as AdaBoundW).
      mask: a tree of bools (or a callable of the params returning one)
        selecting the parameters that decay, as in ``optax.add_decayed_weights``.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second-moment buffer(s) (default: the
        parameters', float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.adaboundw(learning_rate=0.01, final_lr=0.1, weight_decay=1e-4)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Luo, Xiong, Liu & Sun, `Adaptive Gradient Methods with Dynamic Bound of
      Learning Rate <https://openreview.net/forum?id=Bkg3g2R9FX>`_, 2019;
      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, 2019.
    """
    return _bounded_adam(
        learning_rate,
        final_lr,
        b1,
        b2,
        eps,
        gamma,
        weight_decay,
        mask,
        mu_dtype,
        nu_dtype,
        max_tracking=False,
        decoupled=True,
        layout=layout,
    )


def amsboundw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    final_lr: optax.ScalarOrSchedule = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    gamma: float = 1e-3,
    weight_decay: float = 0.0,
    *,
    mask: Mask = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""AMSBoundW: AMSBound with decoupled weight decay.

    .. math::
      u_t = -\operatorname{clip}(\dots)\, m_t - \lambda \frac{a_t}{a_0} p_t

    (see :func:`amsbound` for the clipped rate).

    Args:
      learning_rate: the Adam-phase rate :math:`a_t`, a float or a schedule.
      final_lr: the SGD rate the bounds converge to. A float is scaled with
        the schedule, ``f_t = final_lr * a_t / a_0``, as the
        reference package does under a PyTorch scheduler; a schedule is used as
        :math:`f_t` directly.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      gamma: convergence speed of the bounds, in [0, 1) (0: no bounds, Adam).
      weight_decay: decoupled decay :math:`\lambda`: ``u <- u - lambda * (a_t / a_0) * p``
        (``p <- (1 - lambda) p + u`` at a constant rate, as AdaBoundW).
      mask: a tree of bools (or a callable of the params returning one)
        selecting the parameters that decay, as in ``optax.add_decayed_weights``.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second-moment buffer(s) (default: the
        parameters', float32 for 16-bit parameters).
      layout: ``"tree"`` or ``"packed"`` (the moments of small leaves in flat
        buffers: the same updates, fewer kernels; see :mod:`optax_signvar.layout`).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.amsboundw(learning_rate=0.01, final_lr=0.1, weight_decay=1e-4)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Luo, Xiong, Liu & Sun, `Adaptive Gradient Methods with Dynamic Bound of
      Learning Rate <https://openreview.net/forum?id=Bkg3g2R9FX>`_, 2019;
      Loshchilov & Hutter, `Decoupled Weight Decay Regularization
      <https://arxiv.org/abs/1711.05101>`_, 2019.
    """
    return _bounded_adam(
        learning_rate,
        final_lr,
        b1,
        b2,
        eps,
        gamma,
        weight_decay,
        mask,
        mu_dtype,
        nu_dtype,
        max_tracking=True,
        decoupled=True,
        layout=layout,
    )
