"""The papers' MNIST experiments (benchmarks.paper.mnist, benchmarks.reproduce.budgets): their
configuration as documented, the pieces the protocol gained for them (α/√t, selection by
training loss, comparison pairs, the in-process runner), and the claim checks."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import gpu_queue
from benchmarks.paper import experiments, mnist, protocol, report
from benchmarks.reproduce import budgets
from optax_signvar.research.sweeps import SweepResult

# --------------------------------------------------------------------------- #
# The experiments as the papers configure them.
# --------------------------------------------------------------------------- #


def test_adam_logreg_is_the_papers_setup():
    exp = mnist.adam_logreg()
    assert (exp.batch_size, exp.epochs, exp.num_train) == (128, 45, 60_000)
    assert exp.steps == 45 * 468 and exp.eval_every == 468
    assert set(exp.methods) == {"Adam", "SGD-Nesterov", "AdaGrad"}
    assert exp.rate_decay == "sqrt" and exp.methods["AdaGrad"].static == {"decay": "constant"}
    assert exp.select_by == "train_loss" and exp.seeds == 3
    params = exp.init_fn(jax.random.key(0))
    assert [p.shape for p in jax.tree.leaves(params)] == [(10,), (784, 10)]


def test_adam_mlp_budget_is_stated_and_kept_apart():
    exp = mnist.adam_mlp()
    assert exp.paper_epochs == 200 and exp.epochs == mnist.ADAM_MLP_EPOCHS < 200
    assert exp.loss_takes_key and exp.name == "adam-mlp"
    assert set(exp.methods) == {"Adam", "AdaGrad", "RMSProp", "SGD-Nesterov", "AdaDelta"}
    shapes = sorted(p.shape for p in jax.tree.leaves(exp.init_fn(jax.random.key(0))))
    assert shapes == sorted([(10,), (1000,), (1000,), (784, 1000), (1000, 10), (1000, 1000)])
    # another budget is another protocol (its stages are stored apart)
    assert mnist.adam_mlp(epochs=40).name == "adam-mlp-40ep"


def test_amsgrad_experiments_compare_both_forms_at_both_b2():
    logreg, mlp = mnist.amsgrad_logreg(), mnist.amsgrad_mlp()
    assert logreg.rate_decay == "sqrt" and mlp.rate_decay == "constant"
    for exp in (logreg, mlp):
        assert exp.steps == 11 * 468 >= 5000
        b2s = {m.static["b2"] for m in exp.methods.values()}
        assert b2s == {0.99, 0.999}
        assert {m.optimizer for m in exp.methods.values()} == {"adam", "amsgrad", "amsgrad_optax"}
    assert len(jax.tree.leaves(mlp.init_fn(jax.random.key(0)))) == 4


def test_adabound_mnist_starts_from_the_papers_grids():
    exp = mnist.adabound_mnist()
    assert exp.epochs == 100 and exp.select_by == "test_accuracy" and not exp.decay_at
    assert exp.methods["SGDM"].rates == (0.001, 0.01, 0.1, 1.0, 10.0)
    assert exp.methods["Adam"].rates == (1e-4, 5e-4, 1e-3, 5e-3, 1e-2)
    assert exp.methods["AdaBound"].static == {"final_lr": 0.1, "gamma": 1e-3}


def test_dropout_is_inverted_and_only_with_a_key():
    params = mnist._init((784, 16, 10))(jax.random.key(0))
    x = jax.random.randint(jax.random.key(1), (64, 28, 28, 1), 0, 256).astype(jnp.uint8)
    plain = mnist.forward(params, x)
    assert jnp.array_equal(plain, mnist.forward(params, x, None, (0.2, 0.5)))
    dropped = mnist.forward(params, x, jax.random.key(2), (0.2, 0.5))
    assert not jnp.allclose(dropped, plain)
    # the expected first-layer input is the input: the mean over many masks approaches it
    keys = jax.random.split(jax.random.key(3), 4000)
    one = {"dense_0": {"w": jnp.eye(784, 784), "b": jnp.zeros(784)}}
    mean = jax.vmap(lambda k: mnist.forward(one, x[:1], k, (0.2, 0.0)))(keys).mean(0)
    np.testing.assert_allclose(mean, x[:1].reshape(1, -1).astype(jnp.float32) / 255.0, atol=0.03)


def test_logreg_loss_is_cross_entropy_plus_half_l2():
    exp = mnist.adam_logreg()
    params = exp.init_fn(jax.random.key(0))
    x = jax.random.randint(jax.random.key(1), (8, 28, 28, 1), 0, 256).astype(jnp.uint8)
    y = jnp.arange(8) % 10
    w, b = (np.asarray(params["dense_0"][k], np.float64) for k in ("w", "b"))
    logits = np.asarray(x, np.float64).reshape(8, -1) / 255.0 @ w + b
    logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    expected = np.mean(logz - logits[np.arange(8), np.asarray(y)]) + 0.5 * 1e-4 * np.sum(w**2)
    np.testing.assert_allclose(float(exp.loss_fn(params, x, y)), expected, rtol=1e-5)


# --------------------------------------------------------------------------- #
# What the protocol gained.
# --------------------------------------------------------------------------- #


def test_sqrt_decay_is_alpha_over_sqrt_t_for_every_optimizer():
    # SGD without momentum would be simplest; Nesterov's first step is (1 + momentum) g
    for optimizer, first in (("sgd_nesterov", 1.9), ("adagrad", None)):
        opt = experiments.scheduled(0.3, optimizer=optimizer, decay="sqrt")
        ref = experiments.OPTIMIZERS[optimizer](lambda c: 0.3 / jnp.sqrt(c.astype(float) + 1.0))
        s1, s2 = opt.init(jnp.zeros(2)), ref.init(jnp.zeros(2))
        for t in range(5):
            g = jnp.array([1.0, -2.0]) * (t + 1)
            u1, s1 = opt.update(g, s1)
            u2, s2 = ref.update(g, s2)
            np.testing.assert_allclose(u1, u2, rtol=1e-6)
            if t == 0 and first is not None:
                np.testing.assert_allclose(u1, -0.3 * first * g, rtol=1e-6)
    # Adam's first step is the rate times the sign; its t-th with a constant gradient too
    opt = experiments.scheduled(0.1, optimizer="adam", decay="sqrt", b2=0.99)
    state = opt.init(jnp.zeros(()))
    for t in range(1, 6):
        u, state = opt.update(jnp.ones(()), state)
        np.testing.assert_allclose(float(u), -0.1 / math.sqrt(t), rtol=1e-4)
    with pytest.raises(ValueError, match="decay"):
        experiments.scheduled(0.1, optimizer="adam", decay="linear")


@pytest.mark.standard_promotion  # optax's amsgrad mixes its int32 count with floats
@pytest.mark.parametrize("optimizer", ["adam", "amsgrad", "amsgrad_optax"])
def test_b2_reaches_the_optimizer_under_inject_hyperparams(optimizer):
    def steps(b2):
        opt = optax.inject_hyperparams(experiments.scheduled)(
            learning_rate=0.1, optimizer=optimizer, b2=b2
        )
        state = opt.init(jnp.zeros(()))
        out = []
        for g in (0.1, 1.0, 1.0):
            u, state = opt.update(jnp.asarray(g), state)
            out.append(float(u))
        return out

    assert abs(steps(0.99)[-1] - steps(0.999)[-1]) > 1e-4


def _result(rates, acc, loss):
    n = len(rates)
    return SweepResult(
        names=["learning_rate"],
        hyperparams=[{"learning_rate": r} for r in rates],
        seeds=[0] * n,
        steps=np.array([10, 20]),
        train_loss=np.array([[3.0, v] for v in loss]),
        test={"accuracy": np.array([[0.1, a] for a in acc]), "loss": np.ones((n, 2))},
    )


def test_selection_by_training_loss():
    exp = mnist.adam_logreg(smoke=True)
    done = {"tune1": _result([0.01, 0.1, 1.0], [0.9, 0.5, 0.4], [0.5, 0.2, math.nan])}
    found = protocol.selection(exp, done)
    assert found["best"]["hyperparams"]["learning_rate"] == 0.1  # lowest loss, not best acc
    assert found["direction"] is None
    by_acc = protocol.selection(experiments.smoke("p1"), done)
    assert by_acc["best"]["hyperparams"]["learning_rate"] == 0.01


def _entry(acc, loss, mean_loss, seeds=3):
    return {
        "test_accuracy": {"mean": acc, "std": 0.01},
        "train_loss": {"mean": loss, "std": 0.01},
        "mean_train_loss": {"mean": mean_loss, "std": 0.01},
        "seeds": seeds,
    }


def test_pairs_and_claims():
    methods = {"A": _entry(0.95, 0.10, 0.30), "B": _entry(0.90, 0.101, 0.50)}
    rows = report.compare(methods, (("A", "B"),))
    assert len(rows) == 1 and rows[0]["pair"] == ["A", "B"]
    assert rows[0]["test_accuracy"]["better"] == "A"
    assert rows[0]["train_loss"]["better"] == "undecided"
    assert rows[0]["mean_train_loss"]["better"] == "A"
    doc = {"comparisons": rows}
    assert budgets.verdict(doc, "A", "B", "mean_train_loss") == "better"
    assert budgets.verdict(doc, "A", "C", "mean_train_loss") == "absent"
    found = budgets.check_claims(
        doc,
        [
            ("A faster", [("A", "B")], "mean_train_loss", "better"),
            ("A as low", [("A", "B")], "train_loss", "not worse"),
            ("A better", [("A", "B")], "train_loss", "better"),
            ("vs C", [("A", "C")], "train_loss", "not worse"),
        ],
    )
    assert [c["holds"] for c in found] == [True, True, False, None]
    assert {c["evidence"] for c in found} == {"two standard errors"}
    one_seed = {"comparisons": rows, "methods": {"A": _entry(0.9, 0.1, 0.3, seeds=1)}}
    found = budgets.check_claims(
        one_seed, [("A faster", [("A", "B")], "mean_train_loss", "better")]
    )
    assert found[0]["evidence"] == "single runs (one seed)"


def test_run_experiments_finishes_the_protocol_and_resumes(tmp_path):
    exp = mnist.adam_logreg(smoke=True)
    exp = dataclasses.replace(exp, methods={"Adam": experiments.Method("adam", (0.01, 0.03))})
    first = gpu_queue.run_experiments([exp], tmp_path, tmp_path / "work", progress=False)
    assert first and all(e["experiment"] == "adam-logreg-smoke" for e in first)
    doc = report.build(exp, tmp_path)
    assert doc is not None and doc["methods"]["Adam"]["seeds"] == exp.seeds
    assert doc["budget"]["rate_decay"] == "sqrt" and doc["budget"]["selected_by"] == "train_loss"
    assert not (tmp_path / "adam-logreg-smoke-paper.json").exists()  # queue_report=False
    # everything is stored: a second call trains nothing
    assert gpu_queue.run_experiments([exp], tmp_path, tmp_path / "work", progress=False) == []
    stored = json.loads((tmp_path / "paper" / "ledger.json").read_text())
    assert len(stored) == len(first)
