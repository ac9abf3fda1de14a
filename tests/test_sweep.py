"""Tests of :func:`optax_signvar.research.sweeps.sweep`: many runs as one program.

Every run of a sweep must equal the same run trained alone with the plain
optimizer (concrete hyperparameters, no vmap), an interrupted sweep resumed in
another process must give the numbers of an uninterrupted one, and the guards
(configuration mismatch, memory) must refuse with clear messages.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_signvar as osv
from optax_signvar.research.sweeps import SweepResult, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEPS, BATCH, EVERY = 30, 16, 10
NUM_TRAIN, NUM_TEST, DIM, HIDDEN = 100, 40, 5, 8  # 6 batches an epoch: 5 epochs


def make_data():
    kx, kt, kw = jax.random.split(jax.random.key(7), 3)
    w = jax.random.normal(kw, (DIM, 3))
    x_train = jax.random.normal(kx, (NUM_TRAIN, DIM))
    x_test = jax.random.normal(kt, (NUM_TEST, DIM))
    return x_train, jnp.argmax(x_train @ w, -1), x_test, jnp.argmax(x_test @ w, -1)


def init_fn(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (DIM, HIDDEN)) * 0.5,
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k2, (HIDDEN, 3)) * 0.5,
    }


def logits(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def loss_fn(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()


def eval_fn(p, x, y):
    acc = jnp.mean((jnp.argmax(logits(p, x), -1) == y).astype(jnp.float32))
    return {"loss": loss_fn(p, x, y), "accuracy": acc}


def alone(make_opt, seed, data, hyperparams=None):
    """One run with the documented init and data order, no vmap, no inject_hyperparams.

    ``hyperparams=None``: ``make_opt()`` with concrete hyperparameters, compiled
    for this run; else a function compiled once, ``make_opt(**hyperparams)`` with
    the hyperparameters traced (the plain optimizer still, not injected).
    """
    x_train, y_train, x_test, y_test = data
    per_epoch = NUM_TRAIN // BATCH
    if hyperparams is None:
        return _train(make_opt, seed, x_train, y_train, x_test, y_test, per_epoch)
    return _traced(make_opt, per_epoch)(seed, hyperparams, *data)


_TRACED = {}


def _traced(make_opt, per_epoch):
    if make_opt not in _TRACED:
        _TRACED[make_opt] = jax.jit(
            lambda seed, hp, xt, yt, xe, ye: _train(
                lambda: make_opt(**hp), seed, xt, yt, xe, ye, per_epoch
            )
        )
    return _TRACED[make_opt]


def _train(make_opt, seed, x_train, y_train, x_test, y_test, per_epoch):
    opt = make_opt()

    @jax.jit
    def train():
        init_key, data_key = jax.random.split(jax.random.key(seed))
        params = init_fn(init_key)

        def step(carry, t):
            params, state = carry
            perm = jax.random.permutation(jax.random.fold_in(data_key, t // per_epoch), NUM_TRAIN)
            idx = jax.lax.dynamic_slice_in_dim(perm, (t % per_epoch) * BATCH, BATCH)
            loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx], y_train[idx])
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        def chunk(carry, start):
            carry, losses = jax.lax.scan(step, carry, start + jnp.arange(EVERY))
            return carry, (losses.mean(), eval_fn(carry[0], x_test, y_test))

        starts = jnp.arange(0, STEPS, EVERY)
        (params, _), (train, test) = jax.lax.scan(chunk, (params, opt.init(params)), starts)
        return params, train, test

    return train()


def run_sweep(factory, grid, data, **kw):
    kw.setdefault("progress", False)
    return sweep(
        factory,
        init_fn,
        loss_fn,
        data,
        grid=grid,
        seeds=kw.pop("seeds", [0, 1]),
        steps=STEPS,
        batch_size=BATCH,
        eval_every=EVERY,
        eval_fn=eval_fn,
        **kw,
    )


CASES = {
    "adam": (osv.adam, {"learning_rate": [0.01, 0.1], "b1": [0.8, 0.9]}, {}),
    "m_svag": (osv.m_svag, {"learning_rate": [0.01, 0.1], "beta": [0.8, 0.95]}, {}),
    "adabound": (
        osv.adabound,
        {"final_lr": [0.01, 0.1]},
        {"learning_rate": 1e-2, "gamma": 0.1},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_run_equals_the_run_alone(name):
    factory, grid, static = CASES[name]
    data = make_data()
    result = run_sweep(factory, grid, data, static=static)
    n = len(result.seeds)
    assert n == np.prod([len(v) for v in grid.values()]) * 2
    assert result.complete and result.steps.tolist() == [10, 20, 30]
    assert sorted(result.test) == ["accuracy", "loss"]
    make = functools.partial(factory, **static)
    # every run against the plain optimizer with traced hyperparameters (one
    # compilation), the last also with concrete ones
    checks = [(n - 1, None)] + [(i, result.hyperparams[i]) for i in range(n)]
    for i, traced in checks:
        hp = result.hyperparams[i]
        if traced is None:
            params, train, test = alone(lambda hp=hp: make(**hp), result.seeds[i], data)
        else:
            hp_arrays = {k: jnp.float32(v) for k, v in hp.items()}
            params, train, test = alone(make, jnp.uint32(result.seeds[i]), data, hp_arrays)
        run_params = jax.tree.map(lambda a, i=i: a[i], result.params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), run_params, params
        )
        np.testing.assert_allclose(result.train_loss[i], train, rtol=1e-5)
        np.testing.assert_allclose(result.test["loss"][i], test["loss"], rtol=1e-5)
        np.testing.assert_array_equal(result.test["accuracy"][i], test["accuracy"])
    # the grid and seeds really differ between runs
    assert len({float(result.test["loss"][i, -1]) for i in range(n)}) == n


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, jax
    sys.path.insert(0, {root!r})
    from tests import test_sweep as t
    import optax_signvar as osv
    assert len(jax.local_devices()) == 2, jax.local_devices()
    r = t.run_sweep(osv.adam, t.GRID, t.make_data(), checkpoint_dir={ckpt!r}, shard=True)
    r.to_json({out!r})
    np.savez({npz!r}, **{{k: np.asarray(v) for k, v in r.params.items()}})
    print("RESUMED", r.steps.tolist())
    """
)
GRID = {"learning_rate": [0.01, 0.1], "b1": [0.8, 0.9]}


def test_interrupted_sweep_resumes_sharded_in_another_process_bit_for_bit(tmp_path):
    data = make_data()
    full = run_sweep(osv.adam, GRID, data, shard=True)  # one device here: a 1-device mesh
    assert full.names == ["learning_rate", "b1"] and full.seeds == [0, 1] * 4
    assert [tuple(h.values()) for h in full.hyperparams[::2]] == [
        (0.01, 0.8),
        (0.01, 0.9),
        (0.1, 0.8),
        (0.1, 0.9),
    ]
    ckpt = str(tmp_path / "ckpt")
    half = run_sweep(osv.adam, GRID, data, checkpoint_dir=ckpt, until=20)
    assert not half.complete and half.steps.tolist() == [10, 20]
    np.testing.assert_array_equal(half.test["loss"], full.test["loss"][:, :2])
    assert os.path.exists(os.path.join(ckpt, "sweep_config.json"))

    out, npz = str(tmp_path / "resumed.json"), str(tmp_path / "params.npz")
    script = RESUME_SCRIPT.format(root=ROOT, ckpt=ckpt, out=out, npz=npz)
    # the resumed half runs sharded over two (simulated) CPU devices, 4 runs each
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESUMED [10, 20, 30]" in proc.stdout
    resumed = SweepResult.from_json(out)
    assert resumed.complete
    np.testing.assert_array_equal(resumed.train_loss, full.train_loss)
    for k in full.test:
        np.testing.assert_array_equal(resumed.test[k], full.test[k])
    with np.load(npz) as params:
        for k, v in full.params.items():
            np.testing.assert_array_equal(params[k], np.asarray(v))

    # once complete, a further call restores and trains nothing
    again = run_sweep(osv.adam, GRID, data, checkpoint_dir=ckpt)
    np.testing.assert_array_equal(again.test["loss"], full.test["loss"])
    assert again.seconds["train"] < 5


def test_resume_with_another_configuration_raises(tmp_path):
    data = make_data()
    ckpt = str(tmp_path / "ckpt")
    run_sweep(osv.adam, GRID, data, checkpoint_dir=ckpt, until=10)
    with pytest.raises(ValueError, match=r"another configuration \(differing: grid\)"):
        run_sweep(osv.adam, {**GRID, "b1": [0.8, 0.99]}, data, checkpoint_dir=ckpt)
    with pytest.raises(ValueError, match=r"differing: seeds"):
        run_sweep(osv.adam, GRID, data, checkpoint_dir=ckpt, seeds=[0, 2])
    with pytest.raises(ValueError, match=r"differing: factory"):
        run_sweep(osv.m_sgd, {"learning_rate": [0.01, 0.1]}, data, checkpoint_dir=ckpt)
    with pytest.raises(ValueError, match=r"differing: train_eval_size\)"):
        run_sweep(osv.adam, GRID, data, checkpoint_dir=ckpt, train_eval_size=NUM_TEST)


def test_train_eval_is_eval_fn_on_the_first_training_examples():
    data = make_data()
    x_train, y_train, x_test, y_test = data
    result = run_sweep(osv.adam, {"learning_rate": [0.01, 0.1]}, data, train_eval_size=NUM_TEST)
    assert sorted(result.train_eval) == ["accuracy", "loss"]
    assert result.train_eval["loss"].shape == (4, 3)
    for i in range(len(result.seeds)):
        params = jax.tree.map(lambda a, i=i: a[i], result.params)
        want = eval_fn(params, x_train[:NUM_TEST], y_train[:NUM_TEST])
        np.testing.assert_allclose(result.train_eval["loss"][i, -1], want["loss"], rtol=1e-5)
        np.testing.assert_allclose(result.train_eval["accuracy"][i, -1], want["accuracy"])
        # not the test set's evaluation under another name
        test_loss = eval_fn(params, x_test, y_test)["loss"]
        np.testing.assert_allclose(result.test["loss"][i, -1], test_loss, rtol=1e-5)
        assert abs(float(want["loss"]) - float(test_loss)) > 1e-4
    # the default evaluation (eval_fn=None) is loss_fn on the same examples
    default = sweep(
        osv.adam,
        init_fn,
        loss_fn,
        data,
        grid={"learning_rate": [0.1]},
        seeds=[1],
        steps=STEPS,
        batch_size=BATCH,
        eval_every=EVERY,
        train_eval_size=7,
        progress=False,
    )
    params = jax.tree.map(lambda a: a[0], default.params)
    assert list(default.train_eval) == ["loss"]
    want = loss_fn(params, x_train[:7], y_train[:7])
    np.testing.assert_allclose(default.train_eval["loss"][0, -1], want, rtol=1e-5)


def test_resume_with_train_eval_gives_the_same_curves(tmp_path):
    data, grid = make_data(), {"learning_rate": [0.01, 0.1]}
    full = run_sweep(osv.adam, grid, data, train_eval_size=NUM_TEST)
    ckpt = str(tmp_path / "ckpt")
    half = run_sweep(osv.adam, grid, data, checkpoint_dir=ckpt, until=20, train_eval_size=NUM_TEST)
    np.testing.assert_array_equal(half.train_eval["loss"], full.train_eval["loss"][:, :2])
    resumed = run_sweep(osv.adam, grid, data, checkpoint_dir=ckpt, train_eval_size=NUM_TEST)
    assert resumed.complete
    np.testing.assert_array_equal(resumed.train_loss, full.train_loss)
    for k in full.test:
        np.testing.assert_array_equal(resumed.test[k], full.test[k])
        np.testing.assert_array_equal(resumed.train_eval[k], full.train_eval[k])
    # a checkpoint with train_eval serves no sweep of another train_eval_size
    for size in (0, 10):
        with pytest.raises(ValueError, match=r"differing: train_eval_size\)"):
            run_sweep(osv.adam, grid, data, checkpoint_dir=ckpt, train_eval_size=size)


def test_memory_guard_says_how_many_runs_fit():
    data = make_data()
    with pytest.raises(
        ValueError, match=r"the sweep of 8 runs needs .* about 0 runs would fit"
    ) as info:
        run_sweep(osv.adam, GRID, data, memory_limit_bytes=1_000)
    match = re.search(r"(\d+) bytes per run plus (\d+) bytes of data", str(info.value))
    assert match is not None
    per_run, shared = map(int, match.groups())
    assert per_run > 0 and shared >= sum(a.nbytes for a in data)
    with pytest.raises(ValueError, match=r"the sweep of 8 runs .* about 3 runs would fit"):
        run_sweep(osv.adam, GRID, data, memory_limit_bytes=shared + 3 * per_run + per_run // 2)


def test_json_round_trip(tmp_path):
    data = make_data()
    result = run_sweep(
        osv.adam, {"learning_rate": [0.01, 0.1]}, data, seeds=[3], train_eval_size=NUM_TEST
    )
    path = tmp_path / "curves.json"
    result.to_json(path)
    back = SweepResult.from_json(path)
    assert back.names == result.names
    assert back.hyperparams == result.hyperparams
    assert back.seeds == [3, 3]
    np.testing.assert_array_equal(back.steps, result.steps)
    np.testing.assert_array_equal(back.train_loss, result.train_loss)
    for k in result.test:
        np.testing.assert_array_equal(back.test[k], result.test[k])
    assert sorted(back.train_eval) == ["accuracy", "loss"]
    for k in result.train_eval:
        np.testing.assert_array_equal(back.train_eval[k], result.train_eval[k])
    assert back.params is None
    doc = json.loads(path.read_text())
    assert doc["runs"][1]["hyperparams"] == {"learning_rate": 0.1}
    assert len(doc["runs"][1]["train_eval"]["accuracy"]) == 3


def test_json_without_train_eval_loads(tmp_path):
    """A file written before ``train_eval`` existed (no such key per run)."""
    run = {"hyperparams": {"learning_rate": 0.1}, "seed": 0, "train_loss": [1.0, 0.5]}
    doc = {"names": ["learning_rate"], "steps": [10, 20], "complete": True}
    doc["runs"] = [{**run, "test": {"loss": [1.1, 0.6]}}]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    back = SweepResult.from_json(path)
    assert back.train_eval == {}
    np.testing.assert_array_equal(back.test["loss"], [[1.1, 0.6]])


def test_bad_arguments():
    data = make_data()
    with pytest.raises(ValueError, match="both in grid and static"):
        run_sweep(osv.adam, {"learning_rate": [0.1]}, data, static={"learning_rate": 0.1})
    with pytest.raises(ValueError, match="until=15"):
        run_sweep(osv.adam, {"learning_rate": [0.1]}, data, until=15)
    with pytest.raises(ValueError, match="non-empty"):
        run_sweep(osv.adam, {"learning_rate": []}, data)
    with pytest.raises(ValueError, match=f"train_eval_size={NUM_TRAIN + 1} .* {NUM_TRAIN} train"):
        run_sweep(osv.adam, {"learning_rate": [0.1]}, data, train_eval_size=NUM_TRAIN + 1)
