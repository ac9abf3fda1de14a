"""Hyperparameter validation: concrete values are checked at construction, tracers are not.

Under ``optax.inject_hyperparams`` (or when an optimizer is built inside a jitted
function) numeric hyperparameters arrive as tracers; only concrete Python numbers
and arrays can be checked, and a failed check raises ``ValueError`` naming the
argument.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.core
import jax.numpy as jnp

from optax_signvar._tree import HALF_FLOATS


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
) -> None:
    """Raises ``ValueError`` naming ``name`` if a concrete ``value`` is out of range."""
    v = concrete_value(value)
    if v is None:
        return
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if math.isnan(v) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        hint = ""
        if jnp.dtype(getattr(value, "dtype", float)) in HALF_FLOATS:
            hint = (
                " A 16-bit hyperparameter rounds (bfloat16(0.999) == 1); under "
                "optax.inject_hyperparams pass hyperparam_dtype=jnp.float32."
            )
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}.{hint}")


def check_one_of(name: str, value: Any, choices: tuple) -> None:
    """Raises ``ValueError`` naming ``name`` if ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def check_decay(name: str, value: Any) -> None:
    """A decay lies in [0, 1)."""
    check_range(name, value, 0.0, 1.0, high_open=True)


def check_adam_args(b1: Any, b2: Any, eps: Any) -> None:
    """The decays and ``eps`` of the Adam family, under their names."""
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_range("eps", eps, 0.0)


def check_rate(name: str, value: Any) -> None:
    """A rate is a non-negative number or a schedule (schedules are not evaluated)."""
    check_range(name, value, 0.0)
