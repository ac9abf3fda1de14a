"""Optimizer states survive an orbax-checkpoint round trip, and a resumed run is bit for bit.

For every optimizer of the conformance table (and ``inject_hyperparams``,
``MultiSteps`` and ``partition`` wrappings of a few): 1000 jitted steps on a
least-squares problem whose minibatch is a function of the step index, against
500 steps, a checkpoint of ``(step, params, opt_state)``, a fresh optimizer
object restoring it into ``jax.eval_shape(opt.init, params)``, and 500 more
steps. Params and every state leaf must be equal bit for bit (CPU).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_signvar as osv
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
    with pytest.raises(ValueError):  # orbax's own refusal to overwrite
        save_state(tmp_path / "c", state)
    save_state(tmp_path / "c", state, overwrite=True)


def test_missing_orbax_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    with pytest.raises(ImportError, match="pip install orbax-checkpoint"):
        save_state(os.fspath(tmp_path / "c"), {"a": jnp.ones(2)})
