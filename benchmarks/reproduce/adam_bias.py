"""Adam's bias correction on and off (Kingma & Ba, 2015, sec. 6.4 and Fig. 4): a VAE on MNIST.

Reproduced: a variational autoencoder (Kingma & Welling, 2014) with one hidden layer of 500
softplus units in the encoder and in the decoder and a 50-dimensional spherical Gaussian
latent, trained on MNIST with Adam **with** the two bias-correction terms (``osv.adam``) and
**without** them (:func:`adam_without_bias_correction`, ``osv.dissect(lr,
normalization="rms", b1=b1, b2=b2, bias_correction=False)``: ``m_t / (sqrt(v_t) + eps)``
with the raw moments, as ``reddi.py`` uses it), over the paper's grid beta1 in {0, 0.9},
beta2 in {0.99, 0.999, 0.9999}, log10(alpha) in {-5, -4, -3, -2, -1} (eps = 1e-8). Fig. 4
plots the loss after 10 and after 100 epochs against log10(alpha). The paper's claim:
without bias correction, beta2 close to 1 makes training unstable, most at large rates and
early in training (10 epochs); with it, training is stable across the grid.

Chosen where the paper is silent (it gives neither the batch size nor the likelihood):

* batch 128 (468 steps an epoch, the remainder of the 60,000 images dropped each epoch);
* a Bernoulli decoder on the [0, 1] pixel intensities, not binarised (cross-entropy with the
  grey levels as targets); encoder 784-500 softplus -> (mean, log-variance), 50 each; decoder
  50-500 softplus -> 784 logits;
* the loss: the negative ELBO of an example (reconstruction cross-entropy summed over the 784
  pixels + the closed-form KL to N(0, I)), one reparameterised sample, averaged over the
  mini-batch; the noise comes from the sweep's per-run, per-step key (``loss_key=True``);
* initialisation as in Kingma & Welling (2014): every weight N(0, 0.01^2), biases 0;
* one seed (``--seeds``); the plotted "loss" is the mean mini-batch loss of the last epoch
  (the training objective); the negative ELBO of the 10,000 test images and of the first
  10,000 training images, each with one fixed noise sample, is evaluated after every epoch.

How it runs: one :func:`optax_signvar.research.sweep` per bias-correction setting, its grid
``{"b1", "b2", "learning_rate"}`` (30 runs vmapped as one program), ``steps`` = the paper's
100 epochs, ``until`` = ``--epochs`` of them (default 10). The sweeps checkpoint under
``$OPTAX_SIGNVAR_DATA/adam-bias/`` (default ``~/.cache/optax_signvar/adam-bias/``,
``--checkpoint-root`` moves it; a folder per setting and configuration), so a later
``--epochs 100`` resumes from the 10-epoch state and gives the numbers of an uninterrupted
run. The JSON says ``"budget": "paper"`` once 100 epochs are done, ``"reduced"`` before.

Budget and cost. The paper: 100 epochs (46,800 steps) for each of the 60 runs. On the 2-core
x86-64 CPU VM of this repository a step of one run of this VAE costs about 6 ms inside the
vmapped sweep, so the default (10 epochs: 2 x 30 runs x 4,680 steps) takes about half an
hour (28 minutes of training steps, the per-epoch evaluations of 20,000 images per run add
about a tenth), and the paper's 100 epochs about 5 hours (resumable in any number of calls:
``--epochs 20``, ``--epochs 50``, ...). MNIST comes from ``bash benchmarks/setup_data.sh``
(:func:`benchmarks.reproduce.data.mnist`). The smoke run (``--smoke``): scikit-learn's digits
(1,500 training images, 11 steps an epoch), the paper's network, beta1 0.9, beta2 in {0.99,
0.9999}, rates {1e-3, 1e-2}, 2 epochs, no checkpoint unless ``--checkpoint-root`` is given;
about 15 s, two thirds of it compiling the two sweeps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optax_signvar as osv
from benchmarks.reproduce import data as datasets
from optax_signvar.research import sweep

PAPER_EPOCHS = 100
EARLY_EPOCHS = 10  # the paper's first panel
BATCH_SIZE = 128
HIDDEN, LATENT = 500, 50
INIT_STD = 0.01  # Kingma & Welling (2014): weights N(0, 0.01^2)
EPS = 1e-8
EVAL_CHUNK = 500  # examples per step of the evaluation's lax.map (bounds its memory)
TRAIN_EVAL_SIZE = 10_000
SETTINGS = {True: "bias-correction", False: "no-bias-correction"}
# the divergence criteria of the claim check: a loss ratio (without / with correction) above
# WORSE is "worse without correction", below 1 / WORSE "better without"
WORSE = 1.1


@dataclasses.dataclass(frozen=True)
class Config:
    """What one reproduction trains (``epochs`` is how far this call goes, not the hash)."""

    data: str = "mnist"
    b1s: tuple[float, ...] = (0.0, 0.9)
    b2s: tuple[float, ...] = (0.99, 0.999, 0.9999)
    rates: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    seeds: tuple[int, ...] = (0,)
    epochs: int = EARLY_EPOCHS
    paper_epochs: int = PAPER_EPOCHS
    batch_size: int = BATCH_SIZE
    hidden: int = HIDDEN
    latent: int = LATENT
    train_eval_size: int = TRAIN_EVAL_SIZE

    def grid(self) -> dict[str, list[float]]:
        return {"b1": list(self.b1s), "b2": list(self.b2s), "learning_rate": list(self.rates)}

    def identity(self) -> str:
        """A short digest of everything but ``epochs``: the checkpoint folder's name."""
        fields = dataclasses.asdict(self)
        fields.pop("epochs")
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


SMOKE = Config(data="digits", b1s=(0.9,), b2s=(0.99, 0.9999), rates=(1e-3, 1e-2), epochs=2)


# ---------------------------------------------------------------------------- the optimizers


def adam_without_bias_correction(
    learning_rate: Any, b1: Any = 0.9, b2: Any = 0.999, eps: float = EPS
) -> Any:
    """Adam without its two bias corrections: ``p -= lr * m_t / (sqrt(v_t) + eps)``.

    A module-level function: :func:`optax_signvar.research.sweep` wraps it in
    ``optax.inject_hyperparams`` (``learning_rate``, ``b1``, ``b2`` arrive as arrays, one per
    run) and hashes it by its qualified name.
    """
    return osv.dissect(
        learning_rate, normalization="rms", b1=b1, b2=b2, eps=eps, bias_correction=False
    )


FACTORIES = {True: osv.adam, False: adam_without_bias_correction}


# ---------------------------------------------------------------------------- the VAE


def initializer(hidden: int = HIDDEN, latent: int = LATENT, pixels: int = 784) -> Any:
    """``init(key)`` -> the VAE's parameters (a closure: its qualified name is stable across
    processes, the sizes are in the parameters' shapes, both hashed by the sweep).

    The weights are slices of one normal draw: five draws of their own take seconds longer
    to compile under the sweep's vmap on a CPU.
    """
    shapes = {
        "enc": (pixels, hidden),
        "enc_mean": (hidden, latent),
        "enc_logvar": (hidden, latent),
        "dec": (latent, hidden),
        "dec_out": (hidden, pixels),
    }
    sizes = [math.prod(s) for s in shapes.values()]
    offsets = np.cumsum([0, *sizes])

    def init(key: jax.Array) -> dict[str, dict[str, jax.Array]]:
        flat = INIT_STD * jax.random.normal(key, (int(offsets[-1]),), jnp.float32)
        return {
            name: {
                "w": flat[offsets[i] : offsets[i + 1]].reshape(shape),
                "b": jnp.zeros((shape[1],), jnp.float32),
            }
            for i, (name, shape) in enumerate(shapes.items())
        }

    return init


def _apply(layer: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return x @ layer["w"] + layer["b"]


def elbo_terms(params: Any, x: jax.Array, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per example: the reconstruction term ``-log p(x|z)`` (Bernoulli, summed over pixels)
    and ``KL(q(z|x) || N(0, I))``, with ``z = mean + exp(logvar / 2) * noise``.

    ``x``: (batch, pixels) in [0, 1]; ``noise``: (batch, latent) standard normal.
    """
    h = jax.nn.softplus(_apply(params["enc"], x))
    mean, logvar = _apply(params["enc_mean"], h), _apply(params["enc_logvar"], h)
    z = mean + jnp.exp(0.5 * logvar) * noise
    logits = _apply(params["dec_out"], jax.nn.softplus(_apply(params["dec"], z)))
    # -[x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))] = softplus(l) - x l
    reconstruction = jnp.sum(jax.nn.softplus(logits) - x * logits, axis=-1)
    kl = -0.5 * jnp.sum(1.0 + logvar - mean**2 - jnp.exp(logvar), axis=-1)
    return reconstruction, kl


def _latent(params: Any) -> int:
    return params["enc_mean"]["w"].shape[1]


def loss_fn(params: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
    """The mini-batch's mean negative ELBO, one reparameterised sample per example."""
    del y
    noise = jax.random.normal(key, (x.shape[0], _latent(params)), x.dtype)
    reconstruction, kl = elbo_terms(params, x, noise)
    return jnp.mean(reconstruction + kl)


def eval_noise(n: int, latent: int) -> np.ndarray:
    """The evaluations' fixed noise: ``numpy.random.default_rng(0)``'s first ``n x latent``
    standard normals, float32 (a constant of the program: no random-number kernel to
    compile, which costs seconds under the sweep's vmap on a CPU)."""
    return np.random.default_rng(0).standard_normal((n, latent), np.float32)


def eval_fn(params: Any, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """The mean negative ELBO (and its two terms) of a whole split, with the fixed noise of
    :func:`eval_noise`, in chunks of :data:`EVAL_CHUNK` examples."""
    del y
    n = x.shape[0]
    noise = jnp.asarray(eval_noise(n, _latent(params)))
    if n <= EVAL_CHUNK:
        reconstruction, kl = elbo_terms(params, x, noise)
    elif n % EVAL_CHUNK == 0:  # MNIST's 10,000: 20 chunks
        chunks = (
            x.reshape(-1, EVAL_CHUNK, x.shape[1]),
            noise.reshape(-1, EVAL_CHUNK, noise.shape[1]),
        )
        reconstruction, kl = jax.lax.map(lambda c: elbo_terms(params, *c), chunks)
    else:

        def one(xs):
            reconstruction, kl = elbo_terms(params, xs[0][None], xs[1][None])
            return reconstruction[0], kl[0]

        reconstruction, kl = jax.lax.map(one, (x, noise), batch_size=EVAL_CHUNK)
    return {
        "neg_elbo": jnp.mean(reconstruction + kl),
        "reconstruction": jnp.mean(reconstruction),
        "kl": jnp.mean(kl),
    }


# ---------------------------------------------------------------------------- training


def load_arrays(name: str) -> tuple[str, tuple[np.ndarray, ...]]:
    """The data set's name and ``(x_train, y_train, x_test, y_test)``, images flattened."""
    ds = datasets.load(name)
    flat = [a.reshape(a.shape[0], -1) for a in (ds.x_train, ds.x_test)]
    return ds.name, (flat[0], ds.y_train, flat[1], ds.y_test)


def checkpoint_dir(root: str | os.PathLike | None, cfg: Config, correction: bool) -> Path | None:
    """``root/<setting>-<data>-<digest of the configuration>``, or None without a root."""
    if root is None:
        return None
    return Path(root).expanduser() / f"{SETTINGS[correction]}-{cfg.data}-{cfg.identity()}"


def train(
    cfg: Config,
    correction: bool,
    arrays: tuple[np.ndarray, ...],
    checkpoint_root: str | os.PathLike | None = None,
    progress: bool = False,
) -> Any:
    """The sweep of one bias-correction setting up to ``cfg.epochs`` (resuming where its
    checkpoint is); returns the :class:`~optax_signvar.research.SweepResult`."""
    per_epoch = arrays[0].shape[0] // cfg.batch_size
    if not 1 <= cfg.epochs <= cfg.paper_epochs:
        raise SystemExit(f"--epochs must be between 1 and {cfg.paper_epochs}")
    return sweep(
        FACTORIES[correction],
        initializer(cfg.hidden, cfg.latent, arrays[0].shape[1]),
        loss_fn,
        arrays,
        grid=cfg.grid(),
        seeds=list(cfg.seeds),
        steps=cfg.paper_epochs * per_epoch,
        batch_size=cfg.batch_size,
        eval_every=per_epoch,
        eval_fn=eval_fn,
        train_eval_size=min(cfg.train_eval_size, arrays[0].shape[0]),
        loss_key=True,
        checkpoint_dir=checkpoint_dir(checkpoint_root, cfg, correction),
        until=cfg.epochs * per_epoch,
        progress=progress,
    )


def points_of(cfg: Config, results: dict[bool, Any]) -> list[dict]:
    """Per (bias correction, b1, b2, rate): the losses after ``EARLY_EPOCHS`` (or the last
    epoch done, if fewer) and after the last epoch done, means over the seeds."""
    points = []
    for correction, res in results.items():
        done = len(res.steps)
        early = min(EARLY_EPOCHS, done) - 1
        keys = [(h["b1"], h["b2"], h["learning_rate"]) for h in res.hyperparams]
        for b1 in cfg.b1s:
            for b2 in cfg.b2s:
                for rate in cfg.rates:
                    runs = [
                        i
                        for i, k in enumerate(keys)
                        if np.allclose(k, (b1, b2, rate), rtol=1e-6, atol=0)
                    ]
                    train = res.train_loss[runs].mean(axis=0)
                    test = res.test["neg_elbo"][runs].mean(axis=0)
                    train_eval = res.train_eval.get("neg_elbo")  # absent: train_eval_size 0
                    points.append(
                        {
                            "bias_correction": correction,
                            "b1": b1,
                            "b2": b2,
                            "learning_rate": rate,
                            "loss_10": float(train[early]),
                            "loss_final": float(train[-1]),
                            "test_10": float(test[early]),
                            "test_final": float(test[-1]),
                            "train_eval_final": math.nan
                            if train_eval is None
                            else float(train_eval[runs, -1].mean()),
                            "loss_per_epoch": [float(v) for v in train],
                            "test_per_epoch": [float(v) for v in test],
                        }
                    )
    return points


# ---------------------------------------------------------------------------- the claim


def _ratio(without: float, with_: float) -> float:
    """loss(no correction) / loss(correction), a diverged (non-finite) loss as +inf; NaN
    when both diverged."""
    a = without if math.isfinite(without) else math.inf
    b = with_ if math.isfinite(with_) else math.inf
    if math.isinf(a) and math.isinf(b):
        return math.nan
    return a / b


def _point(points: list[dict], correction: bool, b1: float, b2: float, rate: float) -> dict:
    return next(
        p
        for p in points
        if p["bias_correction"] == correction
        and (p["b1"], p["b2"], p["learning_rate"]) == (b1, b2, rate)
    )


def _worst(values: list[float]) -> float:
    finite_or_inf = [v for v in values if not math.isnan(v)]
    return max(finite_or_inf) if finite_or_inf else math.nan


def claim_check(cfg: Config, points: list[dict], epochs_done: int) -> dict:
    """The ratios loss(without) / loss(with correction) per (b1, b2) and rate, and the
    paper's claim in four checks on them.

    "Large rates" are the upper half of the rate grid (1e-3, 1e-2, 1e-1 in the paper's).
    ``unstable_without_at_large_rates``: for every b1, at beta2 = max(b2s), the 10-epoch loss
    without correction exceeds the corrected one by more than 10% (or diverges alone) at some
    large rate. ``correction_never_hurts``: no point where the run without correction is
    more than 10% better, or converges where the corrected one diverged.
    ``grows_with_b2``: the worst large-rate ratio grows with beta2 (10% tolerance).
    ``stronger_early``: the worst large-rate ratio at 10 epochs is at least the one at the
    last epoch (only when more than 10 epochs are done, else None). The claim holds when
    the first two and, where it is checkable, the last hold.
    """
    rates = sorted(cfg.rates)
    large = rates[len(rates) // 2 :]
    ratios: dict[str, dict] = {}
    worst_early: dict[tuple[float, float], float] = {}
    worst_final: dict[tuple[float, float], float] = {}
    for b1 in cfg.b1s:
        for b2 in cfg.b2s:
            r10, rfinal = [], []
            for rate in rates:
                on, off = _point(points, True, b1, b2, rate), _point(points, False, b1, b2, rate)
                r10.append(_ratio(off["loss_10"], on["loss_10"]))
                rfinal.append(_ratio(off["loss_final"], on["loss_final"]))
            ratios[f"b1={b1:g}, b2={b2:g}"] = {
                "b1": b1,
                "b2": b2,
                "log10_rate": [math.log10(r) for r in rates],
                "ratio_10": r10,
                "ratio_final": rfinal,
            }
            worst_early[b1, b2] = _worst([r for r, a in zip(r10, rates, strict=True) if a in large])
            worst_final[b1, b2] = _worst(
                [r for r, a in zip(rfinal, rates, strict=True) if a in large]
            )
    b2_max = max(cfg.b2s)
    unstable = all(worst_early[b1, b2_max] > WORSE for b1 in cfg.b1s)
    all_ratios = [
        r for v in ratios.values() for r in v["ratio_10"] + v["ratio_final"] if not math.isnan(r)
    ]
    never_hurts = all(r >= 1.0 / WORSE for r in all_ratios)
    b2s = sorted(cfg.b2s)
    grows = all(
        worst_early[b1, hi] >= worst_early[b1, lo] / WORSE
        for b1 in cfg.b1s
        for lo, hi in zip(b2s[:-1], b2s[1:], strict=True)
        if not (math.isnan(worst_early[b1, hi]) or math.isnan(worst_early[b1, lo]))
    )
    stronger_early = None
    if epochs_done > EARLY_EPOCHS:
        stronger_early = all(
            worst_early[b1, b2_max] >= worst_final[b1, b2_max]
            or (math.isinf(worst_early[b1, b2_max]) and math.isinf(worst_final[b1, b2_max]))
            for b1 in cfg.b1s
        )
    corrected = [p for p in points if p["bias_correction"]]
    reproduced = unstable and never_hurts and stronger_early is not False
    return {
        "large_rates": large,
        "b2_max": b2_max,
        "ratios": ratios,
        "worst_large_rate_ratio_10": {
            f"b1={a:g}, b2={b:g}": v for (a, b), v in worst_early.items()
        },
        "worst_large_rate_ratio_final": {
            f"b1={a:g}, b2={b:g}": v for (a, b), v in worst_final.items()
        },
        "unstable_without_at_large_rates": unstable,
        "correction_never_hurts": never_hurts,
        "grows_with_b2": grows,
        "stronger_early": stronger_early,
        "corrected_all_finite": all(
            math.isfinite(p["loss_10"]) and math.isfinite(p["loss_final"]) for p in corrected
        ),
        "reproduced": reproduced,
        "verdict": "reproduced" if reproduced else "NOT reproduced",
    }


def methods_of(points: list[dict]) -> dict:
    """Per (bias correction, b1, b2): the best rate by the last epoch's loss, and its losses."""
    out: dict[str, dict] = {}
    for p in points:
        name = "Adam" if p["bias_correction"] else "Adam without bias correction"
        key = f"{name}, b1={p['b1']:g}, b2={p['b2']:g}"
        loss = p["loss_final"] if math.isfinite(p["loss_final"]) else math.inf
        best = out.get(key)
        if best is None or loss < best["_loss"]:
            out[key] = {
                "bias_correction": p["bias_correction"],
                "b1": p["b1"],
                "b2": p["b2"],
                "best_rate": p["learning_rate"],
                "loss_10": p["loss_10"],
                "loss_final": p["loss_final"],
                "test_final": p["test_final"],
                "_loss": loss,
            }
    return {k: {f: v for f, v in m.items() if f != "_loss"} for k, m in out.items()}


# ---------------------------------------------------------------------------- output


def _machine() -> str:
    if jax.default_backend() == "cpu":
        from benchmarks.speed import cpu_cores

        return f"{cpu_cores()}-core CPU"
    return jax.devices()[0].device_kind


def plot(ctx: Any, cfg: Config, points: list[dict], epochs_done: int, budget: str) -> None:
    """Fig. 4's layout: rows = after 10 epochs and after the last, columns = beta1."""
    early = min(EARLY_EPOCHS, epochs_done)
    rows = [("loss_10", early)] + ([("loss_final", epochs_done)] if epochs_done > early else [])
    cols = list(cfg.b1s)
    fig, axes = ctx.figure(
        len(rows), len(cols), figsize=(5.5 * len(cols), 4.2 * len(rows)), squeeze=False
    )
    colors = {b2: f"C{i}" for i, b2 in enumerate(sorted(cfg.b2s))}
    finite = [p[k] for p in points for k, _ in rows if math.isfinite(p[k])]
    # a diverged run (non-finite, or above the untrained model's ~784 ln 2) sits on the cap
    cap = max(1000.0, min(max(finite, default=1000.0), 1e4))
    x = np.log10(sorted(cfg.rates))
    for i, (field, epochs) in enumerate(rows):
        for j, b1 in enumerate(cols):
            ax = axes[i, j]
            for b2 in sorted(cfg.b2s):
                for correction, style in ((True, "-"), (False, "--")):
                    y = np.array(
                        [_point(points, correction, b1, b2, r)[field] for r in sorted(cfg.rates)]
                    )
                    over = ~np.isfinite(y) | (y > cap)
                    shown = np.where(over, cap, y)
                    label = f"b2={b2:g}" + ("" if correction else ", no correction")
                    ax.plot(x, shown, style, marker="o", color=colors[b2], label=label)
                    if over.any():
                        ax.plot(x[over], shown[over], "x", color="k", ms=9)
            ax.axhline(cap, color="0.6", lw=0.8, ls=":")
            ax.set_yscale("log")
            ax.set_xlabel("log10(alpha)")
            ax.set_ylabel("loss (negative ELBO, mean of the epoch)")
            ax.set_title(f"beta1 = {b1:g}, after {epochs} epoch{'s' * (epochs != 1)}")
    axes[0, 0].legend(fontsize=7, title="solid: bias correction; x: diverged", title_fontsize=7)
    fig.suptitle(
        f"Adam sec. 6.4 / Fig. 4: VAE on {cfg.data}, bias correction on (solid) vs off "
        f"(dashed)\n{budget} budget: {epochs_done} of the paper's {cfg.paper_epochs} epochs, "
        f"batch {cfg.batch_size}, {len(cfg.seeds)} seed(s), {_machine()}"
    )
    fig.tight_layout()


def print_summary(cfg: Config, points: list[dict], claim: dict, epochs_done: int) -> None:
    early = min(EARLY_EPOCHS, epochs_done)
    print(
        f"\nloss (mean mini-batch negative ELBO of the epoch) with / without bias correction,"
        f" after {early} and {epochs_done} epochs; ratio = without / with"
    )
    for key, r in claim["ratios"].items():
        print(f"  {key}")
        for k, rate in enumerate(sorted(cfg.rates)):
            on = _point(points, True, r["b1"], r["b2"], rate)
            off = _point(points, False, r["b1"], r["b2"], rate)
            print(
                f"    alpha={rate:8.0e}  {early:3d} ep: {on['loss_10']:10.4g} / "
                f"{off['loss_10']:10.4g} (x{r['ratio_10'][k]:.3g})   {epochs_done:3d} ep: "
                f"{on['loss_final']:10.4g} / {off['loss_final']:10.4g} "
                f"(x{r['ratio_final'][k]:.3g})"
            )
    print(
        f"without correction, beta2={claim['b2_max']:g} worse by >{WORSE:g}x at a large rate "
        f"{claim['large_rates']} for every beta1: {claim['unstable_without_at_large_rates']}; "
        f"correction never >{WORSE:g}x worse: {claim['correction_never_hurts']}; "
        f"effect grows with beta2: {claim['grows_with_b2']}; stronger early (10 epochs vs "
        f"last): {claim['stronger_early']}; corrected runs all finite: "
        f"{claim['corrected_all_finite']}"
    )
    print(
        "paper's claim (without bias correction, beta2 near 1 is unstable at large rates and "
        f"early; with it, stable): {claim['verdict']}"
    )


# ---------------------------------------------------------------------------- the CLI


def add_arguments(parser) -> None:
    group = parser.add_argument_group("adam-bias")
    group.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs to reach (default {EARLY_EPOCHS}; the paper: {PAPER_EPOCHS}); resumes "
        "from the checkpoint of a shorter run",
    )
    group.add_argument(
        "--checkpoint-root",
        default=None,
        help="where the sweeps checkpoint (default $OPTAX_SIGNVAR_DATA/adam-bias, i.e. "
        "~/.cache/optax_signvar/adam-bias; smoke runs: none unless given)",
    )
    group.add_argument(
        "--no-checkpoint", action="store_true", help="neither resume nor save a checkpoint"
    )


def config_of(ctx: Any) -> Config:
    base = SMOKE if ctx.smoke else Config()
    epochs = getattr(ctx.args, "epochs", None) or base.epochs
    return dataclasses.replace(base, epochs=epochs, seeds=tuple(ctx.seeds(1)))


def checkpoint_root_of(ctx: Any) -> Path | None:
    if getattr(ctx.args, "no_checkpoint", False):
        return None
    if getattr(ctx.args, "checkpoint_root", None):
        return Path(ctx.args.checkpoint_root)
    return None if ctx.smoke else datasets.data_root() / "adam-bias"


def run(ctx) -> dict:
    cfg = config_of(ctx)
    root = checkpoint_root_of(ctx)
    data_name, arrays = load_arrays(cfg.data)
    per_epoch = arrays[0].shape[0] // cfg.batch_size
    print(
        f"VAE {arrays[0].shape[1]}-{cfg.hidden}-{cfg.latent} on {data_name}: "
        f"{len(cfg.b1s) * len(cfg.b2s) * len(cfg.rates) * len(cfg.seeds)} runs per setting, "
        f"{per_epoch} steps an epoch, to epoch {cfg.epochs} of {cfg.paper_epochs}"
        + (f"; checkpoints under {root}" if root else "")
    )
    results, seconds = {}, {}
    for correction in ctx.progress([True, False], total=2, desc="bias correction"):
        res = train(cfg, correction, arrays, root, progress=not ctx.args.no_progress)
        results[correction] = res
        seconds[SETTINGS[correction]] = {k: round(v, 1) for k, v in res.seconds.items()}
        steps = (len(res.steps) * per_epoch) * len(res.seeds)
        print(
            f"{SETTINGS[correction]}: compile {res.seconds['compile']:.1f} s, train "
            f"{res.seconds['train']:.1f} s this call ({steps} run-steps done in all)"
        )
    epochs_done = min(len(r.steps) for r in results.values())
    budget = "paper" if epochs_done >= PAPER_EPOCHS else "reduced"
    points = points_of(cfg, results)
    claim = claim_check(cfg, points, epochs_done)
    print_summary(cfg, points, claim, epochs_done)
    plot(ctx, cfg, points, epochs_done, budget)
    return {
        "budget": budget,
        "epochs_done": epochs_done,
        "paper_epochs": cfg.paper_epochs,
        "setup": {
            "data": data_name,
            "num_train": int(arrays[0].shape[0]),
            "num_test": int(arrays[2].shape[0]),
            "architecture": f"encoder {arrays[0].shape[1]}-{cfg.hidden} softplus -> mean, "
            f"log-variance ({cfg.latent} each); decoder {cfg.latent}-{cfg.hidden} softplus -> "
            f"{arrays[0].shape[1]} Bernoulli logits",
            "hidden": cfg.hidden,
            "latent": cfg.latent,
            "likelihood": "Bernoulli on the [0, 1] intensities (not binarised)",
            "loss": "negative ELBO per example (summed over pixels, closed-form KL), one "
            "reparameterised sample, mean over the mini-batch",
            "init": f"weights N(0, {INIT_STD:g}^2), biases 0 (Kingma & Welling 2014)",
            "batch_size": cfg.batch_size,
            "steps_per_epoch": per_epoch,
            "grid": cfg.grid(),
            "eps": EPS,
            "seeds": list(cfg.seeds),
            "early_epochs": min(EARLY_EPOCHS, epochs_done),
            "evaluation": "every epoch: negative ELBO with a fixed noise sample on the test "
            f"set and on the first {min(cfg.train_eval_size, arrays[0].shape[0])} training "
            "images; 'loss' = mean mini-batch training loss of the epoch",
            "optimizers": {
                "bias correction": "osv.adam(learning_rate, b1, b2, eps)",
                "no bias correction": "osv.dissect(learning_rate, normalization='rms', b1, "
                "b2, eps, bias_correction=False)",
            },
            "checkpoints": {
                SETTINGS[c]: str(checkpoint_dir(root, cfg, c)) if root else None
                for c in (True, False)
            },
        },
        "seconds": seconds,
        "points": points,
        "methods": methods_of(points),
        "claim": claim,
        "paper_claim_reproduced": claim["reproduced"],
    }
