"""The factory: any point of the optimizer space, as an optimizer, from keyword arguments."""

from __future__ import annotations

from typing import Any

import optax

from optax_signvar import _deprecation, _hyperparams, _rates
from optax_signvar._checks import check_range, check_rate, concrete_value
from optax_signvar.dissection import (
    Bounds,
    Direction,
    Dissection,
    Normalization,
    Variance,
    VarianceAdaptation,
)
from optax_signvar.layout import Layout
from optax_signvar.transform import scale_by_dissection

__all__ = ["dissect"]


@_deprecation.renamed_arguments(beta="b1", beta2="b2")
def dissect(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: bool = True,
    direction: Direction = "raw",
    variance_adaptation: VarianceAdaptation | None = None,
    variance: Variance = "ema",
    normalization: Normalization | None = None,
    max_tracking: bool = False,
    bounds: Bounds | dict | None = None,
    b1: float = 0.9,
    b2: float | None = None,
    eps: float = 1e-8,
    bias_correction: bool = True,
    weight_decay: Any = None,
    decoupled: bool = False,
    mask: Any = None,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""Builds the optimizer at one point of the sign x variance x bound space.

    Adam, M-SSD, M-SGD, M-SVAG, SVAG, AMSGrad, AdaBound and AMSBound are not
    separate algorithms but choices along a few axes (Balles & Hennig, 2018);
    each named optimizer of this package *is* a call of this function (the
    table is in ``docs/factory.rst``): Adam's ``b1``, ``b2`` are this function's,
    and the ``beta`` of Dissecting Adam's methods is ``b1`` (one decay for both
    moments). An ablation is a change of arguments. The update:

    .. math::
      u_t = -a_t\, \operatorname{clip}\big(r_t,\ \eta_l(t)/a_t,\ \eta_u(t)/a_t\big)
        \odot d_t \;[-\, a_t \lambda p_t]

    * ``momentum``: the direction :math:`d_t` is built from the debiased EMA
      :math:`\hat m_t` (True) or from the gradient :math:`g_t` (False).
    * ``direction``: ``"raw"`` uses it as is, ``"sign"`` its sign.
    * ``variance_adaptation``: the per-element factor :math:`r_t` from the
      relative variance :math:`\eta^2` of the direction: ``"optimal"`` is
      :math:`\hat m^2/(\hat m^2 + \sigma^2)` for a raw direction and
      :math:`\operatorname{erf}(1/(\sqrt2\eta))` for a sign; ``"adam"`` is
      Adam's implicit :math:`(1+\eta^2)^{-1/2}`; ``None`` is 1.
    * ``variance``: ``"ema"`` estimates the gradient variance from the two
      moments (:math:`s_t`), ``"minibatch"`` takes it from
      ``update(..., grad_variance=tree)`` and keeps no second moment.
    * ``normalization="rms"``: Adam's :math:`\hat m_t / (\sqrt{\hat v_t} +
      \epsilon)` (with ``b2``, ``eps``); this is how Adam, AMSGrad and
      AdaBound adapt, and it excludes ``variance_adaptation``.
    * ``max_tracking``: use the running max of the raw second moment (AMSGrad).
    * ``bounds``: AdaBound's dynamic bounds on the per-element rate
      :math:`a_t r_t`, as :class:`Bounds` or ``{"final_lr": ..., "gamma": ...}``.
      With ``normalization="rms"`` the rate is AdaBound's
      :math:`\sqrt{1-\beta_2^t}/((1-\beta_1^t)(\sqrt{v_t}+\epsilon))` times the
      raw :math:`m_t`.
    * ``bias_correction=False``: no debiasing (AMSGrad's paper form).
    * ``weight_decay``: coupled L2 (``g <- g + lambda p``, before everything) or,
      with ``decoupled=True``, ``u <- u - a_t lambda p`` as ``optax.adamw``.
      ``None`` leaves the chain without a weight-decay slot; a number, even 0,
      keeps one, so the state's structure does not depend on the value.

    Combinations that are not well defined raise ``ValueError`` saying why;
    combinations that no paper named are allowed, e.g. variance-adapted SGD
    with AdaBound's bounds, ``dissect(lr, variance_adaptation="optimal",
    bounds={"final_lr": 0.1, "gamma": 1e-3})``.

    Args:
      learning_rate: the rate :math:`a_t`, a float or an optax schedule.
      momentum: build the direction from the momentum (True) or the gradient.
      direction: ``"raw"`` or ``"sign"``.
      variance_adaptation: ``None``, ``"optimal"`` or ``"adam"``.
      variance: ``"ema"`` or ``"minibatch"``.
      normalization: ``None`` or ``"rms"``.
      max_tracking: track the max of the second moment.
      bounds: ``None``, a :class:`Bounds` or a dict of its fields.
      b1: decay of the first moment (of both moments with variance
        adaptation, Dissecting Adam's one :math:`\beta`), in [0, 1).
      b2: decay of the second moment with ``normalization="rms"`` (default
        0.999); ``None`` otherwise.
      eps: added to :math:`\sqrt{v}` with ``normalization="rms"``.
      bias_correction: debias the moments.
      weight_decay: ``None`` or :math:`\lambda \geq 0`.
      decoupled: decoupled rather than coupled weight decay.
      mask: which parameters decay (a tree of bools or a callable), as in
        ``optax.add_decayed_weights``.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second-moment buffers (default: the parameters',
        float32 for 16-bit parameters).
      layout: ``"tree"`` (the state mirrors the parameters) or ``"packed"``
        (the moments of leaves under :data:`optax_signvar.layout.PACK_MAX_SIZE`
        elements in flat buffers per dtype and sharding): the same updates bit
        for bit, a few kernels per step instead of a few per leaf. The packed
        state does not mirror the parameters (``optax.tree_map_params`` refuses
        it); ``docs/performance.rst`` says when it pays.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`:
      ``optax.chain([coupled decay], scale_by_dissection, [decoupled decay],
      scale_by_learning_rate)``. It carries a private record of its
      hyperparameters, so ``optax_signvar.diagnostics(state, opt)`` reads
      them from ``opt`` rather than from restated arguments.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar
      >>> f = lambda x: jnp.sum((x - 1.0) ** 2)
      >>> opt = optax_signvar.dissect(0.1, variance_adaptation="optimal",
      ...                             bounds={"final_lr": 0.1, "gamma": 1e-2})
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...   updates, state = opt.update(jax.grad(f)(params), state, params)
      ...   params = optax.apply_updates(params, updates)
      >>> print(f"{f(params):.2f}")
      0.00

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, 2018;
      Reddi et al., `On the Convergence of Adam and Beyond
      <https://openreview.net/forum?id=ryQu7f-RZ>`_, 2018;
      Luo et al., `Adaptive Gradient Methods with Dynamic Bound of Learning
      Rate <https://openreview.net/forum?id=Bkg3g2R9FX>`_, 2019.
    """
    point = Dissection(
        momentum=momentum,
        direction=direction,
        variance_adaptation=variance_adaptation,
        variance=variance,
        normalization=normalization,
        max_tracking=max_tracking,
        # Dissection.__post_init__ turns a mapping into Bounds (a converter pyright can't see)
        bounds=bounds,  # pyright: ignore[reportArgumentType]
        bias_correction=bias_correction,
    )
    learning_rate = check_rate("learning_rate", learning_rate)
    core = scale_by_dissection(
        point,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
        layout=layout,
    )
    parts: list[optax.GradientTransformation] = [core]
    if weight_decay is not None:
        parts.insert(len(parts) if decoupled else 0, _weight_decay(weight_decay, mask))
    chain = optax.chain(*parts, _rates.scale_by_learning_rate(learning_rate))
    # optax.chain makes a new update function: the chain gets the record of its core too
    # (b2 resolved as the core resolved it), for diagnostics(state, optimizer).
    recorded = _hyperparams.lookup(core)
    return chain if recorded is None else _hyperparams.record(chain, recorded)


def _weight_decay(weight_decay: Any, mask: Any) -> optax.GradientTransformation:
    """``add_decayed_weights``, or the identity when the decay is a concrete 0.

    Both have an ``EmptyState``, so the state's structure does not depend on the
    decay (``inject_hyperparams`` turns a 0 into a tracer and keeps the add).
    """
    weight_decay = check_range("weight_decay", weight_decay, 0.0)
    if concrete_value(weight_decay) == 0.0:
        return optax.identity()
    return _rates.add_decayed_weights(weight_decay, mask)
