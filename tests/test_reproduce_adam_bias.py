"""Adam sec. 6.4's reproduction (benchmarks/reproduce/adam_bias.py): the VAE's loss, Adam
without bias correction, the smoke run's results and resuming a sweep from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks.reproduce import adam_bias, cli


def _softplus(a):
    return np.logaddexp(0.0, a)


def _numpy_terms(params, x, noise):
    """The negative ELBO's two terms per example in float64, written out."""
    p = {k: {n: np.asarray(v, np.float64) for n, v in layer.items()} for k, layer in params.items()}

    def dense(name, a):
        return a @ p[name]["w"] + p[name]["b"]

    h = _softplus(dense("enc", x))
    mean, logvar = dense("enc_mean", h), dense("enc_logvar", h)
    z = mean + np.sqrt(np.exp(logvar)) * noise
    prob = 1.0 / (1.0 + np.exp(-dense("dec_out", _softplus(dense("dec", z)))))
    bernoulli = -np.sum(x * np.log(prob) + (1.0 - x) * np.log(1.0 - prob), axis=1)
    var = np.exp(logvar)
    # KL(N(mean, var) || N(0, 1)) per dimension: (var + mean^2 - 1 - log var) / 2
    kl = np.sum(0.5 * (var + mean**2 - 1.0 - logvar), axis=1)
    return bernoulli, kl


def test_vae_loss_matches_a_float64_negative_elbo(monkeypatch):
    hidden, latent, n = 20, 3, 6
    params = adam_bias.initializer(hidden, latent)(jax.random.key(1))
    # larger weights than the initial 0.01, so every term matters
    params = jax.tree.map(lambda a: a * 10.0 if a.ndim == 2 else a + 0.1, params)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (n, 784)).astype(np.float32)  # grey levels, not binarised
    noise = rng.standard_normal((n, latent)).astype(np.float32)
    reconstruction, kl = jax.jit(adam_bias.elbo_terms)(params, jnp.asarray(x), jnp.asarray(noise))
    want_rec, want_kl = _numpy_terms(params, x.astype(np.float64), noise.astype(np.float64))
    assert np.all(want_kl > 0.01)
    np.testing.assert_allclose(np.asarray(kl), want_kl, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(reconstruction), want_rec, rtol=1e-5)

    # loss_fn: the batch mean with the noise drawn from its key; eval_fn: the fixed noise
    key = jax.random.key(5)
    noise_k = np.asarray(jax.random.normal(key, (n, latent), jnp.float32), np.float64)
    rec_k, kl_k = _numpy_terms(params, x.astype(np.float64), noise_k)
    loss = jax.jit(adam_bias.loss_fn)(params, jnp.asarray(x), jnp.zeros(n, jnp.int32), key)
    np.testing.assert_allclose(float(loss), np.mean(rec_k + kl_k), rtol=1e-5)
    noise_0 = adam_bias.eval_noise(n, latent).astype(np.float64)
    rec_0, kl_0 = _numpy_terms(params, x.astype(np.float64), noise_0)
    # one batch, chunks of 2 (a lax.map over them), chunks of 4 (one example at a time)
    for chunk in (500, 2, 4):
        monkeypatch.setattr(adam_bias, "EVAL_CHUNK", chunk)
        evaluate = jax.jit(lambda *a: adam_bias.eval_fn(*a))  # a new trace per chunk size
        ev = evaluate(params, jnp.asarray(x), jnp.zeros(n, jnp.int32))
        np.testing.assert_allclose(float(ev["neg_elbo"]), np.mean(rec_0 + kl_0), rtol=1e-5)
        np.testing.assert_allclose(float(ev["kl"]), np.mean(kl_0), rtol=1e-4)


@pytest.mark.parametrize("injected", [False, True])
@pytest.mark.parametrize(("b1", "b2"), [(0.0, 0.9999), (0.9, 0.99)])
def test_no_correction_is_adam_without_its_two_corrections(b1, b2, injected):
    lr, eps = 1e-3, 1e-8
    if injected:  # as the sweep builds it: the hyperparameters are arrays in the state
        opt = optax.inject_hyperparams(adam_bias.adam_without_bias_correction)(
            learning_rate=lr, b1=b1, b2=b2
        )
    else:
        opt = adam_bias.adam_without_bias_correction(lr, b1=b1, b2=b2)
    rng = np.random.default_rng(3)
    p = rng.standard_normal(5)
    params = {"w": jnp.asarray(p, jnp.float32)}
    state = opt.init(params)
    m, v = np.zeros(5), np.zeros(5)
    for _ in range(6):
        g = rng.standard_normal(5)
        updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = optax.apply_updates(params, updates)
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        p = p - lr * m / (np.sqrt(v) + eps)  # no 1 - b1^t, no 1 - b2^t
        # m / sqrt(v) reaches 1 / sqrt(1 - b2) = 100 here: compare the steps' float32 rounding
        np.testing.assert_allclose(np.asarray(params["w"]), p, rtol=0, atol=2e-5)


def test_smoke_run_results(tmp_path):
    out = cli.main(["adam-bias", "--smoke", "--no-progress", "--out", str(tmp_path)])
    with open(out["adam-bias"]["files"]["json"]) as f:
        results = json.load(f)["results"]
    assert results["budget"] == "reduced" and results["paper_epochs"] == 100
    assert results["epochs_done"] == adam_bias.SMOKE.epochs
    setup = results["setup"]
    for key in ("data", "batch_size", "grid", "seeds", "hidden", "latent", "likelihood"):
        assert key in setup
    assert setup["batch_size"] == 128 and setup["hidden"] == 500 and setup["latent"] == 50
    grid = adam_bias.SMOKE
    n_points = 2 * len(grid.b1s) * len(grid.b2s) * len(grid.rates)
    assert len(results["points"]) == n_points
    fields = {"b1", "b2", "learning_rate", "bias_correction", "loss_10", "loss_final"}
    for p in results["points"]:
        assert fields | {"test_10", "test_final"} <= set(p)
        for k in ("loss_10", "loss_final", "test_10", "test_final"):
            assert isinstance(p[k], float) or p[k] in ("nan", "inf")  # a diverged run: a string
    assert len(results["methods"]) == n_points // len(grid.rates)
    claim = results["claim"]
    for key in ("ratios", "unstable_without_at_large_rates", "correction_never_hurts", "verdict"):
        assert key in claim
    ratio = claim["ratios"]["b1=0.9, b2=0.9999"]
    assert len(ratio["ratio_10"]) == len(grid.rates)


def test_resume_gives_the_numbers_of_a_straight_run(tmp_path):
    _, arrays = adam_bias.load_arrays("digits")
    cfg = dataclasses.replace(
        adam_bias.SMOKE,
        b1s=(0.0,),
        b2s=(0.9999,),
        rates=(1e-3,),
        hidden=8,
        latent=2,
        train_eval_size=300,
        paper_epochs=3,
    )
    root = tmp_path / "ckpt"
    first = adam_bias.train(dataclasses.replace(cfg, epochs=1), False, arrays, root)
    assert not first.complete and len(first.steps) == 1
    assert any(root.glob("*/state"))
    resumed = adam_bias.train(dataclasses.replace(cfg, epochs=2), False, arrays, root)
    straight = adam_bias.train(dataclasses.replace(cfg, epochs=2), False, arrays, None)
    assert np.isfinite(straight.train_loss).all()  # numbers to compare, not NaNs
    np.testing.assert_array_equal(resumed.steps, straight.steps)
    np.testing.assert_array_equal(resumed.train_loss, straight.train_loss)
    for group in ("test", "train_eval"):
        for k, v in getattr(straight, group).items():
            np.testing.assert_array_equal(getattr(resumed, group)[k], v)
    # the checkpoint folder names the setting and the configuration, not the epochs
    (folder,) = root.iterdir()
    assert folder.name.startswith("no-bias-correction-digits-")
    assert folder == adam_bias.checkpoint_dir(root, dataclasses.replace(cfg, epochs=7), False)


def _synthetic_points(cfg, without):
    """Losses of 100 with bias correction; ``without(b1, b2, rate)`` without it."""
    return [
        {
            "bias_correction": c,
            "b1": b1,
            "b2": b2,
            "learning_rate": r,
            "loss_10": 100.0 if c else without(b1, b2, r),
            "loss_final": 100.0 if c else without(b1, b2, r),
            "test_final": 100.0,
        }
        for c in (True, False)
        for b1 in cfg.b1s
        for b2 in cfg.b2s
        for r in cfg.rates
    ]


def test_claim_check_reads_divergence_and_ratios():
    cfg = adam_bias.Config()
    # the paper's picture: b2 = 0.9999 without correction diverges at the large rates
    paper = _synthetic_points(
        cfg, lambda b1, b2, r: math.nan if b2 > 0.9995 and r > 1e-3 else 100.0
    )
    claim = adam_bias.claim_check(cfg, paper, epochs_done=10)
    assert claim["reproduced"] and claim["stronger_early"] is None
    assert claim["ratios"]["b1=0, b2=0.9999"]["ratio_10"] == [1.0, 1.0, 1.0, math.inf, math.inf]
    # no difference between the two: not reproduced
    flat = adam_bias.claim_check(cfg, _synthetic_points(cfg, lambda *_: 101.0), epochs_done=10)
    assert not flat["reproduced"] and flat["correction_never_hurts"]
    # the run without correction converging where the corrected one diverged: it hurt
    worse = [dict(p) for p in paper]
    worse[0]["loss_10"] = math.inf
    assert not adam_bias.claim_check(cfg, worse, epochs_done=10)["correction_never_hurts"]
    assert adam_bias.methods_of(paper)["Adam, b1=0, b2=0.99"]["best_rate"] == 1e-5
