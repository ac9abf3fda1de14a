"""Rate scaling and weight decay that cast their scalars to each leaf's dtype.

``optax.scale`` and ``optax.add_decayed_weights`` multiply by the scalar as
given; a float32 rate from ``inject_hyperparams`` times bfloat16 updates then
fails under ``jax.numpy_dtype_promotion("strict")``. These are drop-in twins
with the same state structure.
"""

from __future__ import annotations

from typing import Any

import optax

from optax_signvar import blocks


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


def scale_by_learning_rate(
    learning_rate: optax.ScalarOrSchedule,
) -> optax.GradientTransformationExtraArgs:
    """``optax.scale_by_learning_rate`` (negated rate, schedules read at the count
    before the increment), strict-promotion safe."""
    if callable(learning_rate):
        return optax.with_extra_args_support(
            # Schedule returns ArrayLike, whose np.bool_ has no unary minus; a rate is a number.
            optax.scale_by_schedule(lambda count: -learning_rate(count))  # pyright: ignore[reportOperatorIssue]
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
        decay = blocks._per_dtype(weight_decay)
        out = blocks.tree_map(lambda g, p: g + decay(g) * blocks._as(p, g.dtype), updates, params)
        return out, state

    tx = optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)
    return tx if mask is None else optax.masked(tx, mask)
