"""Hyperparameter validation: concrete values at construction, traced values in the step.

A concrete Python number or array out of its range raises ``ValueError``
naming the argument when the optimizer is built. Under
``optax.inject_hyperparams`` (or when an optimizer is built inside a jitted
function) numeric hyperparameters arrive as tracers, which cannot be checked
in Python: an out-of-range traced value is replaced by NaN (a scalar select,
free), so the step it feeds is NaN rather than a finite wrong step (an
ascent, a wrong sign): the loss goes NaN at once, and ``jax_debug_nans``
points at the step; with :func:`set_traced_checks` on, a
``jax.experimental.checkify`` check also reports the argument by name.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
from jax.experimental import checkify

from optax_signvar._tree import HALF_FLOATS

_STATE = threading.local()


def traced_checks_enabled() -> bool:
    """Whether out-of-range traced hyperparameters emit a ``checkify`` check."""
    return getattr(_STATE, "enabled", False)


class set_traced_checks(contextlib.AbstractContextManager):  # noqa: N801 (a function to its users)
    r"""Turns the runtime checks of traced hyperparameters on or off.

    Off by default: an out-of-range traced hyperparameter (e.g. ``b1=1.0``
    written into the ``hyperparams`` of ``optax.inject_hyperparams``) makes the
    update NaN, whatever this setting. On, every hyperparameter the package
    checks by name at construction is also checked in the traced step with
    :func:`jax.experimental.checkify.check`, which names the argument and its
    value; the step must then run under :func:`jax.experimental.checkify.checkify`
    (JAX refuses to stage a check outside it). The setting is read when an
    optimizer is *built*, which ``inject_hyperparams`` does inside every traced
    ``init`` and ``update``: turn it on before the step is first traced.

    Use it as a call (``osv.set_traced_checks(True)``) or as a context manager
    (``with osv.set_traced_checks(True): ...``, which restores the previous
    setting on exit). The setting is per thread.

    Args:
      enabled: whether to emit the checks.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jax.experimental import checkify
      >>> import optax_signvar as osv
      >>> opt = optax.inject_hyperparams(osv.adam)(learning_rate=0.1)
      >>> state = opt.init(jnp.zeros(2))
      >>> state.hyperparams["b1"] = jnp.asarray(1.0)  # out of [0, 1)
      >>> with osv.set_traced_checks(True):
      ...   step = checkify.checkify(jax.jit(opt.update))
      ...   err, _ = step(jnp.ones(2), state)
      >>> print(err.get())  # doctest: +ELLIPSIS
      b1 must be in [0.0, 1.0), got 1.0 ...
    """

    def __init__(self, enabled: bool = True) -> None:
        self._previous = traced_checks_enabled()
        _STATE.enabled = bool(enabled)

    def __exit__(self, *exc: object) -> None:
        _STATE.enabled = self._previous


def concrete_value(value: Any) -> float | None:
    """``value`` as a Python float when it is concrete, else ``None``.

    Under ``optax.inject_hyperparams`` (or when an optimizer is built inside a
    jitted function) numeric hyperparameters arrive as tracers; those cannot be
    checked at construction and are left alone.
    """
    if isinstance(value, jax.core.Tracer) or callable(value):
        return None
    try:
        arr = jnp.asarray(value) if isinstance(value, jax.Array) else value
        return float(arr)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        return None


def check_range(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """``value``, checked: a concrete one out of range raises ``ValueError`` naming
    ``name``; a traced float one out of range becomes NaN (and fails a
    ``checkify`` check when :func:`set_traced_checks` is on). Schedules pass."""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    v = concrete_value(value)
    if v is None:
        if not isinstance(value, jax.core.Tracer):
            return value
        return _guard_traced(name, value, low, high, low_open, high_open, f"{lo}{low}, {high}{hi}")
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if math.isnan(v) or too_low or too_high:
        hint = ""
        if jnp.dtype(getattr(value, "dtype", float)) in HALF_FLOATS:
            hint = (
                " A 16-bit hyperparameter rounds (bfloat16(0.999) == 1); under "
                "optax.inject_hyperparams pass hyperparam_dtype=jnp.float32."
            )
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}.{hint}")
    return value


def _guard_traced(
    name: str, value: Any, low: float, high: float, low_open: bool, high_open: bool, interval: str
) -> Any:
    """A traced hyperparameter, NaN where it leaves its range (a scalar select)."""
    x = jnp.asarray(value)
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.ndim:
        return value
    above = x > low if low_open else x >= low
    below = x < high if high_open else x <= high
    ok = above & below  # False for NaN
    if traced_checks_enabled():
        checkify.check(ok, f"{name} must be in {interval}, got {{}}", x)
    return jnp.where(ok, x, jnp.asarray(jnp.nan, x.dtype))


def check_one_of(name: str, value: Any, choices: tuple) -> None:
    """Raises ``ValueError`` naming ``name`` if ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def check_decay(name: str, value: Any) -> Any:
    """A decay lies in [0, 1); returns it as :func:`check_range` does."""
    return check_range(name, value, 0.0, 1.0, high_open=True)


def check_adam_args(b1: Any, b2: Any, eps: Any) -> None:
    """The decays and ``eps`` of the Adam family, under their names."""
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_range("eps", eps, 0.0)


def check_rate(name: str, value: Any) -> Any:
    """A rate is a non-negative number or a schedule (schedules are not evaluated)."""
    return check_range(name, value, 0.0)
