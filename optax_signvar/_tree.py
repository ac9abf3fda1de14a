"""Tree plumbing shared by the blocks and the transformations: structure-checked
maps, per-dtype casts of per-step scalars, and the dtypes of the state buffers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Tree = Any

HALF_FLOATS = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _is_none(x: Any) -> bool:
    return x is None


def tree_map(fn: Callable[..., Any], tree: Tree, *rest: Tree, name: str = "optax_signvar") -> Tree:
    """Maps ``fn`` over matching leaves of several trees, keeping ``None`` leaves.

    Unlike a bare :func:`jax.tree.map`, a structure mismatch (typically a
    gradient tree that does not match the tree the optimizer state was built
    from) raises a ``ValueError`` that names both structures.

    Args:
      fn: function of one leaf from each tree; not called for ``None`` leaves
        of ``tree``.
      tree: the tree whose structure (``None`` leaves included) is followed.
      *rest: trees of the same structure.
      name: prefix of the error message.

    Returns:
      A tree of the structure of ``tree``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.tree_map(lambda x, y: x + y, {"a": jnp.ones(2), "b": None},
      ...                 {"a": jnp.ones(2), "b": None})
      {'a': Array([2., 2.], dtype=float32), 'b': None}
    """
    treedef = jax.tree.structure(tree, is_leaf=_is_none)
    for other in rest:
        other_def = jax.tree.structure(other, is_leaf=_is_none)
        if other_def != treedef:
            raise ValueError(
                f"{name}: the gradient tree does not match the tree the optimizer "
                f"state was initialised with.\n  gradients: {treedef}\n  state:     {other_def}"
            )
    return jax.tree.map(
        lambda x, *ys: None if x is None else fn(x, *ys), tree, *rest, is_leaf=_is_none
    )


def per_dtype(x: Any) -> Callable[[jax.Array], jax.Array]:
    """``x`` cast to a leaf's dtype, once per dtype rather than once per leaf.

    Each cast is a traced op: on a 200-leaf model, casting every per-step scalar
    for every leaf makes tracing and compiling measurably slower than optax's.
    """
    cache: dict[Any, jax.Array] = {}

    def cast(like: jax.Array) -> jax.Array:
        if like.dtype not in cache:
            cache[like.dtype] = jnp.asarray(x).astype(like.dtype)
        return cache[like.dtype]

    return cast


def as_dtype(x: jax.Array, dtype: Any) -> jax.Array:
    """``x.astype(dtype)``, without tracing a no-op conversion."""
    return x if x.dtype == dtype else x.astype(dtype)


def cast_like(tree: Tree, like: Tree) -> Tree:
    """Casts every leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return tree_map(lambda x, y: as_dtype(x, y.dtype), tree, like)


def moment_dtype(param: jax.Array, dtype: Any, *, widen_half: bool) -> jnp.dtype:
    """The accumulator dtype of one leaf.

    ``dtype`` wins when given; otherwise the parameter's dtype, widened to
    float32 for 16-bit floats when ``widen_half`` (second moments: ``g**2``
    overflows float16 at ``|g| > 256`` and bfloat16 cannot resolve
    ``b2 = 0.999``).
    """
    if dtype is not None:
        return jnp.dtype(dtype)
    if widen_half and jnp.dtype(param.dtype) in HALF_FLOATS:
        return jnp.dtype(jnp.float32)
    return jnp.dtype(param.dtype)


def zeros_moment(params: Tree, dtype: Any = None, *, widen_half: bool = False) -> Tree:
    """A zero accumulator shaped like ``params`` (``None`` leaves kept)."""
    return tree_map(
        lambda p: jnp.zeros_like(p, dtype=moment_dtype(p, dtype, widen_half=widen_half)), params
    )


def zero_count() -> jax.Array:
    """The int32 step count of a fresh state."""
    return jnp.zeros([], jnp.int32)
