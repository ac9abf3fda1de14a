"""M-SVAG and M-VASSD fed the mini-batch gradient variance (Dissecting Adam sec. 4.1, supp. D)
in the digits demo and in the image reproductions (P1): smoke sizes, finite results."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_signvar as osv
from benchmarks.reproduce import data, images, nets, p1, tuning
from optax_signvar import demo, research
from optax_signvar.demo import compare

MB = images.MINIBATCH_SUFFIX


def _noisy_quadratic(params, key):
    noise = 0.5 * jax.random.normal(key, params.shape)
    return 0.5 * jnp.sum(params**2) + jnp.sum(noise * params)


def test_ablate_minibatch_lines_up_with_ablate():
    # With a zero variance, M-SVAG's factor m^2 / (m^2 + rho s) is 1: the mini-batch-variance
    # runner must then give ablate's M-SGD rows, same keys, same steps, same records.
    def moments(params, key):
        grads = jax.grad(_noisy_quadratic)(params, key)
        return grads, jnp.zeros_like(grads)

    init = lambda key: jax.random.normal(key, (5,))  # noqa: E731
    common = dict(steps=7, seeds=[0, 3], log_every=3)
    opt = osv.dissect(0.1, variance_adaptation="optimal", variance="minibatch")
    got = tuning.ablate_minibatch(
        {"m": tuning.MinibatchVariance(opt)}, _noisy_quadratic, moments, init, **common
    )
    want = research.ablate({"m": osv.m_sgd(0.1)}, _noisy_quadratic, init, **common)
    assert [(r["seed"], r["step"]) for r in got] == [(r["seed"], r["step"]) for r in want]
    for a, b in zip(got, want, strict=True):
        for column in ("loss", "mean_loss"):
            assert a[column] == pytest.approx(b[column], rel=1e-5, abs=1e-6)


def _tiny_net() -> nets.Net:
    def init(key):
        return {"fc": nets._dense_params(key, 28 * 28, 10, 0.0)}

    def apply(p, x):
        return nets.dense(p["fc"], x.reshape(x.shape[0], -1))

    return nets.Net("linear", init, apply)


@pytest.fixture(scope="module")
def problem():
    return images.make_problem(
        data.digits(), _tiny_net(), batch_size=8, train_size=200, test_size=100, train_eval_size=50
    )


def test_moments_fn_is_the_gradient_of_the_same_mini_batch(problem):
    params = problem.init_params(jax.random.key(0))
    key = jax.random.key(1)
    mean, variance = jax.jit(problem.moments_fn)(params, key)
    grads = jax.jit(jax.grad(problem.loss_fn))(params, key)
    leaves = map(jax.tree.leaves, (mean, grads, variance))
    for m, g, v in zip(*leaves, strict=True):
        np.testing.assert_allclose(m, g, rtol=1e-4, atol=1e-6)
        assert bool(jnp.all(v >= 0)) and bool(jnp.any(v > 0))


def test_compare_runs_the_variants_with_finite_results(problem, capsys):
    names = ["M-SVAG", "M-SVAG" + MB, "M-VASSD", "M-VASSD" + MB]
    methods = {m: (p1.CENTERS[m], images.DISSECTING[m]) for m in names}
    scale = images.Scale(
        steps=4,
        batch_size=8,
        train_size=200,
        test_size=100,
        train_eval_size=50,
        grid=(1.0,),
        seeds=1,
        records=2,
    )
    ctx = SimpleNamespace(progress=lambda total=None, desc="": _Bar())
    out = images.compare(ctx, problem, methods, scale)
    assert list(out["final"]) == names
    for m in names:
        for column in ("train_loss", "test_acc", "mean_loss"):
            assert all(math.isfinite(x) for x in out["final"][m][column]), (m, column)
        assert set(out["seconds"][m]) == set(out["grid"][m])
    # the same seeds: every method starts from the same parameters
    first = {r["config"]: r["train_loss"] for r in out["rows"] if r["step"] == 0}
    assert len(first) == len(names) and len(set(first.values())) == 1
    results = images.results_of(out, scale, problem)
    assert set(results["tuning_seconds"]) == set(names)

    pairs = {"variance estimate": images.ESTIMATE_PAIRS}
    found = images.orderings(out["final"], pairs, scale.seeds)
    assert set(found["test_acc"]["pairs"]) == {f"{m + MB} vs {m}" for m in ("M-SVAG", "M-VASSD")}
    checked = images.check_claims(found, [c for c in p1.CLAIMS if c.expect == "alike"])
    # one seed: no sd, so "alike" cannot be shown, but every pair is checked
    assert checked[0]["holds"] is False and len(checked[0]["checks"]) == 6

    timed = {m: (0.1, methods[m][1]) for m in ("M-SVAG", "M-SVAG" + MB)}
    timing = images.step_seconds(problem, timed, repeats=1)
    assert all(s > 0 for s in timing["seconds"].values())
    assert timing["ratio"]["M-SVAG" + MB][0] == "M-SVAG"
    assert "wall time per step" in capsys.readouterr().out


class _Bar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def test_alike_claim_needs_a_gap_within_the_seeds_sd():
    final = {
        "A": {c: [1.0, 0.1] for c in ("mean_loss", "train_loss", "test_acc")},
        "B": {c: [1.05, 0.1] for c in ("mean_loss", "train_loss", "test_acc")},
        "C": {c: [2.0, 0.1] for c in ("mean_loss", "train_loss", "test_acc")},
    }
    claim = lambda pair: images.Claim("alike", (pair,), ("test_acc",), "alike")  # noqa: E731
    found = images.orderings(final, {"x": [("B", "A"), ("C", "A")]}, n_seeds=3)
    assert images.check_claims(found, [claim(("B", "A"))])[0]["holds"] is True
    assert images.check_claims(found, [claim(("C", "A"))])[0]["holds"] is False
    one_seed = images.orderings(final, {"x": [("B", "A")]}, n_seeds=1)
    assert images.check_claims(one_seed, [claim(("B", "A"))])[0]["holds"] is False
    # a claim none of whose methods ran is not checked, not failed
    assert images.check_claims(found, [claim(("D", "A"))])[0]["holds"] is None


def test_p1_methods_option():
    ctx = SimpleNamespace(args=SimpleNamespace(methods=f"M-SVAG, M-SVAG{MB}"))
    assert p1.methods_of(ctx) == {"M-SVAG": 0.1, "M-SVAG" + MB: 0.1}
    assert list(p1.methods_of(SimpleNamespace(args=SimpleNamespace(methods=None)))) == list(
        p1.CENTERS
    )
    with pytest.raises(SystemExit):
        p1.methods_of(SimpleNamespace(args=SimpleNamespace(methods="M-SVAG (minibatch)")))


def test_demo_minibatch_variance_option(capsys):
    # tests/test_demo.py runs every optimizer of the demo; here the option and the path
    assert demo.parse_args([]).optimizers == list(compare.DEFAULT_OPTIMIZERS)
    names = demo.parse_args(["--minibatch-variance"]).optimizers
    assert names == [
        *compare.DEFAULT_OPTIMIZERS,
        "m_svag_minibatch",
        "m_vassd",
        "m_vassd_minibatch",
    ]
    results = demo.main(["--epochs", "2", "--optimizers", "m_vassd_minibatch", "--no-progress"])
    assert math.isfinite(results[0]["final_train_loss"])
    assert 0.5 < results[0]["test_accuracy"] <= 1.0
    assert "m_vassd_minibatch" in capsys.readouterr().out


def test_2c2d_apply_one_is_apply_on_a_batch_of_one():
    net = nets.net_2c2d(image_size=8)  # the same layers, small
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (8, 8, 1))
    np.testing.assert_allclose(
        nets.one_example_logits(net, params, x), net.apply(params, x[None])[0], rtol=1e-5, atol=1e-5
    )
