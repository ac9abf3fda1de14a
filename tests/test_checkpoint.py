"""Optimizer states survive an orbax-checkpoint round trip, and a resumed run is bit for bit.

For every optimizer of the conformance table (and ``inject_hyperparams``,
``MultiSteps`` and ``partition`` wrappings of a few): 1000 jitted steps on a
least-squares problem whose minibatch is a function of the step index, against
500 steps, a checkpoint of ``(step, params, opt_state)``, a fresh optimizer
object restoring it into ``jax.eval_shape(opt.init, params)``, and 500 more
steps. Params and every state leaf must be equal bit for bit (CPU).

Then checkpoints that cannot lie: a flipped byte, a truncated or missing file,
a damaged manifest, a path that is no checkpoint (missing, a file, empty, left
by an unfinished save) are errors that say which; partial restores; a saving
process killed at each stage of a save leaves the previous checkpoint or a clear
error; a failed restore exits without shutdown noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_signvar as osv
from optax_signvar import _checkpoint_files, checkpoint
from optax_signvar.checkpoint import restore_state, save_state
from tests.registry import NAMES, OPTIMIZERS, make

STEPS, RESUME_AT = 1000, 500
W_TRUE = np.array([[1.0, -2.0], [0.5, 0.0], [-1.5, 3.0], [2.0, 1.0]], np.float32)
B_TRUE = np.array([0.3, -0.7], np.float32)


def init_params():
    return {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}


def data_stream():
    """Minibatch ``t`` is ``(xs[t], ys[t])``: the same in every run and after every restart."""
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((STEPS, 8, 4), np.float32)
    ys = xs @ W_TRUE + B_TRUE + 0.1 * rng.standard_normal((STEPS, 8, 2), np.float32)
    return jnp.asarray(xs), jnp.asarray(ys)


DATA = data_stream()


def loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def make_train(opt):
    """``train(params, state, start, stop)``: one jitted program for any step range."""

    @jax.jit
    def run(params, state, start, stop, xs, ys):
        def body(step, carry):
            params, state = carry
            grads = jax.grad(loss)(params, xs[step], ys[step])
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return jax.lax.fori_loop(start, stop, body, (params, state))

    return lambda params, state, start, stop: run(params, state, start, stop, *DATA)


def injected(name, **override):
    entry = OPTIMIZERS[name]
    return optax.inject_hyperparams(entry.factory)(**{**entry.kwargs, **override})


def halve_rate(state):
    """A rate changed in the state mid-training must be what the checkpoint restores."""
    state.hyperparams["learning_rate"] = state.hyperparams["learning_rate"] / 2
    return state


# name -> (optimizer factory, hook applied to the initial state)
VARIANTS = {name: (lambda name=name: make(name), None) for name in NAMES}
VARIANTS.update(
    {
        f"inject_{name}": (lambda name=name: injected(name), halve_rate)
        for name in ("m_svag", "adabound", "amsgrad")
    }
)
VARIANTS.update(
    {
        # every 3rd step: step 500 is mid-accumulation, so acc_grads matters
        f"multisteps_{name}": (lambda name=name: optax.MultiSteps(make(name), 3), None)
        for name in ("m_svag", "adabound", "amsgrad")
    }
)
VARIANTS.update(
    {
        "inject_schedule_adaboundw": (
            lambda: injected("adaboundw", learning_rate=optax.cosine_decay_schedule(1e-2, STEPS)),
            None,
        ),
        "multisteps_inject_amsbound": (
            lambda: optax.MultiSteps(injected("amsbound"), 3),
            lambda state: state._replace(inner_opt_state=halve_rate(state.inner_opt_state)),
        ),
        # optax.partition keeps MaskedNode()s in the masked-out positions
        "partition_amsgrad_m_vassd": (
            lambda: optax.partition(
                {"a": make("amsgrad"), "v": make("m_vassd")}, {"w": "a", "b": "v"}
            ),
            None,
        ),
    }
)


def initial_state(variant, params):
    factory, hook = VARIANTS[variant]
    opt = factory()
    state = opt.init(params)
    return opt, (hook(state) if hook else state)


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert np.asarray(a).dtype == np.asarray(e).dtype
        np.testing.assert_array_equal(a, e)


def first_half(variant, path):
    """Both runs from the same start: the full one, and one checkpointed at RESUME_AT."""
    params = init_params()
    opt, state = initial_state(variant, params)
    train = make_train(opt)
    full = train(params, state, 0, STEPS)
    half_params, half_state = train(params, state, 0, RESUME_AT)
    saved = {"step": jnp.int32(RESUME_AT), "params": half_params, "opt_state": half_state}
    save_state(path, saved)
    return full, saved


def resume(variant, path):
    """The restart: a new optimizer object, restored into a template that touches no memory."""
    opt = VARIANTS[variant][0]()
    abstract_params = jax.eval_shape(init_params)
    template = {
        "step": jax.ShapeDtypeStruct((), jnp.int32),
        "params": abstract_params,
        "opt_state": jax.eval_shape(opt.init, abstract_params),
    }
    restored = restore_state(path, template)
    final = make_train(opt)(restored["params"], restored["opt_state"], restored["step"], STEPS)
    return restored, final


def _variant_params(names):
    # optax.MultiSteps divides by its int32 count, and inject_hyperparams evaluates a
    # schedule argument with it: both need standard promotion (tests/conftest.py)
    needs_standard = ("multisteps_", "inject_schedule_")
    return [
        pytest.param(n, marks=pytest.mark.standard_promotion) if n.startswith(needs_standard) else n
        for n in names
    ]


@pytest.mark.parametrize("variant", _variant_params(sorted(VARIANTS)))
def test_resume_is_bitwise(variant, tmp_path):
    (full_params, full_state), saved = first_half(variant, tmp_path / "ckpt")
    restored, (params, state) = resume(variant, tmp_path / "ckpt")
    assert_trees_equal(restored, saved)
    assert_trees_equal(params, full_params)
    assert_trees_equal(state, full_state)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(full_params))
    assert not np.array_equal(full_params["w"], saved["params"]["w"]), "the second half moved"


RESUME_IN_NEW_PROCESS = """
import sys
from optax_signvar.checkpoint import save_state
from tests.test_checkpoint import resume
variant, path = sys.argv[1:]
_, final = resume(variant, path)
save_state(path + "_final", final)
"""


@pytest.mark.standard_promotion  # its variant uses optax.MultiSteps
def test_resume_in_a_new_process(tmp_path):
    """The second half in a fresh Python process: nothing but the checkpoint carries over."""
    variant, path = "multisteps_inject_amsbound", os.fspath(tmp_path / "ckpt")
    full, _ = first_half(variant, path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.run(
        [sys.executable, "-c", RESUME_IN_NEW_PROCESS, variant, path],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert_trees_equal(restore_state(path + "_final", jax.eval_shape(lambda: full)), full)


@pytest.mark.parametrize("variant", _variant_params(["m_svag", "multisteps_amsgrad"]))
def test_checkpoint_manager_resume(variant, tmp_path):
    """The same with orbax's own CheckpointManager and StandardSave/StandardRestore."""
    params = init_params()
    opt, state = initial_state(variant, params)
    train = make_train(opt)
    full_params, _ = train(params, state, 0, STEPS)
    options = ocp.CheckpointManagerOptions(max_to_keep=1)
    with ocp.CheckpointManager(tmp_path / "run", options=options) as manager:
        for start in range(0, RESUME_AT, 250):
            params, state = train(params, state, start, start + 250)
            manager.save(start + 250, args=ocp.args.StandardSave((params, state)))
        manager.wait_until_finished()
        assert manager.all_steps() == [RESUME_AT]

    opt = VARIANTS[variant][0]()
    abstract = jax.eval_shape(lambda: (init_params(), opt.init(init_params())))
    with ocp.CheckpointManager(tmp_path / "run") as manager:
        step = manager.latest_step()
        params, state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    assert jax.tree.structure(state) == jax.tree.structure(abstract[1])
    params, _ = make_train(opt)(params, state, step, STEPS)
    assert_trees_equal(params, full_params)


def test_orbax_keeps_state_node_types(tmp_path):
    """Restored with an abstract target, orbax itself rebuilds every state node type:
    ``None`` buffers of ``DissectedState``, ``EmptyState``, ``MaskedNode``, NamedTuples."""
    params = init_params()
    opts = {
        "ssd": osv.ssd(1e-2),  # DissectedState(count, None, None, None)
        "m_svag": osv.m_svag(1e-2),  # nu_max=None
        "masked": optax.masked(osv.amsbound(1e-2), {"w": True, "b": False}),
        "inject_multisteps": optax.MultiSteps(optax.inject_hyperparams(osv.m_vassd)(1e-2), 2),
    }
    states = {name: opt.init(params) for name, opt in opts.items()}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "states", states)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(tmp_path / "states", jax.eval_shape(lambda: states))

    def is_node(x):
        return x is None or isinstance(x, optax.EmptyState | optax.MaskedNode)

    kinds = [type(x).__name__ for x in jax.tree.leaves(restored, is_leaf=is_node)]
    assert {"NoneType", "EmptyState", "MaskedNode"} <= set(kinds)
    assert_trees_equal(restored, states)
    assert type(restored["ssd"][0]) is osv.DissectedState
    assert restored["ssd"][0].mu is None and restored["m_svag"][0].nu_max is None


def test_restore_refuses_other_dtype(tmp_path):
    """orbax would cast to the template's dtype; restore_state refuses instead."""
    opt = osv.adam(1e-1)
    state = opt.init(init_params())
    save_state(tmp_path / "c", state)
    template = jax.eval_shape(opt.init, jax.tree.map(lambda p: p.astype(jnp.bfloat16), state[0].mu))
    with pytest.raises(ValueError, match="bfloat16"):
        restore_state(tmp_path / "c", template)
    with pytest.raises(ValueError, match="no array"):
        restore_state(tmp_path / "c", osv.amsgrad(1e-1).init(init_params()))
    with pytest.raises(ValueError, match="already exists"):
        save_state(tmp_path / "c", state)
    save_state(tmp_path / "c", state, overwrite=True)


def test_missing_orbax_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    with pytest.raises(ImportError, match="pip install orbax-checkpoint"):
        save_state(os.fspath(tmp_path / "c"), {"a": jnp.ones(2)})


# Checkpoints that cannot lie.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("Exception ignored", "Event loop is closed", "sys.meta_path", "never awaited", "absl")


def tree_of(value):
    """A small checkpoint whose arrays all tell which save wrote them; random floats
    in "w", so that compression leaves its bytes as they are."""
    rng = np.random.default_rng(int(value))
    return {
        "w": jnp.asarray(rng.standard_normal((128, 256), np.float32)),
        "b": jnp.full(3, value, jnp.bfloat16),
        "step": jnp.int32(value),
    }


TEMPLATE = jax.eval_shape(lambda: tree_of(0))


def data_file(path):
    """The largest array data file of a checkpoint (the one holding "w")."""
    files = [p for p in path.rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def test_manifest_records_every_array(tmp_path):
    tree = tree_of(1)
    save_state(tmp_path / "c", tree)
    assert sorted(os.listdir(tmp_path)) == ["c"], "no temporary directory is left"
    manifest = json.loads((tmp_path / "c" / checkpoint.MANIFEST).read_text())
    assert (manifest["format"], manifest["version"], manifest["hash"]) == (
        "optax_signvar.checkpoint",
        1,
        "sha256",
    )
    assert set(manifest["arrays"]) == {"w", "b", "step"}
    w = manifest["arrays"]["w"]
    assert (w["dtype"], w["shape"]) == ("float32", [128, 256])
    assert w["sha256"] == hashlib.sha256(np.asarray(tree["w"]).tobytes()).hexdigest()
    assert manifest["arrays"]["b"]["dtype"] == "bfloat16"
    files = [
        p for p in (tmp_path / "c").rglob("*") if p.is_file() and p.name != checkpoint.MANIFEST
    ]
    assert set(manifest["files"]) == {p.relative_to(tmp_path / "c").as_posix() for p in files}
    for p in files:  # sizes of all, sha256 of the metadata files (outside d/)
        entry = manifest["files"][p.relative_to(tmp_path / "c").as_posix()]
        assert entry["size"] == p.stat().st_size
        if p.parent.name != "d":
            assert entry["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_flipped_byte_is_never_restored(tmp_path):
    """One byte flipped anywhere in any file: the exact tree, or a ValueError naming the
    checkpoint; never other numbers. In the array data, the checksum names the array."""
    tree = tree_of(1)
    save_state(tmp_path / "good", tree)
    damaged = tmp_path / "damaged"
    names = [p.relative_to(tmp_path / "good") for p in (tmp_path / "good").rglob("*")]
    names = [n for n in names if (tmp_path / "good" / n).is_file()]
    big = data_file(tmp_path / "good").relative_to(tmp_path / "good")
    cases = [(n, 0.5) for n in names] + [(big, f) for f in (0.1, 0.3, 0.7, 0.9)]
    messages = {}
    for name, fraction in cases:
        shutil.rmtree(damaged, ignore_errors=True)
        shutil.copytree(tmp_path / "good", damaged)
        data = bytearray((damaged / name).read_bytes())
        data[int(len(data) * fraction)] ^= 0x10
        (damaged / name).write_bytes(bytes(data))
        try:
            restored = restore_state(damaged, TEMPLATE)
        except ValueError as err:
            assert str(damaged) in str(err), (name, err)
            messages[name, fraction] = str(err)
        else:
            assert_trees_equal(restored, tree)
    assert "array 'w' does not match the sha256 checksum" in messages[big, 0.5]
    assert "its file _METADATA does not match the sha256" in messages[Path("_METADATA"), 0.5]
    assert "damaged: its manifest" in messages[Path(checkpoint.MANIFEST), 0.5] or (
        "manifest.json does not match its checksum" in messages[Path(checkpoint.MANIFEST), 0.5]
    )
    # only the arrays read are verified: a partial restore without "w" succeeds
    restored = restore_state(damaged, {"b": TEMPLATE["b"]}, partial=True)
    np.testing.assert_array_equal(restored["b"], tree["b"])


def test_a_truncated_or_missing_file_is_named(tmp_path):
    save_state(tmp_path / "c", tree_of(1))
    data = data_file(tmp_path / "c")
    os.truncate(data, data.stat().st_size // 2)
    with pytest.raises(ValueError, match=f"{data.name} has .* bytes, .* when saved .truncated"):
        restore_state(tmp_path / "c", TEMPLATE)
    data.unlink()
    with pytest.raises(ValueError, match=f"damaged: its file .*{data.name} is missing"):
        restore_state(tmp_path / "c", TEMPLATE)


def test_plain_orbax_checkpoint_restores_unverified(tmp_path):
    """No manifest: restored as orbax reads it; what orbax fails to read is a ValueError."""
    tree = tree_of(1)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "c", tree)
        checkpointer.wait_until_finished()
    assert_trees_equal(restore_state(tmp_path / "c", TEMPLATE), tree)
    data = data_file(tmp_path / "c")
    os.truncate(data, data.stat().st_size // 2)
    with pytest.raises(ValueError, match=f"checkpoint {tmp_path / 'c'} could not be read") as err:
        restore_state(tmp_path / "c", TEMPLATE)
    assert "OUT_OF_RANGE" in str(err.value)
    assert err.value.__cause__ is not None, "orbax's error is chained"


def test_damaged_or_missing_manifest(tmp_path):
    save_state(tmp_path / "c", tree_of(1))
    manifest = tmp_path / "c" / checkpoint.MANIFEST
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="damaged: its manifest .* does not parse"):
        restore_state(tmp_path / "c", TEMPLATE)
    digest = json.loads(text)["arrays"]["w"]["sha256"]
    forged = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    manifest.write_text(text.replace(digest, forged))  # the manifest's own damage
    with pytest.raises(ValueError, match="manifest.json does not match its checksum"):
        restore_state(tmp_path / "c", TEMPLATE)
    manifest.write_text("[]")
    with pytest.raises(ValueError, match="is not a manifest"):
        restore_state(tmp_path / "c", TEMPLATE)
    manifest.write_text(text.replace('"version": 1', '"version": 2'))
    with pytest.raises(ValueError, match="version 2"):
        restore_state(tmp_path / "c", TEMPLATE)
    manifest.unlink()  # e.g. a copy of the directory that was interrupted
    with pytest.raises(ValueError, match="incomplete: save_state wrote it with a manifest"):
        restore_state(tmp_path / "c", TEMPLATE)


def test_what_is_no_checkpoint_says_what_it_is(tmp_path):
    good = tmp_path / "good"
    save_state(good, tree_of(1))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        restore_state(tmp_path / "nowhere", TEMPLATE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a checkpoint directory"):
        restore_state(tmp_path / "file", TEMPLATE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is an empty directory"):
        restore_state(tmp_path / "empty", TEMPLATE)
    # what a crash of plain orbax leaves: its temporary directory beside the path
    shutil.copytree(good, tmp_path / "run.orbax-checkpoint-tmp-1234")
    with pytest.raises(
        FileNotFoundError, match="an unfinished save left .*run.orbax-checkpoint-tmp"
    ):
        restore_state(tmp_path / "run", TEMPLATE)
    with pytest.raises(ValueError, match="temporary directory of an unfinished save"):
        restore_state(tmp_path / "run.orbax-checkpoint-tmp-1234", TEMPLATE)
    # half-written: orbax's metadata missing, with our manifest and without
    shutil.copytree(good, tmp_path / "half")
    (tmp_path / "half" / "_METADATA").unlink()
    with pytest.raises(ValueError, match="damaged: its file _METADATA is missing"):
        restore_state(tmp_path / "half", TEMPLATE)
    (tmp_path / "half" / checkpoint.MANIFEST).unlink()
    (tmp_path / "half" / "_CHECKPOINT_METADATA").unlink()
    with pytest.raises(ValueError, match="not a complete checkpoint: it lacks orbax's _METADATA"):
        restore_state(tmp_path / "half", TEMPLATE)
    # overwrite replaces checkpoints only
    with pytest.raises(ValueError, match="refusing to replace .*file: it is not a checkpoint"):
        save_state(tmp_path / "file", tree_of(2), overwrite=True)
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to replace .*empty: it is not a checkpoint"):
        save_state(tmp_path / "empty", tree_of(2), overwrite=True)


def test_partial_restore(tmp_path):
    """A sub-tree of the checkpoint; template leaves the checkpoint lacks keep their value."""
    params = jax.tree.map(lambda p: p + 1, init_params())
    state = jax.tree.map(lambda x: x + 1, osv.adam(1e-1).init(params))
    save_state(tmp_path / "c", {"params": params, "opt_state": state})
    sub = {"params": jax.eval_shape(init_params)}
    with pytest.raises(ValueError, match="template lacks: 'opt_state.0.count'.*partial=True"):
        restore_state(tmp_path / "c", sub)
    assert_trees_equal(restore_state(tmp_path / "c", sub, partial=True), {"params": params})

    # adam's state into amsgrad's, which adds nu_max: the template's own nu_max stays
    amsgrad = osv.amsgrad(1e-1).init(params)
    template = {"params": params, "opt_state": amsgrad}
    with pytest.raises(ValueError, match="no array at 'opt_state.0.nu_max.b'.*partial=True"):
        restore_state(tmp_path / "c", template)
    restored = restore_state(tmp_path / "c", template, partial=True)
    assert type(restored["opt_state"][0]) is type(amsgrad[0])
    assert_trees_equal(restored["opt_state"][0].mu, state[0].mu)
    assert_trees_equal(restored["opt_state"][0].nu, state[0].nu)
    assert restored["opt_state"][0].nu_max["w"] is amsgrad[0].nu_max["w"]
    abstract = {"params": params, "opt_state": jax.eval_shape(lambda: amsgrad)}
    with pytest.raises(ValueError, match="no array at 'opt_state.0.nu_max.b'.*abstract"):
        restore_state(tmp_path / "c", abstract, partial=True)


def test_a_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="cannot save 'text': a str"):
        save_state(tmp_path / "c", {"a": jnp.ones(2), "text": "not an array"})
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):  # before orbax, whose threads would hang
        save_state(tmp_path / "file" / "c", tree_of(1))
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_overwrite_without_renameat2(tmp_path, monkeypatch):
    """Where directories cannot be swapped atomically, the old one is renamed aside."""
    save_state(tmp_path / "c", tree_of(1))
    monkeypatch.setattr(_checkpoint_files, "exchange", lambda a, b: False)
    save_state(tmp_path / "c", tree_of(2), overwrite=True)
    assert os.listdir(tmp_path) == ["c"]
    assert_trees_equal(restore_state(tmp_path / "c", TEMPLATE), tree_of(2))


SAVE_AND_PAUSE = """
import os, sys, time
from optax_signvar import _checkpoint_files as checkpoint_files
from optax_signvar import checkpoint
from tests.test_checkpoint import tree_of

path, stage = sys.argv[1:]
staging = "." + os.path.basename(path) + ".saving-"

def pause():
    print("paused", flush=True)
    time.sleep(120)

def pause_before(name):
    original = getattr(checkpoint_files, name)
    def paused(*args, **kwargs):
        pause()
        return original(*args, **kwargs)
    setattr(checkpoint_files, name, paused)

rename = os.rename
def paused_rename(src, dst):
    if stage == "orbax_commit" and os.path.basename(dst).startswith(staging):
        pause()  # orbax wrote the arrays and moves its tmp directory to ours
    if stage == "between_renames" and dst == path:
        pause()  # the old checkpoint was renamed aside, the new one is not in place
    rename(src, dst)
os.rename = paused_rename

if stage == "between_renames":
    checkpoint_files.exchange = lambda a, b: False  # as on a filesystem without renameat2
if stage == "data_written":
    pause_before("write_manifest")
if stage in ("manifest_written", "first_save"):
    pause_before("publish")
checkpoint.save_state(path, tree_of(2), overwrite=True)
print("finished", flush=True)
"""


def kill_mid_save(path, stage, log):
    """Runs a save in a new process that pauses at ``stage``, and SIGKILLs it there."""
    with open(log, "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", SAVE_AND_PAUSE, os.fspath(path), stage],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # the child pauses for 120 s, or ends
        assert line == "paused\n", f"{line!r}: {open(log).read()[-3000:]}"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "stage", ["orbax_commit", "data_written", "manifest_written", "between_renames", "first_save"]
)
def test_a_killed_save_leaves_the_previous_checkpoint(stage, tmp_path):
    path = tmp_path / "ckpt"
    if stage != "first_save":
        save_state(path, tree_of(1))
    kill_mid_save(path, stage, tmp_path.parent / f"{tmp_path.name}.log")
    leftovers = sorted(set(os.listdir(tmp_path)) - {"ckpt"})
    assert leftovers, "the kill landed mid-save"
    for name in leftovers:
        if ".replaced-" not in name:  # refused, never read as a checkpoint
            with pytest.raises(ValueError, match="temporary directory of an unfinished save"):
                restore_state(tmp_path / name, TEMPLATE)
    if stage == "first_save":
        with pytest.raises(FileNotFoundError, match="an unfinished save left .*ckpt.saving-"):
            restore_state(path, TEMPLATE)
    else:
        if stage == "between_renames":
            with pytest.raises(FileNotFoundError, match="interrupted .* previous checkpoint in"):
                restore_state(path, TEMPLATE)
            (aside,) = [name for name in leftovers if ".replaced-" in name]
            os.rename(tmp_path / aside, path)  # as the error message says
        assert_trees_equal(restore_state(path, TEMPLATE), tree_of(1))
    save_state(path, tree_of(3), overwrite=True)
    assert os.listdir(tmp_path) == ["ckpt"], "the next save removes what the kill left"
    assert_trees_equal(restore_state(path, TEMPLATE), tree_of(3))


SAVE_IN_A_LOOP = """
import sys, time
import jax.numpy as jnp
from optax_signvar.checkpoint import save_state

path = sys.argv[1]
for value in range(1, 1000):
    start = time.perf_counter()
    tree = {f"a{i}": jnp.full(4096, value + i / 1000, jnp.float32) for i in range(300)}
    save_state(path, tree, overwrite=True)
    print(value, time.perf_counter() - start, flush=True)
"""


def test_a_save_killed_at_any_moment(tmp_path):
    """Overwrites in a loop, killed half a save's time after one ended: the checkpoint
    at the path is one of the saves, whole, whichever moment of a save the kill hit."""
    path = tmp_path / "ckpt"
    child = subprocess.Popen(
        [sys.executable, "-c", SAVE_IN_A_LOOP, os.fspath(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()
        value, seconds = child.stdout.readline().split()
        time.sleep(float(seconds) / 2)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    template = {f"a{i}": jax.ShapeDtypeStruct((4096,), jnp.float32) for i in range(300)}
    restored = restore_state(path, template)
    saved = float(restored["a0"][0])
    assert saved == int(saved) >= int(value), "a save that had ended, or a later one"
    for i in range(300):
        np.testing.assert_array_equal(restored[f"a{i}"], np.float32(saved + i / 1000))


FAIL_TO_RESTORE = """
import sys
from optax_signvar.checkpoint import restore_state
from tests.test_checkpoint import TEMPLATE
*caught, last = sys.argv[1:]
for path in caught:
    try:
        restore_state(path, TEMPLATE)
    except ValueError as err:
        print(err)
restore_state(last, TEMPLATE)  # the error ends the program
"""


def test_a_failed_restore_exits_cleanly(tmp_path):
    """Only the intended errors: nothing of orbax's while running or at interpreter exit.

    Without a manifest, orbax itself meets the damage, and gives up with reads of
    other arrays still under way."""
    for name in ("metadata", "truncated"):
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp_path / name, tree_of(1))
            checkpointer.wait_until_finished()
    metadata = tmp_path / "metadata" / "array_metadatas" / "process_0"
    metadata.write_text(metadata.read_text().replace("write_shape", "write_shapE"))
    data = data_file(tmp_path / "truncated")
    os.truncate(data, data.stat().st_size // 2)
    paths = [os.fspath(tmp_path / name) for name in ("metadata", "truncated")]
    child = subprocess.run(
        [sys.executable, "-c", FAIL_TO_RESTORE, *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 1
    assert child.stdout.startswith(f"checkpoint {paths[0]} could not be read"), child.stdout
    last = child.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ValueError: checkpoint {paths[1]} could not be read"), last
    assert not [noise for noise in NOISE if noise in child.stderr], child.stderr[-3000:]
