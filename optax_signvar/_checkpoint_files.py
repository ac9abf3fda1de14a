"""The files of a checkpoint: the checksum manifest, and the atomic move into place.

A checkpoint is the directory orbax writes plus ``optax_signvar_manifest.json``
(see :mod:`optax_signvar.checkpoint` for what it holds and why). This module
writes and checks the manifest, and publishes a finished save with one rename
(or an atomic exchange when overwriting), so that a crash never leaves a
partial checkpoint at the path.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import uuid
from typing import Any

import jax
import numpy as np

MANIFEST = "optax_signvar_manifest.json"
"""Name of the checksum manifest inside a checkpoint directory."""

FORMAT, VERSION, HASH = "optax_signvar.checkpoint", 1, "sha256"
SAVING, REPLACED, ORBAX_TMP = ".saving-", ".replaced-", ".orbax-checkpoint-tmp"
ORBAX_FILES = ("_METADATA", "_CHECKPOINT_METADATA")


def key(path: Any) -> str:
    """A key path as a dotted string; attribute, dict and sequence keys alike."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator=".")


def digest(leaf: Any) -> dict[str, Any]:
    """dtype, shape and sha256 of an array's bytes, as recorded in the manifest."""
    array = np.asarray(leaf)
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        HASH: hashlib.sha256(data.data).hexdigest(),
    }


def array_entries(tree: Any) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for p, leaf in jax.tree_util.tree_leaves_with_path(tree):
        # checked before orbax starts: it refuses other leaves only after it has
        # launched a thread that creates its temporary directory
        if not (isinstance(leaf, int | float | jax.Array) or hasattr(leaf, "__array__")):
            raise ValueError(f"cannot save {key(p)!r}: a {type(leaf).__name__}, not an array")
        if key(p) in entries:  # e.g. {"a.b": x, "a": {"b": y}}: one manifest entry for two
            raise ValueError(f"two arrays of the tree have the key path {key(p)!r}")
        entries[key(p)] = digest(leaf)
    return entries


def fsync(path: str) -> None:
    if os.path.isdir(path) and os.name != "posix":
        return  # only POSIX can open (and so fsync) a directory
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_hash(full: str) -> str:
    digest = hashlib.sha256()
    with open(full, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_files(root: str) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` (relative, ``/``-separated) with its size, and the
    sha256 of the metadata files: those outside the ``d/`` folders of array data,
    whose damage would otherwise read as another tree (an array "missing")."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            full = os.path.join(folder, name)
            entry: dict[str, Any] = {"size": os.path.getsize(full)}
            if os.path.basename(folder) != "d":
                entry[HASH] = file_hash(full)
            files[os.path.relpath(full, root).replace(os.sep, "/")] = entry
    return files


def own_hash(manifest: dict[str, Any]) -> str:
    """The manifest's checksum of itself, so that its damage is not blamed on a file."""
    content = {k: v for k, v in manifest.items() if k != "manifest_" + HASH}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def write_manifest(staging: str, arrays: dict[str, dict[str, Any]]) -> None:
    """Writes the manifest once what orbax wrote is on disk (fsynced)."""
    files = list_files(staging)
    for folder, _, names in os.walk(staging):
        for name in names:
            fsync(os.path.join(folder, name))
        fsync(folder)
    manifest = {"format": FORMAT, "version": VERSION, "hash": HASH}
    manifest.update(arrays=arrays, files=files)
    manifest["manifest_" + HASH] = own_hash(manifest)
    partial = os.path.join(staging, MANIFEST + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, os.path.join(staging, MANIFEST))
    fsync(staging)


def exchange(a: str, b: str) -> bool:
    """Swaps two directories atomically (Linux ``renameat2``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc older than glibc 2.28, or musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. NFS, some FUSE
        return False
    raise OSError(code, os.strerror(code), a, None, b)


def publish(staging: str, path: str) -> None:
    """Moves the finished ``staging`` directory to ``path``, replacing what is there."""
    parent, name = os.path.split(path)
    if not os.path.lexists(path):
        os.rename(staging, path)
    elif exchange(staging, path):
        shutil.rmtree(staging)  # now the old checkpoint
    else:
        aside = os.path.join(parent, f".{name}{REPLACED}{uuid.uuid4().hex[:12]}")
        os.rename(path, aside)
        os.rename(staging, path)
        shutil.rmtree(aside)
    fsync(parent)


def leftovers(path: str, *kinds: str) -> list[str]:
    """Sibling directories that unfinished saves of ``path`` leave behind."""
    parent, name = os.path.split(path)
    try:
        siblings = os.listdir(parent)
    except OSError:
        return []
    prefixes = [f".{name}{kind}" for kind in kinds if kind != ORBAX_TMP]
    if ORBAX_TMP in kinds:
        prefixes.append(name + ORBAX_TMP)
    return sorted(os.path.join(parent, s) for s in siblings if s.startswith(tuple(prefixes)))


def is_checkpoint_dir(path: str) -> bool:
    names = set(os.listdir(path))
    return not names or bool(names & {MANIFEST, *ORBAX_FILES})


def staging_for(path: str, overwrite: bool) -> str:
    """Checks that ``path`` may be written, and names the directory to write it in."""
    if os.path.lexists(path):
        if not overwrite:
            raise ValueError(f"checkpoint {path} already exists; pass overwrite=True to replace it")
        if os.path.islink(path) or not os.path.isdir(path) or not is_checkpoint_dir(path):
            raise ValueError(f"refusing to replace {path}: it is not a checkpoint directory")
    for leftover in leftovers(path, SAVING):
        shutil.rmtree(leftover, ignore_errors=True)
    parent, name = os.path.split(path)
    staging = os.path.join(parent, f".{name}{SAVING}{uuid.uuid4().hex[:12]}")
    # orbax creates its directory in a background thread; where that fails, its other
    # threads wait 5 minutes for it at interpreter exit: fail here instead
    os.makedirs(parent, exist_ok=True)
    os.mkdir(staging)
    os.rmdir(staging)
    return staging


def missing(path: str) -> FileNotFoundError:
    message = f"no checkpoint at {path}: the path does not exist"
    if replaced := leftovers(path, REPLACED):
        message += (
            f"; an overwrite by save_state was interrupted and left the previous checkpoint "
            f"in {replaced[-1]} (rename it to {os.path.basename(path)} to restore it)"
        )
    if unfinished := leftovers(path, SAVING, ORBAX_TMP):
        message += f"; an unfinished save left {', '.join(unfinished)}, which is no checkpoint"
    return FileNotFoundError(errno.ENOENT, message, path)


def read_json(path: str, name: str, what: str) -> Any:
    try:
        with open(os.path.join(path, name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"checkpoint {path} is damaged: its {what} {name} does not parse ({err})"
        ) from err


def read_manifest(path: str) -> dict[str, Any] | None:
    """The manifest, or None for a checkpoint written by plain orbax."""
    if not os.path.exists(os.path.join(path, MANIFEST)):
        if os.path.exists(os.path.join(path, "_CHECKPOINT_METADATA")):
            step = read_json(path, "_CHECKPOINT_METADATA", "orbax metadata file")
            custom = step.get("custom_metadata") if isinstance(step, dict) else None
            if isinstance(custom, dict) and custom.get("optax_signvar") == MANIFEST:
                raise ValueError(
                    f"checkpoint {path} is incomplete: save_state wrote it with a manifest, "
                    f"but {MANIFEST} is missing (an interrupted copy?)"
                )
        return None
    manifest = read_json(path, MANIFEST, "manifest")
    ok = isinstance(manifest, dict) and manifest.get("format") == FORMAT
    if not ok or not isinstance(manifest.get("arrays"), dict):
        raise ValueError(f"checkpoint {path} is damaged: {MANIFEST} is not a manifest")
    if manifest.get("version") != VERSION or manifest.get("hash") != HASH:
        raise ValueError(
            f"checkpoint {path}: {MANIFEST} has version {manifest.get('version')} / hash "
            f"{manifest.get('hash')}; this optax_signvar reads version {VERSION} / {HASH}"
        )
    if manifest.get("manifest_" + HASH) != own_hash(manifest):
        raise ValueError(f"checkpoint {path} is damaged: {MANIFEST} does not match its checksum")
    check_files(path, manifest)
    return manifest


def check_files(path: str, manifest: dict[str, Any]) -> None:
    """Sizes of all files, and hashes of the metadata files, before orbax reads any."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"checkpoint {path} is damaged: {MANIFEST} lists no files")
    for name, entry in files.items():
        full = os.path.join(path, *name.split("/"))
        if not os.path.isfile(full):
            raise ValueError(f"checkpoint {path} is damaged: its file {name} is missing")
        if os.path.getsize(full) != entry.get("size"):
            raise ValueError(
                f"checkpoint {path} is damaged: its file {name} has "
                f"{os.path.getsize(full)} bytes, {entry.get('size')} when saved (truncated?)"
            )
        if HASH in entry and file_hash(full) != entry[HASH]:
            raise ValueError(
                f"checkpoint {path} is corrupted: its file {name} does not match the "
                f"{HASH} checksum recorded in {MANIFEST}"
            )


def check_directory(path: str) -> dict[str, Any] | None:
    """Says what ``path`` is when it is no checkpoint; else returns its manifest (or None)."""
    if not os.path.lexists(path):
        raise missing(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path} is a file, not a checkpoint directory")
    name = os.path.basename(path)
    if ORBAX_TMP in name or (name.startswith(".") and SAVING in name):
        raise ValueError(f"{path} is the temporary directory of an unfinished save, no checkpoint")
    if not os.listdir(path):
        raise ValueError(f"{path} is an empty directory, not a checkpoint")
    manifest = read_manifest(path)
    if not os.path.exists(os.path.join(path, "_METADATA")):
        raise ValueError(
            f"{path} is not a complete checkpoint: it lacks orbax's _METADATA "
            "(half-written, or not a checkpoint directory)"
        )
    return manifest
