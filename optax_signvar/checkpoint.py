"""Save and restore optimizer states (or any pytree of arrays) with orbax-checkpoint.

Two small wrappers over ``orbax.checkpoint.StandardCheckpointer``, so that a
training run can stop after any step and resume bit for bit:

- :func:`save_state` writes a pytree (e.g. ``{"params": params, "opt_state": state}``)
  and waits until the checkpoint is complete on disk;
- :func:`restore_state` reads it back into the exact pytree structure of a
  ``template``, which is best built without touching memory, as
  ``jax.eval_shape(opt.init, params)`` for an optimizer state.

orbax-checkpoint is an optional dependency (it ships with the ``test`` and
``examples`` extras, and with Flax); it is imported when a function is called,
so that ``import optax_signvar`` does not need it.

Why a template: orbax stores the *values* of a pytree, not its Python node
types. Restored without a target, a ``DissectedState`` comes back as a plain
dict, a tuple as a list, and optax's ``EmptyState`` / ``MaskedNode`` as
``None``, which ``opt.update`` cannot consume. Restored with an abstract target,
orbax (0.12.8) rebuilds every node type, including the ``None`` buffers of a
``DissectedState`` and ``EmptyState``/``MaskedNode``; :func:`restore_state`
additionally places each restored array into the template by its key path, so
the result has the template's structure whatever containers the installed orbax
returns. It also refuses a checkpoint whose arrays have another dtype or shape
than the template's: orbax would silently cast to the template's dtype (e.g. an
``int64`` count saved under ``jax_enable_x64`` into ``int32``), and a resumed run
would then no longer be bit for bit the run that was interrupted.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

__all__ = ["restore_state", "save_state"]

_INSTALL_HINT = (
    "optax_signvar.checkpoint needs orbax-checkpoint: `pip install orbax-checkpoint` "
    "(or `pip install 'optax-signvar[examples]'`)."
)


def _orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return ocp


def _key(path: Any) -> str:
    """A key path as a dotted string; attribute, dict and sequence keys alike."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator=".")


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
    return jax.ShapeDtypeStruct(np.shape(leaf), jax.numpy.result_type(leaf), sharding=sharding)


def save_state(path: str | os.PathLike, tree: Any, *, overwrite: bool = False) -> None:
    """Writes a pytree of arrays to a new orbax checkpoint directory.

    The call returns once the checkpoint is complete on disk. ``None`` leaves,
    ``optax.EmptyState()`` and ``optax.MaskedNode()`` need no storage; they are
    restored from the template given to :func:`restore_state`.

    Examples:
      >>> import tempfile, jax, jax.numpy as jnp
      >>> import optax_signvar as osv
      >>> from optax_signvar.checkpoint import restore_state, save_state
      >>> opt = osv.amsgrad(learning_rate=0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> state = opt.init(params)
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...   save_state(f"{tmp}/step_1", {"params": params, "opt_state": state})
      ...   template = {"params": params, "opt_state": jax.eval_shape(opt.init, params)}
      ...   restored = restore_state(f"{tmp}/step_1", template)
      >>> jax.tree.structure(restored["opt_state"]) == jax.tree.structure(state)
      True

    Args:
      path: the checkpoint directory to create (made absolute; orbax requires it).
      tree: a pytree of arrays, e.g. ``{"params": params, "opt_state": state}``.
      overwrite: replace ``path`` if it exists; otherwise an existing ``path`` is an error.
    """
    ocp = _orbax()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(os.fspath(path)), tree, force=overwrite)
        checkpointer.wait_until_finished()


def restore_state(path: str | os.PathLike, template: Any) -> Any:
    """Reads an orbax checkpoint back into the structure of ``template``.

    Args:
      path: a directory written by :func:`save_state` (or by
        ``orbax.checkpoint.StandardCheckpointer``).
      template: a pytree with the structure, shapes and dtypes to restore, with
        concrete arrays or ``jax.ShapeDtypeStruct`` leaves; for an optimizer state,
        ``jax.eval_shape(opt.init, params)`` of a freshly built optimizer. Arrays of
        the template that carry a sharding are restored with it.

    Returns:
      A pytree whose structure equals ``jax.tree.structure(template)``
      (``NamedTuple`` states, ``None`` buffers, ``EmptyState`` and ``MaskedNode``
      included), holding the saved arrays.

    Raises:
      ValueError: the checkpoint lacks an array of the template, or holds one with
        another shape or dtype.
      ImportError: orbax-checkpoint is not installed.
    """
    ocp = _orbax()
    path = os.path.abspath(os.fspath(path))
    abstract = jax.tree.map(_abstract, template)
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        metadata = getattr(metadata, "item_metadata", metadata)
        metadata = getattr(metadata, "tree", metadata)
        stored = {_key(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(metadata)}
        for p, want in jax.tree_util.tree_leaves_with_path(abstract):
            have = stored.get(_key(p))
            if have is None:
                raise ValueError(f"checkpoint {path} holds no array at {_key(p)!r}")
            if tuple(have.shape) != tuple(want.shape) or np.dtype(have.dtype) != want.dtype:
                raise ValueError(
                    f"checkpoint {path} holds {_key(p)!r} as {have.dtype}{list(have.shape)}, "
                    f"the template as {want.dtype}{list(want.shape)}"
                )
        restored = checkpointer.restore(path, abstract)
    by_key = {_key(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(restored)}
    return jax.tree_util.tree_map_with_path(lambda p, _: by_key[_key(p)], abstract)
