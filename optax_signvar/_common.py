"""Helpers shared by the transformations: hyperparameter checks and dtypes."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import optax

from optax_signvar import blocks

_HALF_FLOATS = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


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
        if jnp.dtype(getattr(value, "dtype", float)) in _HALF_FLOATS:
            hint = (
                " A 16-bit hyperparameter rounds (bfloat16(0.999) == 1); under "
                "optax.inject_hyperparams pass hyperparam_dtype=jnp.float32."
            )
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}.{hint}")


def check_decay(name: str, value: Any) -> None:
    check_range(name, value, 0.0, 1.0, high_open=True)


def check_adam_args(b1: Any, b2: Any, eps: Any) -> None:
    """Adam-family names for the decays the dissection calls ``beta``/``beta2``."""
    check_decay("b1", b1)
    check_decay("b2", b2)
    check_range("eps", eps, 0.0)


def check_rate(name: str, value: Any) -> None:
    """A rate is a non-negative number or a schedule (schedules are not evaluated)."""
    check_range(name, value, 0.0)


def initial_value(rate: optax.ScalarOrSchedule) -> Any:
    """The value of a float-or-schedule at step 0.

    A schedule is called with an int32 0, the count it sees inside the chain:
    some schedules (``optax.exponential_decay``) return float32 for an int32
    count but float64 for a Python 0 under x64, so ``a_0`` must come from the
    same call as ``a_t`` for ``a_t / a_0`` to be exactly 1 at step 0.
    """
    return rate(zero_count()) if callable(rate) else rate


def moment_dtype(param: jax.Array, dtype: Any, *, widen_half: bool) -> jnp.dtype:
    """The accumulator dtype of one leaf.

    ``dtype`` wins when given; otherwise the parameter's dtype, widened to
    float32 for 16-bit floats when ``widen_half`` (second moments: ``g**2``
    overflows float16 at ``|g| > 256`` and bfloat16 cannot resolve
    ``beta2 = 0.999``).
    """
    if dtype is not None:
        return jnp.dtype(dtype)
    if widen_half and jnp.dtype(param.dtype) in _HALF_FLOATS:
        return jnp.dtype(jnp.float32)
    return jnp.dtype(param.dtype)


def zeros_moment(params: Any, dtype: Any = None, *, widen_half: bool = False) -> Any:
    """A zero accumulator shaped like ``params`` (``None`` leaves kept)."""
    return blocks.tree_map(
        lambda p: jnp.zeros_like(p, dtype=moment_dtype(p, dtype, widen_half=widen_half)), params
    )


def cast_like(tree: Any, like: Any) -> Any:
    """Casts every leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return blocks.tree_map(lambda x, y: blocks._as(x, y.dtype), tree, like)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


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
    a0 = initial_value(learning_rate)
    v0 = concrete_value(a0)
    if v0 is not None and v0 == 0.0:
        raise ValueError(
            f"learning_rate is 0 at step 0, so a float {name} (scaled by a_t / a_0) is "
            f"undefined; pass {name} as a schedule instead."
        )
    # dividing by the Python float keeps the ratio in the precision of `value`
    return value / v0 if v0 is not None else _safe_ratio(value, a0)
