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


def moment_dtype(param: jax.Array, dtype: Any, *, second: bool) -> jnp.dtype:
    """The accumulator dtype of one leaf.

    ``dtype`` wins when given; otherwise the parameter's dtype, and for a
    ``second`` moment (of ``|g|**2``) its real part's, widened to float32 for
    16-bit floats: ``g**2`` overflows float16 at ``|g| > 256`` and bfloat16
    cannot resolve ``b2 = 0.999``; ``|g|**2`` of a complex gradient is real,
    so a complex64 parameter's second moment is float32, half the memory.
    """
    if dtype is not None:
        return jnp.dtype(dtype)
    if not second:
        return jnp.dtype(param.dtype)
    real = real_dtype(param.dtype)
    return jnp.dtype(jnp.float32) if real in HALF_FLOATS else real


def zeros_moment(params: Tree, dtype: Any = None, *, second: bool = False) -> Tree:
    """A zero accumulator shaped like ``params`` (``None`` leaves kept)."""
    return tree_map(
        lambda p: jnp.zeros_like(p, dtype=moment_dtype(p, dtype, second=second)), params
    )


def widen_second(tree: Tree) -> Tree:
    """A second-moment-like tree (a variance) in the dtype :func:`moment_dtype` gives it."""
    return tree_map(lambda x: as_dtype(x, moment_dtype(x, None, second=True)), tree)


def is_complex(x: Any) -> bool:
    """Whether an array (or a dtype) is complex."""
    return jnp.issubdtype(getattr(x, "dtype", x), jnp.complexfloating)


def real_dtype(dtype: Any) -> jnp.dtype:
    """The dtype of the real part: float32 for complex64, the dtype itself for a real one."""
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2``, real for a complex ``x`` (``x * conj(x)`` would stay complex)."""
    if is_complex(x):
        return jnp.square(jnp.real(x)) + jnp.square(jnp.imag(x))
    return x * x


def as_inexact(tree: Tree) -> Tree:
    """Integer and boolean leaves as the default float dtype, the others as they are.

    Integer gradients would otherwise turn every fractional update into an
    integer (all zeros); optax computes them in floating point too. The
    default float is float32, or float64 under ``jax_enable_x64``.
    """
    default = jax.dtypes.canonicalize_dtype(jnp.float64)

    def leaf(x: Any) -> Any:
        if x is None or jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            return x
        return jnp.asarray(x).astype(default)

    return jax.tree.map(leaf, tree, is_leaf=_is_none)


def _describe(x: Any) -> str:
    if x is None:
        return "None"
    return f"{jnp.result_type(x)}{list(jnp.shape(x))}"


def check_matches(updates: Tree, buffer: Tree, what: str, name: str = "optax_signvar") -> None:
    """Raises ``ValueError`` naming the leaf where ``updates`` and a state buffer differ.

    A gradient leaf must be ``None`` exactly where the buffer's is, and have
    its shape: a broadcasting shape would silently reshape the state, and a
    ``None`` gradient would turn the buffer into ``None`` and fail a step
    later, far from the cause. Runs at trace time; costs nothing in the step.
    """
    mine = jax.tree_util.tree_flatten_with_path(updates, is_leaf=_is_none)
    theirs = jax.tree_util.tree_flatten_with_path(buffer, is_leaf=_is_none)
    if mine[1] != theirs[1]:
        _raise_structure(mine[0], theirs[0], mine[1], theirs[1], what, name)
    for (path, g), (_, b) in zip(mine[0], theirs[0], strict=True):
        if (g is None) != (b is None) or (g is not None and jnp.shape(g) != jnp.shape(b)):
            raise ValueError(
                f"{name}: the gradient at {jax.tree_util.keystr(path)} is {_describe(g)}, "
                f"the {what} holds {_describe(b)} there (the state was initialised from "
                "params of another structure or shape; a None gradient needs a None, or "
                "optax.masked, parameter)."
            )


def _raise_structure(mine, theirs, mine_def, theirs_def, what: str, name: str) -> None:
    ours = {jax.tree_util.keystr(p) for p, _ in mine}
    held = {jax.tree_util.keystr(p) for p, _ in theirs}
    extra, missing = sorted(ours - held)[:5], sorted(held - ours)[:5]
    detail = ""
    if extra or missing:
        detail = f"\n  only in the gradients: {extra}\n  only in the {what}: {missing}"
    raise ValueError(
        f"{name}: the gradient tree does not match the tree the optimizer state was "
        f"initialised with.{detail}\n  gradients: {mine_def}\n  {what}: {theirs_def}"
    )


def zero_count() -> jax.Array:
    """The int32 step count of a fresh state."""
    return jnp.zeros([], jnp.int32)
