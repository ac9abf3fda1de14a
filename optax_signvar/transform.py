r"""The one gradient transformation behind every optimizer of the package.

:func:`scale_by_dissection` turns a :class:`~optax_signvar.Dissection` into an
optax transformation built from :mod:`optax_signvar.blocks`. The named
``scale_by_*`` transformations, the named optimizers and the factory
:func:`optax_signvar.dissect` are all thin layers over this module, so there is
exactly one place where the moments are updated and combined.

One step, in the order the code below follows:

1. the moments (``_update_moments``): :math:`m_t`, :math:`v_t` and, with
   max-tracking, :math:`v^{\max}_t`;
2. the per-step scalars (:func:`step_scalars`, a :class:`StepScalars`): bias
   corrections, the variance scale :math:`\rho_t/(1-\rho_t)`, AdaBound's step and
   bounds, each computed once per step rather than once per leaf;
3. the direction :math:`d_t` and the per-element rate :math:`r_t`, by branch:
   Adam's RMS normalisation (``_rms_normalized``), AdaBound's rate
   (``_adabound_rate``), or a raw or sign direction (``_direction``)
   with an optional variance-adapted rate (``_variance_adapted_rate``);
4. AdaBound's clip of the rate (``_clip_to_bounds``) and the product
   :math:`r_t \odot d_t`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from optax_signvar import _deprecation, _hyperparams, _rates, blocks
from optax_signvar import layout as _layout
from optax_signvar._checks import check_decay, check_one_of, check_range, check_rate
from optax_signvar._tree import (
    as_inexact,
    cast_like,
    check_matches,
    is_complex,
    widen_second,
    zero_count,
    zeros_moment,
)
from optax_signvar.dissection import Bounds, Dissection, VarianceAdaptation

__all__ = ["DissectedState", "StepScalars", "scale_by_dissection", "step_scalars"]

Tree = Any


class DissectedState(NamedTuple):
    """State of :func:`scale_by_dissection`; a buffer the point does not use is ``None``.

    Attributes:
      count: int32 number of updates so far.
      mu: EMA of the gradient (momentum, and the mean estimate of variance adaptation).
      nu: EMA of the squared gradient.
      nu_max: running max of the raw ``nu`` (max-tracking).
    """

    # the field shadows tuple.count, as in optax's own states (ScaleByAdamState)
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride]
    mu: optax.Updates | None = None
    nu: optax.Updates | None = None
    nu_max: optax.Updates | None = None


class StepScalars(NamedTuple):
    """The per-step scalars of one update; ``None`` where the point does not use one.

    Each is a 0-d array computed once per step, in the precision of the
    hyperparameters, and cast to a leaf's dtype only where a block uses it.

    Attributes:
      debias1: :math:`1-\\beta_1^t`, the first moment's bias correction.
      debias2: :math:`1-\\beta_2^t`, the second moment's (RMS normalisation).
      adabound_step: AdaBound's :math:`\\sqrt{1-\\beta_2^t}/(1-\\beta_1^t)`.
      variance_scale: the factor that turns the variance estimate's input into
        the variance of the direction: :math:`1/(1-\\rho_t)` (raw gradient) or
        :math:`\\rho_t/(1-\\rho_t)` (momentum) on :math:`\\hat v - \\hat m^2`; 1
        or :math:`\\rho_t` on a given mini-batch variance.
      lower: AdaBound's lower bound, divided by the learning rate.
      upper: AdaBound's upper bound, divided by the learning rate.
    """

    debias1: jax.Array | None = None
    debias2: jax.Array | None = None
    adabound_step: jax.Array | None = None
    variance_scale: jax.Array | None = None
    lower: jax.Array | None = None
    upper: jax.Array | None = None


def step_scalars(
    point: Dissection,
    count: jax.Array,
    b1: Any,
    b2: Any,
    bound_scale: Any = None,
    *,
    minibatch: bool = False,
) -> StepScalars:
    """Every per-step scalar the update of ``point`` uses at step ``count``.

    Args:
      point: the point of the space.
      count: the step count :math:`t \\geq 1` (after the increment).
      b1: decay of the first moment.
      b2: decay of the second moment.
      bound_scale: AdaBound's :math:`f_t / a_t` (only with bounds).
      minibatch: whether the variance is a given mini-batch variance rather
        than the moving-average estimate.

    Returns:
      A :class:`StepScalars`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar as osv
      >>> from optax_signvar.transform import step_scalars
      >>> s = step_scalars(osv.Dissection(variance_adaptation="optimal"), jnp.int32(2), 0.5, 0.5)
      >>> print(s.debias1, f"{s.variance_scale:.4f}", s.debias2)  # rho_2 / (1 - rho_2)
      0.75 1.2500 None
    """
    rms = point.normalization == "rms"
    debias1 = debias2 = None
    if point.bias_correction and point.uses_first_moment:
        debias1 = blocks.debias_denominator(b1, count)
    if point.bias_correction and rms:
        debias2 = blocks.debias_denominator(b2, count)
    lower = upper = None
    if point.bounds is not None:
        lower, upper = blocks.dynamic_bounds(bound_scale, point.bounds.gamma, count)
    return StepScalars(
        debias1=debias1,
        debias2=debias2,
        adabound_step=_adabound_step(point, count, b1, b2, debias2) if rms else None,
        variance_scale=_variance_scale(point, count, b1, minibatch),
        lower=lower,
        upper=upper,
    )


def _adabound_step(point: Dissection, count: jax.Array, b1: Any, b2: Any, debias2: Any) -> Any:
    """AdaBound folds the bias corrections into one scalar step (None without bounds)."""
    if point.bounds is None:
        return None
    if not point.bias_correction:
        return jnp.ones([])
    if point.momentum:
        return blocks.adabound_step(b1, b2, count)
    return jnp.sqrt(debias2)


def _variance_scale(point: Dissection, count: jax.Array, b1: Any, minibatch: bool) -> Any:
    """The variance of the direction per unit of its input (None without adaptation)."""
    if point.variance_adaptation is None:
        return None
    if minibatch:
        # a given variance is that of g; the momentum's is rho_t times it
        return jnp.asarray(blocks.relative_variance_rho(b1, count) if point.momentum else 1.0)
    if point.momentum:
        return blocks.momentum_variance_scale(b1, count)
    return blocks.variance_scale(b1, count)


def _debiased(moment: Tree, debias: Any) -> Tree:
    return moment if debias is None else blocks.bias_correction(moment, debias)


def _update_moments(
    point: Dissection, updates: Tree, state: DissectedState, count: jax.Array, b1: Any, b2: Any
) -> DissectedState:
    """The state after this step's gradient: the EMAs and the running max."""
    mu = nu = nu_max = None
    if point.uses_first_moment:
        mu = blocks.ema(updates, state.mu, b1)
    if point.uses_second_moment:
        nu = blocks.ema(updates, state.nu, b2, order=2)
    if point.max_tracking:
        nu_max = blocks.running_max(state.nu_max, nu)
    return DissectedState(count, mu, nu, nu_max)


def _second_moment(point: Dissection, state: DissectedState) -> Tree:
    """The second moment the update reads: the running max when tracking it."""
    return state.nu_max if point.max_tracking else state.nu


def _rms_normalized(
    point: Dissection, updates: Tree, state: DissectedState, s: StepScalars, eps: Any
) -> Tree:
    """Adam's (and AMSGrad's) direction, :math:`\\hat m / (\\sqrt{\\hat v} + \\epsilon)`."""
    numerator = _debiased(state.mu, s.debias1) if point.momentum else updates
    second = _debiased(_second_moment(point, state), s.debias2)
    return blocks.rms_normalize(numerator, second, eps)


def _adabound_rate(point: Dissection, state: DissectedState, s: StepScalars, eps: Any) -> Tree:
    """AdaBound's per-element rate before the clip; eps on the root of the *raw* v."""
    return blocks.adaptive_rate(_second_moment(point, state), eps, s.adabound_step)


def _direction(point: Dissection, updates: Tree, mu: Tree, mu_hat: Tree) -> Tree:
    """The direction a raw or sign step follows: g or the momentum, raw or its sign."""
    if point.direction == "sign":
        # sign(m) == sign(m / (1 - b1^t)): the sign needs no bias correction
        return blocks.sign(mu if point.momentum else updates)
    return mu_hat if point.momentum else updates


def _variance_adapted_rate(
    point: Dissection,
    adaptation: VarianceAdaptation,
    state: DissectedState,
    mu_hat: Tree,
    s: StepScalars,
    grad_variance: Tree | None,
) -> Tree:
    """The variance-adaptation factor of the direction, from its relative variance."""
    if grad_variance is not None:
        # widened as nu is: |m|^2 of a float16 direction overflows float16 at |m| > 256
        variance = blocks.scale(widen_second(grad_variance), s.variance_scale)
    else:
        nu_hat = blocks.bias_correction(_second_moment(point, state), s.debias1)
        variance = blocks.variance_estimate(mu_hat, nu_hat, s.variance_scale)
    if point.direction == "raw" and adaptation == "optimal":
        return blocks.variance_factor(mu_hat, variance)
    return blocks.sign_variance_factor(mu_hat, variance, adaptation)


def _direction_and_rate(
    point: Dissection,
    updates: Tree,
    state: DissectedState,
    s: StepScalars,
    eps: Any,
    grad_variance: Tree | None,
) -> tuple[Tree, Tree | None]:
    """The direction :math:`d_t` and the per-element rate :math:`r_t` (None for 1)."""
    if point.normalization == "rms" and point.bounds is None:
        return _rms_normalized(point, updates, state, s, eps), None
    if point.normalization == "rms":
        return (state.mu if point.momentum else updates), _adabound_rate(point, state, s, eps)
    # the mean estimate of variance adaptation is the debiased EMA, with or without momentum
    mu_hat = None
    if point.uses_first_moment:
        mu_hat = _debiased(state.mu, s.debias1)
    direction = _direction(point, updates, state.mu, mu_hat)
    adaptation = point.variance_adaptation
    if adaptation is None:
        return direction, None
    return direction, _variance_adapted_rate(point, adaptation, state, mu_hat, s, grad_variance)


def _clip_to_bounds(direction: Tree, rate: Tree | None, s: StepScalars) -> tuple[Tree, Tree]:
    """AdaBound's clip of the per-element rate into its bounds (divided by the rate)."""
    if rate is None:
        # a unit rate, clipped: one scalar for the whole direction
        return blocks.scale(direction, jnp.clip(1.0, s.lower, s.upper)), None
    return direction, blocks.clip_rate(rate, s.lower, s.upper)


def _check_leaf_dtypes(point: Dissection, tree: Tree, what: str, mu_dtype: Any = None) -> None:
    """Integer parameters and, for the optimal factor of a sign, complex leaves are
    refused (naming the leaf); complex leaves work everywhere else, but not with a
    real ``mu_dtype`` (the momentum of a complex gradient is complex)."""
    refuse_complex = point.direction == "sign" and point.variance_adaptation == "optimal"
    reason = blocks.COMPLEX_SIGN_ERF
    real_mu = mu_dtype is not None and not is_complex(jnp.dtype(mu_dtype))
    if real_mu and point.uses_first_moment and not refuse_complex:
        refuse_complex = True
        reason = f"a real mu_dtype ({jnp.dtype(mu_dtype)}) cannot hold a complex momentum."
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        dtype = jnp.result_type(x)
        where = " ".join(filter(None, (what, jax.tree_util.keystr(path), f"({dtype})")))
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise ValueError(
                f"{where}: integer parameters cannot take the fractional steps of an "
                "optimizer (optax.apply_updates would round them away); make them floats, "
                "or leave them out with a None leaf or optax.masked."
            )
        if refuse_complex and jnp.issubdtype(dtype, jnp.complexfloating):
            raise ValueError(f"{where}: {reason}")


def _check_against_state(updates: Tree, state: DissectedState) -> None:
    """The gradient tree against the first buffer the state holds (leaf by leaf)."""
    for name in ("mu", "nu", "nu_max"):
        buffer = getattr(state, name)
        if buffer is not None:
            check_matches(updates, buffer, f"state's {name}")
            return


def _packed_inputs(
    updates: Tree, grad_variance: Tree | None, plan: _layout.Plan, count: jax.Array
) -> tuple[Any, Any, Any]:
    """The gradient (and the given variance) in the state's packed layout, and the
    offsets the update is unpacked at (see :func:`optax_signvar.layout.pack_for_update`)."""
    packed, offsets = _layout.pack_for_update(updates, plan, count)
    if grad_variance is not None:
        variance = widen_second(grad_variance)
        grad_variance, _ = _layout.pack_for_update(variance, plan, count, dtypes=False)
    return packed, grad_variance, offsets


def _second_decay(point: Dissection, b1: Any, b2: Any) -> Any:
    """The second moment's decay: ``b2`` (default 0.999) with RMS normalisation,
    otherwise ``b1``, the one decay of Dissecting Adam (``b2`` must then be ``None``)."""
    if point.normalization == "rms":
        return check_decay("b2", 0.999 if b2 is None else b2)
    if b2 is not None:
        raise ValueError(
            "b2 is only used with normalization='rms'; variance adaptation uses b1 for both "
            "moments, as rho(b1, t) assumes (Dissecting Adam, sec. 4.1)."
        )
    return b1


def _checked_bounds(
    point: Dissection, learning_rate: optax.ScalarOrSchedule | None
) -> tuple[Dissection, Any]:
    """The point with its bounds checked, and AdaBound's :math:`f_t / a_t` (a float,
    an array or a schedule; ``None`` without bounds)."""
    if point.bounds is None:
        return point, None
    if learning_rate is None:
        raise ValueError("learning_rate is needed with bounds, to form final_lr / a_t.")
    rate = check_rate("learning_rate", learning_rate)
    bounds = Bounds(
        final_lr=check_rate("final_lr", point.bounds.final_lr),
        # [0, 1) as the reference package checks it; gamma = 0 is the limit with
        # no bounds (lower 0, upper inf): Adam
        gamma=check_range("gamma", point.bounds.gamma, 0.0, 1.0, high_open=True),
    )
    point = dataclasses.replace(point, bounds=bounds)
    return point, _rates.rate_ratio(bounds.final_lr, rate, "final_lr")


@_deprecation.renamed_arguments(beta="b1", beta2="b2")
def scale_by_dissection(
    dissection: Dissection,
    *,
    learning_rate: optax.ScalarOrSchedule | None = None,
    b1: float = 0.9,
    b2: float | None = None,
    eps: float = 1e-8,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    layout: _layout.Layout = "tree",
) -> optax.GradientTransformationExtraArgs:
    r"""The unit-rate transformation of a :class:`~optax_signvar.Dissection`.

    Followed by ``scale_by_learning_rate``, the update is
    :math:`u_t = -a_t\, r_t \odot d_t` with the direction :math:`d_t`
    (:math:`g_t`, :math:`\hat m_t` or their signs), the per-element rate
    :math:`r_t` (1, a variance factor, or AdaBound's :math:`\sqrt{1-\beta_2^t}
    / ((1-\beta_1^t)(\sqrt{v_t}+\epsilon))`), clipped into AdaBound's bounds
    (divided by :math:`a_t`) when there are bounds. Without bounds,
    ``normalization="rms"`` is Adam's :math:`\hat m_t / (\sqrt{\hat v_t} +
    \epsilon)`.

    With variance adaptation, ``update(..., grad_variance=tree)`` supplies the
    variance of the mini-batch gradient; it replaces the moving-average
    estimate (``variance="ema"``) or is required (``variance="minibatch"``).

    Args:
      dissection: the point of the space.
      learning_rate: the rate the chain applies; needed only with bounds, to
        form :math:`f_t / a_t`.
      b1: decay of the first moment (and of the second moment with variance
        adaptation, where one decay serves both), in [0, 1).
      b2: decay of the second moment with ``normalization="rms"`` (default
        0.999); otherwise it must be ``None``: variance adaptation uses ``b1``
        for both moments, as :math:`\rho(\beta, t)` assumes (Dissecting Adam,
        sec. 4.1).
      eps: added to :math:`\sqrt{v}` with ``normalization="rms"``.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second-moment buffers (default: the parameters',
        float32 for 16-bit parameters).
      layout: ``"tree"`` (the state mirrors the parameters) or ``"packed"``
        (the moments of small leaves in flat buffers per dtype and sharding, see
        :mod:`optax_signvar.layout`): bit for bit the same updates, a few
        kernels per step instead of a few per leaf.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar as osv
      >>> tx = osv.scale_by_dissection(osv.Dissection(direction="sign"))
      >>> print(tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0])
      [ 1. -1.]

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_, 2018.
    """
    b1 = check_decay("b1", b1)
    b2 = _second_decay(dissection, b1, b2)
    eps = check_range("eps", eps, 0.0)
    point, ratio = _checked_bounds(dissection, learning_rate)
    check_one_of("layout", layout, _layout.LAYOUTS)
    # a point without buffers has nothing to pack: its per-leaf step fuses into the
    # parameter update the plain SGD step has too
    packs = layout == "packed" and (point.uses_first_moment or point.uses_second_moment)

    def init_fn(params: optax.Params) -> DissectedState:
        _check_leaf_dtypes(point, params, "parameter", mu_dtype)
        like: Any = _layout.pack_with(params, _layout.plan_for(params)) if packs else params
        # nu and nu_max are separate buffers: one array in two places of the
        # state could not be donated to a jitted step.
        return DissectedState(
            count=zero_count(),
            mu=zeros_moment(like, mu_dtype) if point.uses_first_moment else None,
            nu=zeros_moment(like, nu_dtype, second=True) if point.uses_second_moment else None,
            nu_max=zeros_moment(like, nu_dtype, second=True) if point.max_tracking else None,
        )

    def update_fn(
        updates: optax.Updates,
        state: DissectedState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, DissectedState]:
        del params
        updates = as_inexact(updates)
        _check_leaf_dtypes(point, updates, "gradient")
        grad_variance = extra_args.get("grad_variance")
        if point.variance == "minibatch" and grad_variance is None:
            raise ValueError(
                "variance='minibatch' needs update(..., grad_variance=tree), the variance of "
                "the mini-batch gradient."
            )
        plan = _layout.plan_of((state.mu, state.nu, state.nu_max)) if packs else None
        treedef = offsets = None
        if plan is not None:
            treedef = jax.tree.structure(updates, is_leaf=lambda x: x is None)
            updates, grad_variance, offsets = _packed_inputs(
                updates, grad_variance, plan, state.count
            )
        _check_against_state(updates, state)
        # The rate schedule is read at the count before the increment, as
        # scale_by_learning_rate does; everything else uses t after it.
        bound_scale = _rates.value_at(ratio, state.count)
        # safe_increment is typed ArrayLike -> ArrayLike; given an int32 Array it returns one
        count = cast(jax.Array, optax.safe_increment(state.count))
        new_state = _update_moments(point, updates, state, count, b1, b2)
        s = step_scalars(point, count, b1, b2, bound_scale, minibatch=grad_variance is not None)
        direction, rate = _direction_and_rate(point, updates, new_state, s, eps, grad_variance)
        if point.bounds is not None:
            direction, rate = _clip_to_bounds(direction, rate, s)
        out = cast_like(direction if rate is None else blocks.multiply(rate, direction), updates)
        if treedef is not None:
            out = _layout.unpack_as(out, treedef, offsets)
        return out, new_state

    # optax's OptState (ArrayTree) has no None leaves, which DissectedState's unused
    # buffers are, and its update protocol takes any OptState where this one reads a
    # DissectedState.
    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]
    # the hyperparameters, b2 resolved, for diagnostics(state, optimizer)
    return _hyperparams.record(tx, _hyperparams.Hyperparameters(point, b1, b2, eps, learning_rate))
