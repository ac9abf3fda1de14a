"""A point of the optimizer space: the choices Adam is made of, taken apart.

Balles & Hennig (2018) read Adam as the sign of the momentum times a
per-element variance adaptation; AMSGrad adds max-tracking of the second
moment, AdaBound dynamic bounds on the per-element rate. :class:`Dissection`
names one combination of these choices (the axes below, each with its
paper); :func:`optax_signvar.scale_by_dissection` turns it into a gradient
transformation and :func:`optax_signvar.dissect` into an optimizer.

* ``momentum``: the direction is built from the debiased momentum
  :math:`\\hat m_t` or from the gradient :math:`g_t` (Dissecting Adam, Alg. 2);
* ``direction``: ``"raw"`` or ``"sign"`` (Dissecting Adam, sec. 3);
* ``variance_adaptation``: ``None``, ``"optimal"`` or ``"adam"`` (sec. 3-4);
* ``variance``: ``"ema"`` or ``"minibatch"``, where the variance comes from (sec. 4.1);
* ``normalization``: ``None`` or ``"rms"``, Adam's division by :math:`\\sqrt{v_t}` (Adam);
* ``max_tracking``: the running max of the second moment (AMSGrad);
* ``bounds``: dynamic bounds on the per-element rate (AdaBound);
* ``bias_correction``: debias the moments (Adam; off in AMSGrad's Algorithm 2).
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, get_args

import optax

from optax_signvar._checks import check_one_of

__all__ = [
    "Bounds",
    "Direction",
    "Dissection",
    "Normalization",
    "Variance",
    "VarianceAdaptation",
]

Direction = Literal["raw", "sign"]
VarianceAdaptation = Literal["optimal", "adam"]
Variance = Literal["ema", "minibatch"]
Normalization = Literal["rms"]


class Bounds(NamedTuple):
    """AdaBound's dynamic bounds on the per-element rate.

    Attributes:
      final_lr: the SGD rate both bounds converge to (float or schedule).
      gamma: the convergence speed, in [0, 1) (0: no bounds, Adam).
    """

    final_lr: optax.ScalarOrSchedule = 0.1
    gamma: float = 1e-3


@dataclasses.dataclass(frozen=True)
class Dissection:
    """A point of the optimizer space (see :func:`optax_signvar.dissect` for the axes).

    Construction raises ``ValueError`` for combinations that are not well
    defined, with the reason; ``bounds`` may be given as a mapping of
    :class:`Bounds`' fields.

    Attributes:
      momentum: build the direction from the debiased momentum (True) or from
        the gradient (False).
      direction: ``"raw"`` or ``"sign"``.
      variance_adaptation: ``None``, ``"optimal"`` (the optimal factor for the
        direction) or ``"adam"`` (Adam's implicit one).
      variance: where the variance comes from: ``"ema"`` (the two moments) or
        ``"minibatch"`` (``update(..., grad_variance=tree)``).
      normalization: ``None`` or ``"rms"`` (Adam's division by
        :math:`\\sqrt{v}`).
      max_tracking: use the running max of the raw second moment (AMSGrad).
      bounds: ``None`` or AdaBound's :class:`Bounds`.
      bias_correction: debias the moments.

    Example:
      >>> import optax_signvar as osv
      >>> osv.Dissection(direction="sign", variance_adaptation="optimal").uses_second_moment
      True
      >>> osv.Dissection(direction="sign", normalization="rms")  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: normalization='rms' divides a raw direction by sqrt(v); ...
    """

    momentum: bool = True
    direction: Direction = "raw"
    variance_adaptation: VarianceAdaptation | None = None
    variance: Variance = "ema"
    normalization: Normalization | None = None
    max_tracking: bool = False
    bounds: Bounds | None = None
    bias_correction: bool = True

    def __post_init__(self) -> None:
        check_one_of("direction", self.direction, get_args(Direction))
        check_one_of(
            "variance_adaptation", self.variance_adaptation, (None, *get_args(VarianceAdaptation))
        )
        check_one_of("variance", self.variance, get_args(Variance))
        check_one_of("normalization", self.normalization, (None, *get_args(Normalization)))
        if self.bounds is not None and not isinstance(self.bounds, Bounds):
            object.__setattr__(self, "bounds", Bounds(**dict(self.bounds)))
        reason = self._undefined_reason()
        if reason is not None:
            raise ValueError(reason)

    def _undefined_reason(self) -> str | None:
        """Why this combination is not well defined, or ``None``."""
        adapted = self.variance_adaptation is not None
        if self.normalization == "rms" and adapted:
            return (
                "normalization='rms' (Adam's division by sqrt(v)) already is Adam's implicit "
                "variance adaptation; use it with variance_adaptation=None, or use "
                "variance_adaptation='adam' without normalization for the explicit factor."
            )
        if self.normalization == "rms" and self.direction == "sign":
            return (
                "normalization='rms' divides a raw direction by sqrt(v); a sign has no magnitude "
                "to normalise. For variance-adapted sign descent use direction='sign' with "
                "variance_adaptation='optimal' or 'adam'."
            )
        if self.variance == "minibatch" and not adapted:
            return (
                "variance='minibatch' supplies the variance to the variance adaptation; "
                "with variance_adaptation=None nothing would use it."
            )
        if self.max_tracking and not self.uses_second_moment:
            return (
                "max_tracking keeps the running max of the second moment, and this point keeps "
                "none: it needs normalization='rms', or variance adaptation with variance='ema'."
            )
        if adapted and not self.bias_correction:
            return (
                "bias_correction=False is not defined with variance adaptation: the variance "
                "estimate and rho(b1, t) are defined on the debiased moments."
            )
        return None

    @property
    def uses_first_moment(self) -> bool:
        """Whether the state keeps the EMA of the gradient (``mu``)."""
        return self.momentum or self.variance_adaptation is not None

    @property
    def uses_second_moment(self) -> bool:
        """Whether the state keeps the EMA of the squared gradient (``nu``)."""
        return self.normalization == "rms" or (
            self.variance_adaptation is not None and self.variance == "ema"
        )
