"""Dissecting Adam sec. 5 on Wilson et al.'s construction: the sign is what hurts generalization.

Wilson et al. (2017, sec. 3.3) build a linearly separable least-squares problem (``n``
samples, label ``+1`` with probability ``p``, features ``y_i, 1, 1`` plus one or five
features unique to the sample; :func:`optax_signvar.research.problems.wilson_data`) on which
``X sign(X^T y) = 4 y``: an iterate that stays proportional to ``sign(X^T y)`` interpolates
the training set but scores ``tau (y + 2) > 0`` on every new sample (its unique features
have weight 0), i.e. predicts the majority class, test accuracy ~ ``p``. Gradient descent
from 0 stays in the row space of ``X`` and converges to the minimum-norm solution, which
classifies new samples right. Wilson et al. show it for adaptive methods; Balles & Hennig
note that it is the *sign* that does it: SSD's and M-SSD's iterates are exactly
``lambda_t sign(X^T y)`` (every full-batch gradient is a multiple of ``X^T y``), Adam's are
up to its ``eps``, while the variance-adapted M-SVAG, like M-SGD and SGD, leaves that line.

Each method is the package's named optimizer (SGD is ``dissect(lr, momentum=False)``), run
full batch from ``w = 0`` with a fixed rate (below; no tuning: the rate changes how fast, not
where, except that a too large sign step oscillates around ``lambda = 1/4``) through
:func:`optax_signvar.research.ablate`, on ``--seeds`` independent draws of the data (train and fresh
test samples; each draw is one ``ablate`` call, as the data live in the loss). Reported per
method: the largest angle over the recorded steps between ``w_t`` and the line through
``sign(X^T y)`` (exact residual, not ``arccos`` of a rounded cosine), the final train loss,
and the test accuracy on fresh samples next to the majority-class baseline.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import optax_signvar as osv
from optax_signvar import research
from optax_signvar.research import problems

# name -> (optimizer of the rate, rate)
METHODS = {
    "SSD": (osv.ssd, 0.01),
    "M-SSD": (osv.m_ssd, 0.01),
    "Adam": (osv.adam, 0.01),
    "SGD": (functools.partial(osv.dissect, momentum=False), 0.1),
    "M-SGD": (osv.m_sgd, 0.1),
    "M-SVAG": (osv.m_svag, 0.1),
}
SIGN_METHODS = ("SSD", "M-SSD", "Adam")


def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=None, help="full-batch steps")
    parser.add_argument("--n", type=int, default=50, help="training samples")
    parser.add_argument("--p", type=float, default=7 / 8, help="probability of the label +1")
    parser.add_argument(
        "--num-test", type=int, default=None, help="fresh test samples (500; smoke: 100)"
    )


def geometry(w: jax.Array, s: jax.Array) -> dict[str, jax.Array]:
    """How far w is from the line through s = sign(X^T y); NaN where w = 0.

    ``cos``: the cosine; ``angle_deg``: the angle to the line, from the residual (an
    ``arccos`` of a cosine rounded to 1 would say 0.02 degrees for an exact multiple);
    ``spread``: ``(max_i w_i s_i - min_i w_i s_i over s_i != 0 + max |w_i| over s_i = 0) /
    max |w|``, exactly 0 if and only if w is exactly a multiple of s.
    """
    s_hat = s / jnp.linalg.norm(s)
    along = w @ s_hat
    residual = jnp.linalg.norm(w - along * s_hat)
    norm = jnp.linalg.norm(w)
    nonzero = norm > 0
    on = s != 0
    ws = w * s
    spread = (
        jnp.max(jnp.where(on, ws, -jnp.inf))
        - jnp.min(jnp.where(on, ws, jnp.inf))
        + jnp.max(jnp.where(on, 0.0, jnp.abs(w)))
    )
    return {
        "cos": jnp.where(nonzero, along / jnp.where(nonzero, norm, 1.0), jnp.nan),
        "angle_deg": jnp.where(
            nonzero, jnp.degrees(jnp.arctan2(residual, jnp.abs(along))), jnp.nan
        ),
        "spread": jnp.where(
            nonzero, spread / jnp.where(nonzero, jnp.max(jnp.abs(w)), 1.0), jnp.nan
        ),
    }


def run_seed(seed: int, n: int, p: float, num_test: int, steps: int, log_every: int):
    data = problems.wilson_data(jax.random.key(seed), n, num_test, p)
    x, y = data.x_train, data.y_train
    s = jnp.sign(x.T @ y)
    identity = float(jnp.max(jnp.abs(x @ s - 4 * y)))  # X sign(X^T y) = 4 y needs sum(y) > 0

    def eval_fn(w):
        return {
            "test_acc": problems.sign_accuracy(w, data.x_test, data.y_test),
            "train_acc": problems.sign_accuracy(w, x, y),
            **geometry(w, s),
        }

    rows = research.ablate(
        {name: make(rate) for name, (make, rate) in METHODS.items()},
        lambda w, _: problems.least_squares_loss(w, x, y),
        jnp.zeros(x.shape[1]),
        steps=steps,
        log_every=log_every,
        eval_fn=eval_fn,
    )
    for r in rows:
        r["seed"] = seed  # ablate's seed is the (unused) step key; the data seed is ours
    majority = float(jnp.mean(data.y_test == (1.0 if float(y.sum()) >= 0 else -1.0)))
    return rows, {
        "identity_max_error": identity,
        "train_label_sum": float(y.sum()),
        "test_majority_fraction": majority,
    }


def run(ctx):
    steps = ctx.args.steps or ctx.pick(1000, 200)
    n, p = ctx.args.n, ctx.args.p
    num_test = ctx.args.num_test or ctx.pick(500, 100)
    seeds = ctx.seeds(5, smoke=1)
    rows: list[dict] = []
    per_seed = {}
    for seed in ctx.progress(seeds, total=len(seeds), desc="data draws"):
        r, info = run_seed(seed, n, p, num_test, steps, log_every=1)
        rows += r
        per_seed[seed] = info

    def column(name, key, at=None):
        mine = [r for r in rows if r["config"] == name]
        if at == "last":
            last = max(r["step"] for r in mine)
            mine = [r for r in mine if r["step"] == last]
        return np.array([r[key] for r in mine], dtype=np.float64)

    table = {}
    print(
        f"{'method':8s} {'rate':>6s} {'max angle to sign(X^T y)':>25s} {'max spread':>10s} "
        f"{'final cos':>10s} "
        f"{'train loss':>11s} {'train acc':>9s} {'test acc':>9s}"
    )
    for name, (_, rate) in METHODS.items():
        angles = column(name, "angle_deg")
        entry = {
            "rate": rate,
            "max_angle_deg": float(np.nanmax(angles)),
            "max_spread": float(np.nanmax(column(name, "spread"))),
            "final_cos_mean": float(np.mean(column(name, "cos", "last"))),
            "final_train_loss_mean": float(np.mean(column(name, "loss", "last"))),
            "final_train_acc_mean": float(np.mean(column(name, "train_acc", "last"))),
            "final_test_acc_mean": float(np.mean(column(name, "test_acc", "last"))),
            "final_test_acc_std": float(np.std(column(name, "test_acc", "last"))),
        }
        table[name] = entry
        print(
            f"{name:8s} {rate:6g} {entry['max_angle_deg']:21.3g} deg "
            f"{entry['max_spread']:10.3g} "
            f"{entry['final_cos_mean']:10.4f} {entry['final_train_loss_mean']:11.3g} "
            f"{entry['final_train_acc_mean']:9.3f} {entry['final_test_acc_mean']:9.3f}"
        )
    baseline = float(np.mean([v["test_majority_fraction"] for v in per_seed.values()]))
    identity = max(v["identity_max_error"] for v in per_seed.values())
    print(f"majority-class baseline on the test samples: {baseline:.3f} (p = {p:g})")
    print(f"max |X sign(X^T y) - 4 y| over the data draws: {identity:g}")
    sign_ok = all(table[m]["max_angle_deg"] < 0.1 for m in SIGN_METHODS)
    others_leave = all(table[m]["max_angle_deg"] > 10 for m in METHODS if m not in SIGN_METHODS)
    generalize = all(
        abs(table[m]["final_test_acc_mean"] - baseline) < 0.02 for m in SIGN_METHODS
    ) and all(table[m]["final_test_acc_mean"] > baseline + 0.05 for m in ("SGD", "M-SGD", "M-SVAG"))
    claim = sign_ok and others_leave and generalize
    print("(spread 0: w_t is exactly a multiple of sign(X^T y) at every recorded step)")
    print(
        "claim (sign methods and Adam stay on the line through sign(X^T y) and predict the "
        "majority class; M-SGD, SGD, M-SVAG leave it; SGD, M-SGD, M-SVAG generalize): "
        + ("reproduced" if claim else "NOT reproduced")
    )

    fig, axes = ctx.figure(1, 2, figsize=(11, 4))
    for name in METHODS:
        summary = {
            k: research.summarize([r for r in rows if r["config"] == name], value=k)
            for k in ("test_acc", "cos")
        }
        t = np.array([s["step"] for s in summary["test_acc"]])
        style = "-" if name in SIGN_METHODS else "--"
        axes[0].plot(t, [s["mean"] for s in summary["test_acc"]], style, label=name)
        axes[1].plot(t, [s["mean"] for s in summary["cos"]], style, label=name)
    axes[0].axhline(baseline, color="gray", lw=0.8, ls=":", label="majority class")
    axes[0].set_ylabel("test accuracy (fresh samples)")
    axes[1].set_ylabel("cos(w_t, sign(X^T y))")
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Wilson et al.'s construction (n={n}, p={p:g}, {len(seeds)} data draws): "
        "sign methods keep w proportional to sign(X^T y)",
        fontsize=10,
    )
    return {
        "steps": steps,
        "n": n,
        "p": p,
        "num_test": num_test,
        "seeds": seeds,
        "majority_baseline": baseline,
        "identity_max_error": identity,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "methods": table,
        "paper_claim_reproduced": claim,
    }
