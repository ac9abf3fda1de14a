"""Rates: the ratio of a second rate to the learning rate (AdaBound's ``final_lr / a_t``,
AdaBoundW's decay), and the rate and weight-decay links of the chain.

``optax.scale`` and ``optax.add_decayed_weights`` multiply by the scalar as
given; a float32 rate from ``inject_hyperparams`` times bfloat16 updates then
fails under ``jax.numpy_dtype_promotion("strict")``. :func:`scale_by_learning_rate`
and :func:`add_decayed_weights` are drop-in twins with the same state structure
that cast their scalars to each leaf's dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from optax_signvar import blocks
from optax_signvar._checks import concrete_value
from optax_signvar._tree import as_dtype, per_dtype, tree_map, zero_count


def _scale(step_size: Any) -> optax.GradientTransformationExtraArgs:
    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.OptState]:
        del params, extra_args
        return blocks.scale(updates, step_size), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def value_at(rate: optax.ScalarOrSchedule, count: Any) -> Any:
    """A float-or-schedule's value at ``count`` (the int32 step count).

    optax's schedules mix Python floats with the int32 count (``threshold -
    count``, ``pi * count / steps``), which ``jax.numpy_dtype_promotion("strict")``
    rejects; the schedule is the caller's code, not ours, so it is evaluated
    under standard promotion, and its value is cast to each leaf's dtype
    explicitly where it is used. Under standard promotion nothing changes.
    """
    if not callable(rate):
        return rate
    with jax.numpy_dtype_promotion("standard"):
        return rate(count)


def scale_by_learning_rate(
    learning_rate: optax.ScalarOrSchedule,
) -> optax.GradientTransformationExtraArgs:
    """``optax.scale_by_learning_rate`` (negated rate, schedules read at the count
    before the increment), strict-promotion safe."""
    if callable(learning_rate):
        return optax.with_extra_args_support(
            optax.scale_by_schedule(lambda count: -value_at(learning_rate, count))
        )
    return _scale(-learning_rate)


def add_decayed_weights(weight_decay: Any, mask: Any = None) -> optax.GradientTransformation:
    """``optax.add_decayed_weights``: ``u + weight_decay * p``, strict-promotion safe."""

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.OptState]:
        del extra_args
        if params is None:
            raise ValueError("weight decay needs the params: call update(grads, state, params).")
        # the decay cast once per dtype, not once per leaf
        decay = per_dtype(weight_decay)
        out = tree_map(lambda g, p: g + decay(g) * as_dtype(p, g.dtype), updates, params)
        return out, state

    tx = optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)
    return tx if mask is None else optax.masked(tx, mask)


def initial_value(rate: optax.ScalarOrSchedule) -> Any:
    """The value of a float-or-schedule at step 0.

    A schedule is called with an int32 0, the count it sees inside the chain:
    some schedules (``optax.exponential_decay``) return float32 for an int32
    count but float64 for a Python 0 under x64, so ``a_0`` must come from the
    same call as ``a_t`` for ``a_t / a_0`` to be exactly 1 at step 0.
    """
    return value_at(rate, zero_count())


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
        return lambda count: _safe_ratio(value_at(value, count), value_at(learning_rate, count))
    a0 = initial_value(learning_rate)
    v0 = concrete_value(a0)
    if v0 is not None and v0 == 0.0:
        raise ValueError(
            f"learning_rate is 0 at step 0, so a float {name} (scaled by a_t / a_0) is "
            f"undefined; pass {name} as a schedule instead."
        )
    # dividing by the Python float keeps the ratio in the precision of `value`
    return value / v0 if v0 is not None else _safe_ratio(value, a0)
