"""Save and restore optimizer states (or any pytree of arrays) with orbax-checkpoint.

Two wrappers over orbax-checkpoint, so that a training run can stop after any
step and resume bit for bit, and so that a checkpoint cannot hand back wrong
numbers:

- :func:`save_state` writes a pytree (e.g. ``{"params": params, "opt_state": state}``)
  and returns once the checkpoint is complete and flushed to disk;
- :func:`restore_state` reads it back into the exact pytree structure of a
  ``template``, which is best built without touching memory, as
  ``jax.eval_shape(opt.init, params)`` for an optimizer state.

orbax-checkpoint is an optional dependency (it ships with the ``test`` and
``examples`` extras, and with Flax); it is imported when a function is called,
so that ``import optax_signvar`` does not need it.

**Layout.** A checkpoint is the directory ``orbax.checkpoint.StandardCheckpointer``
writes (``_CHECKPOINT_METADATA``, ``_METADATA``, ``manifest.ocdbt``, ``d/``,
``ocdbt.process_0/`` ...), so orbax reads it as usual, plus one file of ours,
``optax_signvar_manifest.json``: for every array, keyed by its dotted key path
(``"opt_state.0.mu.w"``), its dtype, shape and the sha256 of its (C-order,
host) bytes; the size of every file of the directory and the sha256 of orbax's
metadata files (all but the array data under ``d/``); and its own sha256.
Before orbax reads anything, :func:`restore_state` checks the sizes and the
metadata files (a truncated copy, a damaged ``_METADATA`` are named as such) and
that orbax's metadata lists the arrays the manifest lists; after, the sha256 of
every array it restored (a flipped bit is a ``ValueError`` naming the array).
The manifest is written after the arrays, and ``_CHECKPOINT_METADATA`` records
that a manifest belongs to the checkpoint, so that a checkpoint which lost it is
refused rather than read unverified. A checkpoint written by plain orbax has no
manifest and is restored unverified; a manifest that does not parse is an
error, not a reason to skip verification. Whatever orbax raises on a damaged
checkpoint comes out as a ``ValueError`` naming it (the original chained), and
the reads orbax abandons then are not reported again on stderr.

**Atomic save.** :func:`save_state` writes into a hidden sibling directory
``.<name>.saving-<random>``, fsyncs every file, writes the manifest, and then
moves the directory to ``path`` with one ``rename``. Overwriting swaps the new
directory with the old one in a single ``renameat2(RENAME_EXCHANGE)`` on Linux,
so that ``path`` holds the old or the new checkpoint at every instant; where
the filesystem or OS has no such call, the old directory is renamed aside to
``.<name>.replaced-<random>`` first, and a crash between the two renames leaves
no checkpoint at ``path`` (:func:`restore_state` then says where the previous one
is). A crash at any point thus leaves at ``path`` the previous checkpoint or
nothing, never a partial one. Leftover ``.<name>.saving-*`` directories (and
orbax's ``*.orbax-checkpoint-tmp*`` ones) are refused by :func:`restore_state`
and removed by the next :func:`save_state` of the same ``path``, as is a
``.<name>.replaced-*`` one once a new checkpoint is in place; one process at a
time may save to a given ``path``.

**Why a template.** orbax stores the *values* of a pytree, not its Python node
types. Restored without a target, a ``DissectedState`` comes back as a plain
dict, a tuple as a list, and optax's ``EmptyState`` / ``MaskedNode`` as
``None``, which ``opt.update`` cannot consume. :func:`restore_state` places each
restored array into the template by its key path, so the result has the
template's structure whatever containers the installed orbax returns. It also
refuses a checkpoint whose arrays have another dtype or shape than the
template's: orbax would silently cast to the template's dtype (e.g. an ``int64``
count saved under ``jax_enable_x64`` into ``int32``), and a resumed run would then
no longer be bit for bit the run that was interrupted.

Both functions are for a single JAX process (one host, any number of local
devices): the checksums need every array on the host. Multi-host runs should
use ``orbax.checkpoint.CheckpointManager`` directly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

import jax
import numpy as np

from optax_signvar import _checkpoint_files as files
from optax_signvar import _orbax_quiet as quiet

__all__ = ["restore_state", "save_state"]

MANIFEST = files.MANIFEST
"""Name of the checksum manifest inside a checkpoint directory."""

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


def _abstract(leaf: Any) -> jax.ShapeDtypeStruct:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
    return jax.ShapeDtypeStruct(np.shape(leaf), jax.numpy.result_type(leaf), sharding=sharding)


def _single_process(what: str) -> None:
    if jax.process_count() > 1:
        raise ValueError(
            f"{what} runs in a single JAX process (its checksums need every array on the "
            f"host); with {jax.process_count()} processes use orbax.checkpoint directly"
        )


def save_state(path: str | os.PathLike, tree: Any, *, overwrite: bool = False) -> None:
    """Writes a pytree of arrays to a new checkpoint directory, atomically.

    The call returns once the checkpoint is complete and fsynced. A crash or kill
    at any point leaves at ``path`` the previous checkpoint (or nothing), never a
    partial one; temporary directories of earlier crashed saves of ``path`` are
    removed. ``None`` leaves, ``optax.EmptyState()`` and ``optax.MaskedNode()`` need
    no storage; they are restored from the template given to :func:`restore_state`.

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
      overwrite: replace ``path`` if it holds a checkpoint (or is an empty
        directory); otherwise an existing ``path`` is an error.

    Raises:
      ValueError: ``path`` exists and ``overwrite`` is False, or ``path`` is a file,
        a symbolic link or a directory that is not a checkpoint (never replaced); a
        leaf of ``tree`` is not an array, or two have the same dotted key path; JAX
        runs several processes.
      OSError: the directory of ``path`` cannot be created or written.
      ImportError: orbax-checkpoint is not installed.
    """
    ocp = _orbax()
    _single_process("save_state")
    path = os.path.abspath(os.fspath(path))
    arrays = files.array_entries(tree)
    staging = files.staging_for(path, overwrite)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging, tree, custom_metadata={"optax_signvar": MANIFEST})
            checkpointer.wait_until_finished()
        files.write_manifest(staging, arrays)
        files.publish(staging, path)
        # what an interrupted overwrite set aside is older than the checkpoint now in place
        for leftover in files.leftovers(path, files.REPLACED):
            shutil.rmtree(leftover, ignore_errors=True)
    except BaseException as err:
        for leftover in [staging, *files.leftovers(staging, files.ORBAX_TMP)]:
            shutil.rmtree(leftover, ignore_errors=True)
        quiet.release_frames(err)
        raise


def _check_metadata(path: str, stored: dict[str, Any], manifest: dict[str, Any]) -> None:
    """orbax's metadata must list the arrays the manifest lists: where a damaged
    metadata file drops or alters one, that is damage, not another tree."""
    recorded = manifest["arrays"]
    for key in sorted(set(stored) | set(recorded)):
        have, entry = stored.get(key), recorded.get(key)
        have = None if have is None else f"{np.dtype(have.dtype).name}{list(have.shape)}"
        entry = None if entry is None else f"{entry.get('dtype')}{entry.get('shape')}"
        if have != entry:
            raise ValueError(
                f"checkpoint {path} is damaged: orbax's metadata has {key!r} as "
                f"{have or 'nothing'}, {MANIFEST} as {entry or 'nothing'}"
            )


def _check_arrays(path: str, wanted: dict, stored: dict, partial: bool) -> None:
    """Refuses missing or surplus arrays (unless ``partial``) and other dtypes or shapes."""
    hint = " (restore_state(..., partial=True) restores only the arrays both have)"
    missing = [k for k in wanted if k not in stored]
    if missing and not partial:
        raise ValueError(f"checkpoint {path} holds no array at {missing[0]!r}{hint}")
    surplus = [k for k in stored if k not in wanted]
    if surplus and not partial:
        listed = ", ".join(repr(k) for k in surplus[:5]) + (", ..." if len(surplus) > 5 else "")
        raise ValueError(f"checkpoint {path} holds arrays the template lacks: {listed}{hint}")
    for key, want in wanted.items():
        have = stored.get(key)
        if have is None:
            continue
        if tuple(have.shape) != tuple(want.shape) or np.dtype(have.dtype) != want.dtype:
            raise ValueError(
                f"checkpoint {path} holds {key!r} as {have.dtype}{list(have.shape)}, "
                f"the template as {want.dtype}{list(want.shape)}"
            )


def _sharding(want: jax.ShapeDtypeStruct, have: Any) -> jax.sharding.Sharding:
    """The template's sharding, else the saved one, else the default device."""
    if want.sharding is not None:
        return want.sharding
    with contextlib.suppress(AttributeError, ValueError, TypeError):
        saved = have.sharding.to_jax_sharding()
        if saved is not None:
            return saved
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _read_arrays(
    ocp: Any, path: str, wanted: dict, manifest: dict[str, Any] | None, partial: bool
) -> dict[str, Any]:
    """Reads the wanted arrays the checkpoint holds, skipping the others (orbax
    placeholders), as a dict by dotted key path."""
    with quiet.orbax_errors(path), ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        metadata = getattr(metadata, "item_metadata", metadata)
        metadata = getattr(metadata, "tree", metadata)
        stored = {files.key(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(metadata)}
    if manifest is not None:
        _check_metadata(path, stored, manifest)
    _check_arrays(path, wanted, stored, partial)

    def target(p: Any, have: Any) -> Any:
        want = wanted.get(files.key(p))
        if want is None:
            return ocp.PLACEHOLDER
        return jax.ShapeDtypeStruct(want.shape, want.dtype, sharding=_sharding(want, have))

    item = jax.tree_util.tree_map_with_path(target, metadata)
    restore_args = jax.tree.map(
        lambda x: (
            ocp.RestoreArgs()
            if x is ocp.PLACEHOLDER
            else ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)
        ),
        item,
    )
    with quiet.orbax_errors(path), ocp.PyTreeCheckpointer() as checkpointer:
        args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args)
        restored = checkpointer.restore(path, args=args)
    leaves = jax.tree_util.tree_leaves_with_path(restored)
    return {files.key(p): leaf for p, leaf in leaves if leaf is not ocp.PLACEHOLDER}


def _verify(path: str, manifest: dict[str, Any], arrays: dict[str, Any]) -> None:
    for key, leaf in arrays.items():
        recorded = manifest["arrays"].get(key)
        if recorded is None:
            raise ValueError(f"checkpoint {path} is damaged: {MANIFEST} lists no array {key!r}")
        if files.digest(leaf) != recorded:
            raise ValueError(
                f"checkpoint {path} is corrupted: array {key!r} does not match the {files.HASH} "
                f"checksum recorded in {MANIFEST} when it was saved"
            )


def _fill(path: str, arrays: dict[str, Any], p: Any, leaf: Any) -> Any:
    """The restored array at key path ``p``, else the template's own leaf."""
    if files.key(p) in arrays:
        return arrays[files.key(p)]
    if isinstance(leaf, jax.ShapeDtypeStruct):
        raise ValueError(
            f"checkpoint {path} holds no array at {files.key(p)!r}, and the template's leaf "
            "is abstract: give a concrete value to keep it"
        )
    return leaf


def restore_state(path: str | os.PathLike, template: Any, *, partial: bool = False) -> Any:
    """Reads a checkpoint back into the structure of ``template``, verified.

    Every restored array is checked against the sha256 that :func:`save_state`
    recorded in the checkpoint's manifest. A checkpoint written by plain orbax
    (``StandardCheckpointer``, no manifest) is restored unverified; a manifest that
    does not parse is an error, not a reason to skip the verification (delete the
    manifest to read such a checkpoint at your own risk).

    Examples:
      >>> import tempfile, jax, jax.numpy as jnp
      >>> from optax_signvar.checkpoint import restore_state, save_state
      >>> with tempfile.TemporaryDirectory() as tmp:
      ...   save_state(f"{tmp}/ckpt", {"w": jnp.arange(3.0)})
      ...   # a new head "b" keeps the template's value; the abstract "w" is read
      ...   template = {"w": jax.ShapeDtypeStruct((3,), jnp.float32), "b": jnp.zeros(2)}
      ...   restored = restore_state(f"{tmp}/ckpt", template, partial=True)
      >>> restored["w"].tolist(), restored["b"].tolist()
      ([0.0, 1.0, 2.0], [0.0, 0.0])

    Args:
      path: a directory written by :func:`save_state` (or by
        ``orbax.checkpoint.StandardCheckpointer``).
      template: a pytree with the structure, shapes and dtypes to restore, with
        concrete arrays or ``jax.ShapeDtypeStruct`` leaves; for an optimizer state,
        ``jax.eval_shape(opt.init, params)`` of a freshly built optimizer. Arrays of
        the template that carry a sharding are restored with it.
      partial: restore only the arrays that both the template and the checkpoint
        hold: arrays of the checkpoint the template lacks are not read (restoring a
        sub-tree, e.g. ``{"params": ...}`` of a ``{"params", "opt_state"}``
        checkpoint), and a template leaf the checkpoint lacks is returned as it is
        (it must then be concrete, not a ``jax.ShapeDtypeStruct``). Without it, both
        are errors.

    Returns:
      A pytree whose structure equals ``jax.tree.structure(template)``
      (``NamedTuple`` states, ``None`` buffers, ``EmptyState`` and ``MaskedNode``
      included), holding the saved arrays.

    Raises:
      FileNotFoundError: ``path`` does not exist (the message names what an
        interrupted save left beside it).
      ValueError: ``path`` is a file, an empty directory, a temporary directory of
        an unfinished save, or a half-written or incomplete checkpoint; the
        checkpoint is damaged (a file truncated or missing, an array whose checksum
        does not match, or anything orbax fails to read); it lacks an array of the
        template or holds one the template lacks (without ``partial``), or holds
        one with another shape or dtype.
      ImportError: orbax-checkpoint is not installed.
    """
    ocp = _orbax()
    _single_process("restore_state")
    path = os.path.abspath(os.fspath(path))
    manifest = files.check_directory(path)
    abstract = jax.tree.map(_abstract, template)
    wanted = {files.key(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(abstract)}
    arrays = _read_arrays(ocp, path, wanted, manifest, partial)
    if manifest is not None:
        _verify(path, manifest, arrays)
    return jax.tree_util.tree_map_with_path(lambda p, x: _fill(path, arrays, p, x), template)
