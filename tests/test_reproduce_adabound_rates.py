"""AdaBound sec. 3's reproduction (benchmarks/reproduce/adabound_rates.py): the online
example's construction, Adam's and AdaBound's iterates on it against numpy, the sampled
parameters and the smoke run's results."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.reproduce import adabound, adabound_rates, cli, nets


def test_the_online_problem_is_the_construction():
    # beta2 = 0.99: C = 730, the smallest period with 5 beta2^(C-2) <= (1 - beta2)/(4 - beta2)
    c = adabound_rates.smallest_c(0.99)
    assert c == 730
    assert 5 * 0.99 ** (c - 2) <= 0.01 / 3.01 < 5 * 0.99 ** (c - 3)
    c = adabound_rates.smallest_c(0.5)
    t = jnp.arange(1, 3 * c + 1)
    g = np.asarray(adabound_rates.online_gradient(t, c))
    want = np.tile([-1.0, 2.0] + [0.0] * (c - 2), 3)
    np.testing.assert_array_equal(g, want)
    # the loss is the regret f_t(x) - f_t(0): linear with that gradient, 0 at the optimum
    grad = jax.vmap(jax.grad(adabound_rates.online_loss), in_axes=(None, 0, None))
    np.testing.assert_array_equal(np.asarray(grad(jnp.float32(0.3), t, c)), want)
    assert all(float(adabound_rates.online_loss(jnp.float32(0.0), s, c)) == 0 for s in (1, 2, 3))
    per_period = sum(float(adabound_rates.online_loss(jnp.float32(0.25), s, c)) for s in t[:c])
    assert per_period == 0.25  # the sum over a period is x: the best fixed point is x* = 0
    x = jnp.array([-0.5, 0.25, 1.7])
    np.testing.assert_array_equal(np.asarray(adabound_rates.online_project(x)), [0.0, 0.25, 1.0])
    assert float(adabound_rates.sqrt_decay(2.0)(3)) == 1.0  # alpha / sqrt(t), t = count + 1


def _numpy_online(alpha, b2, gamma, x0, rounds, c, bounded):
    """The paper's Adam (b1 = 0, no bias correction), or AdaBound with b1 = 0 and final_lr =
    alpha (bounds times a_t / a_0 = 1/sqrt(t)), on the projected problem, in float64."""
    x, v, xs = x0, 0.0, []
    for t in range(1, rounds + 1):
        xs.append(x)
        g = {1: -1.0, 2: 2.0}.get(t % c, 0.0)
        v = b2 * v + (1 - b2) * g * g
        if bounded:
            raw = alpha * math.sqrt(1 - b2**t) / (math.sqrt(v) + 1e-8)
            lo, hi = alpha * (1 - 1 / (gamma * t + 1)), alpha * (1 + 1 / (gamma * t))
            rate = min(max(raw, lo), hi) / math.sqrt(t)
        else:
            rate = alpha / math.sqrt(t) / (math.sqrt(v) + 1e-8)
        x = min(max(x - rate * g, 0.0), 1.0)
    return np.array(xs)


def test_adam_and_adabound_match_numpy_and_adam_drifts_up():
    alpha, b2, gamma, x0 = 0.1, 0.5, 0.05, 0.5
    c = adabound_rates.smallest_c(b2)
    rounds = 6 * c
    _, rows = adabound_rates.run_online(alpha, b2, gamma, x0, rounds, log_every=1)
    for name, bounded in (("Adam", False), ("AdaBound", True)):
        got = np.array([r["x"] for r in rows if r["config"] == name])
        want = _numpy_online(alpha, b2, gamma, x0, rounds, c, bounded)
        assert len(got) == rounds
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
    adam = np.array([r["x"] for r in rows if r["config"] == "Adam"])
    assert 0.5 < adam[-1] < 1.0 and np.all(np.diff(adam[::c]) > 0)  # up, period by period
    # the average regret: the mean of f_t(x_t)
    mean = [r["mean_loss"] for r in rows if r["config"] == "Adam"][-1]
    g = np.asarray(adabound_rates.online_gradient(jnp.arange(1, rounds + 1), c))
    np.testing.assert_allclose(mean, np.mean(g * adam), rtol=1e-5)


def test_sampled_parameters_are_nine_kernels_and_a_bias():
    size = adabound.NET
    net = nets.wide_resnet(size.depth, size.width, base=size.base, stages=size.stages)
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    picks = adabound_rates.sample_parameters(shapes)
    leaves = jax.tree.leaves(shapes)
    assert len(picks) == 10 and picks[-1]["label"].startswith("head/b[")
    kernels = picks[:9]
    assert all(leaves[p["leaf"]].shape[:2] == (3, 3) for p in kernels)
    assert len({p["leaf"] for p in kernels}) == 7  # every 3x3 layer of WRN-10-1
    assert kernels[0]["label"].startswith("stem")
    # distinct kernels: (layer, input, output channel) differ
    kernel_ids = {
        (p["leaf"], *np.unravel_index(p["index"], leaves[p["leaf"]].shape)[2:]) for p in kernels
    }
    assert len(kernel_ids) == 9
    assert picks == adabound_rates.sample_parameters(shapes)  # seeded


def test_smoke_run_has_the_keys(tmp_path, capsys):
    argv = ["adabound-rates", "--smoke", "--no-progress", "--out", str(tmp_path)]
    out = cli.main(argv + ["--rounds", "3000", "--steps", "6", "--records", "3"])
    with open(out["adabound-rates"]["files"]["json"]) as f:
        results = json.load(f)["results"]
    assert {"online", "rates", "claims", "paper_claim_reproduced"} <= set(results)
    online = results["online"]
    assert online["C"] == 730 and online["rounds"] == 3000
    for name in ("Adam", "Adam (debiased)", "AMSGrad", "AdaBound"):
        assert set(online["final"][name]) == {"x_T", "x_mean_last_tenth", "average_regret"}
    assert isinstance(online["paper_claim_reproduced"], bool)
    rates = results["rates"]
    assert len(rates["sampled"]) == 10 and rates["recorded_t"] == [1, 3, 6]
    adam, bound = rates["traces"]["Adam"], rates["traces"]["AdaBound"]
    for key in (
        "rate_q1",
        "rate_q50",
        "rate_q99",
        "rate_min",
        "rate_max",
        "rate_below_0.01",
        "rate_above_1000",
    ):
        assert len(adam[key]) == 3 and len(bound["bounded_" + key]) == 3, key
    # the sampled rates are rates of the network: within the diagnostics' extremes
    sampled = np.array(adam["sampled"])
    assert sampled.shape == (3, 10)
    assert np.all(sampled >= np.array(adam["rate_min"])[:, None] * (1 - 1e-6))
    assert np.all(sampled <= np.array(adam["rate_max"])[:, None] * (1 + 1e-6))
    clipped = np.array(bound["sampled"])
    assert np.all(clipped >= np.array(bound["lower_bound"])[:, None] * (1 - 1e-6))
    assert np.all(clipped <= np.array(bound["upper_bound"])[:, None] * (1 + 1e-6))
    assert set(rates["summary"]) == {"Adam", "AdaBound"}
    assert "Fashion-MNIST" in rates["substitution"] or "CIFAR-10" in rates["substitution"]
    assert "(b)" in capsys.readouterr().out
