"""The one gradient transformation behind every optimizer: a point in the
sign x variance-adaptation x normalisation x max-tracking x bounds space.

:class:`Dissection` names the point (static configuration, checked for
combinations that are not well defined); :func:`scale_by_dissection` turns it
into an optax transformation built from :mod:`optax_signvar.blocks`. The named
``scale_by_*`` transformations, the named optimizers and the research factory
:func:`optax_signvar.dissect` are all thin layers over this module, so there is
exactly one place where the moments are updated and combined.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from optax_signvar import _common, blocks

__all__ = ["Bounds", "Dissection", "DissectedState", "scale_by_dissection"]

DIRECTIONS = ("raw", "sign")
ADAPTATIONS = (None, "optimal", "adam")
VARIANCES = ("ema", "minibatch")
NORMALIZATIONS = (None, "rms")


class Bounds(NamedTuple):
    """AdaBound's dynamic bounds on the per-element rate.

    Attributes:
      final_lr: the SGD rate both bounds converge to (float or schedule).
      gamma: the convergence speed, in (0, 1).
    """

    final_lr: optax.ScalarOrSchedule = 0.1
    gamma: float = 1e-3


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


def _one_of(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class Dissection:
    """A point of the optimizer space (see :func:`optax_signvar.dissect`).

    Construction raises ``ValueError`` for combinations that are not well
    defined, with the reason.
    """

    momentum: bool = True
    direction: str = "raw"
    variance_adaptation: str | None = None
    variance: str = "ema"
    normalization: str | None = None
    max_tracking: bool = False
    bounds: Bounds | None = None
    bias_correction: bool = True

    def __post_init__(self) -> None:
        _one_of("direction", self.direction, DIRECTIONS)
        _one_of("variance_adaptation", self.variance_adaptation, ADAPTATIONS)
        _one_of("variance", self.variance, VARIANCES)
        _one_of("normalization", self.normalization, NORMALIZATIONS)
        if self.bounds is not None and not isinstance(self.bounds, Bounds):
            object.__setattr__(self, "bounds", Bounds(**dict(self.bounds)))
        adapted = self.variance_adaptation is not None
        if self.normalization == "rms" and adapted:
            raise ValueError(
                "normalization='rms' (Adam's division by sqrt(v)) already is Adam's implicit "
                "variance adaptation; use it with variance_adaptation=None, or use "
                "variance_adaptation='adam' without normalization for the explicit factor."
            )
        if self.normalization == "rms" and self.direction == "sign":
            raise ValueError(
                "normalization='rms' divides a raw direction by sqrt(v); a sign has no magnitude "
                "to normalise. For variance-adapted sign descent use direction='sign' with "
                "variance_adaptation='optimal' or 'adam'."
            )
        if self.variance == "minibatch" and not adapted:
            raise ValueError(
                "variance='minibatch' supplies the variance to the variance adaptation; "
                "with variance_adaptation=None nothing would use it."
            )
        if self.max_tracking and not self.uses_second_moment:
            raise ValueError(
                "max_tracking keeps the running max of the second moment, and this point keeps "
                "none: it needs normalization='rms', or variance adaptation with variance='ema'."
            )
        if adapted and not self.bias_correction:
            raise ValueError(
                "bias_correction=False is not defined with variance adaptation: the variance "
                "estimate and rho(beta, t) are defined on the debiased moments."
            )

    @property
    def uses_second_moment(self) -> bool:
        return self.normalization == "rms" or (
            self.variance_adaptation is not None and self.variance == "ema"
        )

    @property
    def uses_first_moment(self) -> bool:
        return self.momentum or self.variance_adaptation is not None


def _direction(cfg: Dissection, updates: Any, mu: Any, mu_hat: Any) -> Any:
    """The direction the rate multiplies: g or the momentum, raw or its sign."""
    if cfg.direction == "sign":
        # sign(m) == sign(m / (1 - beta^t)): the sign needs no bias correction
        return blocks.sign(mu if cfg.momentum else updates)
    if not cfg.momentum:
        return updates
    return mu_hat


def _step_scalars(cfg, count, beta, b2, bound_scale, minibatch: bool) -> dict:
    """Every per-step scalar of the update (``1 - beta^t``, ``rho(beta, t)``, the
    bounds), computed once per step, not once per leaf."""
    out = {}
    if cfg.uses_first_moment and cfg.bias_correction:
        out["den1"] = blocks.debias_denominator(beta, count)
    if cfg.normalization == "rms" and cfg.bias_correction:
        out["den2"] = blocks.debias_denominator(b2, count)
    if cfg.normalization == "rms" and cfg.bounds is not None:
        # AdaBound folds the bias corrections into one scalar step.
        if not cfg.bias_correction:
            out["step"] = jnp.ones([])
        elif cfg.momentum:
            out["step"] = blocks.adabound_step(beta, b2, count)
        else:
            out["step"] = jnp.sqrt(out["den2"])
    if cfg.variance_adaptation is not None:
        # the variance of the direction: s_t for g, rho_t * s_t for the momentum
        if minibatch:
            scale = blocks.relative_variance_rho(beta, count) if cfg.momentum else 1.0
        elif cfg.momentum:
            scale = blocks.momentum_variance_scale(beta, count)
        else:
            scale = blocks.variance_scale(beta, count)
        out["var_scale"] = jnp.asarray(scale)
    if cfg.bounds is not None:
        out["lower"], out["upper"] = blocks.dynamic_bounds(bound_scale, cfg.bounds.gamma, count)
    return out


def scale_by_dissection(
    dissection: Dissection,
    *,
    learning_rate: optax.ScalarOrSchedule | None = None,
    beta: float = 0.9,
    beta2: float | None = None,
    eps: float = 1e-8,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""The unit-rate transformation of a :class:`Dissection`.

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
      beta: decay of the first moment (and of the second moment with variance
        adaptation, where one decay serves both), in [0, 1).
      beta2: decay of the second moment with ``normalization="rms"`` (default
        0.999); otherwise it must be ``None``: variance adaptation uses ``beta``
        for both moments, as rho(beta, t) assumes (Dissecting Adam, sec. 4.1).
      eps: added to :math:`\sqrt{v}` with ``normalization="rms"``.
      mu_dtype: dtype of the first moment (default: the parameters').
      nu_dtype: dtype of the second-moment buffers (default: the parameters',
        float32 for 16-bit parameters).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import core
      >>> tx = core.scale_by_dissection(core.Dissection(direction="sign"))
      >>> print(tx.update(jnp.array([0.5, -2.0]), tx.init(jnp.zeros(2)))[0])
      [ 1. -1.]

    References:
      Balles & Hennig, `Dissecting Adam <https://arxiv.org/abs/1705.07774>`_, 2018.
    """
    cfg = dissection
    _common.check_decay("beta", beta)
    if cfg.normalization == "rms":
        b2 = 0.999 if beta2 is None else beta2
    elif beta2 is not None:
        raise ValueError("beta2 is only used with normalization='rms'.")
    else:
        b2 = beta  # the one decay of Dissecting Adam
    _common.check_decay("beta2", b2)
    _common.check_range("eps", eps, 0.0)
    ratio = None
    if cfg.bounds is not None:
        if learning_rate is None:
            raise ValueError("learning_rate is needed with bounds, to form final_lr / a_t.")
        _common.check_rate("learning_rate", learning_rate)
        _common.check_rate("final_lr", cfg.bounds.final_lr)
        _common.check_range("gamma", cfg.bounds.gamma, 0.0, 1.0, low_open=True, high_open=True)
        ratio = _common.rate_ratio(cfg.bounds.final_lr, learning_rate, "final_lr")

    def second_moment(params: optax.Params) -> Any:
        return _common.zeros_moment(params, nu_dtype, widen_half=True)

    def init_fn(params: optax.Params) -> DissectedState:
        # nu and nu_max are separate buffers: one array in two places of the
        # state could not be donated to a jitted step.
        return DissectedState(
            count=_common.zero_count(),
            mu=_common.zeros_moment(params, mu_dtype) if cfg.uses_first_moment else None,
            nu=second_moment(params) if cfg.uses_second_moment else None,
            nu_max=second_moment(params) if cfg.max_tracking else None,
        )

    def update_fn(
        updates: optax.Updates,
        state: DissectedState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, DissectedState]:
        del params
        grad_variance = extra_args.get("grad_variance")
        if cfg.variance == "minibatch" and grad_variance is None:
            raise ValueError(
                "variance='minibatch' needs update(..., grad_variance=tree), the variance of "
                "the mini-batch gradient."
            )
        # The rate schedule is read at the count before the increment, as
        # scale_by_learning_rate does; everything else uses t after it.
        bound_scale = None
        if ratio is not None:
            bound_scale = ratio(state.count) if callable(ratio) else ratio
        # safe_increment is typed ArrayLike -> ArrayLike; given an int32 Array it returns one
        count = cast(jax.Array, optax.safe_increment(state.count))
        mu = nu = nu_max = None
        if cfg.uses_first_moment:
            mu = blocks.ema(updates, state.mu, beta)
        if cfg.uses_second_moment:
            nu = blocks.ema(updates, state.nu, b2, order=2)
        if cfg.max_tracking:
            nu_max = blocks.running_max(state.nu_max, nu)
        new_state = DissectedState(count, mu, nu, nu_max)
        second = nu_max if cfg.max_tracking else nu

        k = _step_scalars(cfg, count, beta, b2, bound_scale, grad_variance is not None)
        mu_hat = blocks.bias_correction(mu, k["den1"]) if "den1" in k else mu

        rate = None
        if cfg.normalization == "rms" and cfg.bounds is None:
            nu_eff = blocks.bias_correction(second, k["den2"]) if "den2" in k else second
            direction = blocks.rms_normalize(mu_hat if cfg.momentum else updates, nu_eff, eps)
        elif cfg.normalization == "rms":
            # AdaBound adds eps to the root of the raw v: not Adam's eps placement.
            rate = blocks.adaptive_rate(second, eps, k["step"])
            direction = mu if cfg.momentum else updates
        else:
            direction = _direction(cfg, updates, mu, mu_hat)
            if cfg.variance_adaptation is not None:
                if grad_variance is not None:
                    variance = blocks.scale(grad_variance, k["var_scale"])
                else:
                    nu_hat = blocks.bias_correction(second, k["den1"])
                    variance = blocks.variance_estimate(mu_hat, nu_hat, k["var_scale"])
                if cfg.direction == "raw" and cfg.variance_adaptation == "optimal":
                    rate = blocks.variance_factor(mu_hat, variance)
                else:
                    form = "erf" if cfg.variance_adaptation == "optimal" else "adam"
                    rate = blocks.sign_variance_factor(mu_hat, variance, form)

        if cfg.bounds is not None:
            if rate is None:
                direction = blocks.scale(direction, jnp.clip(1.0, k["lower"], k["upper"]))
            else:
                rate = blocks.clip_rate(rate, k["lower"], k["upper"])
        out = direction if rate is None else blocks.multiply(rate, direction)
        return _common.cast_like(out, updates), new_state

    # optax's OptState (ArrayTree) has no None leaves, which DissectedState's unused
    # buffers are, and its update protocol takes any OptState where this one reads a
    # DissectedState.
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # pyright: ignore[reportArgumentType]
