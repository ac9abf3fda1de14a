"""AMSGrad's online counterexample (Reddi et al., 2018, sec. 3): Adam fails, AMSGrad does not.

The online problem ``f_t(x) = C x`` if ``t mod 3 == 1`` else ``-x`` on ``x in [-1, 1]``
(``t = 1, 2, ...``) has its best fixed point at ``x* = -1`` for ``C > 2``. With Theorem 1's
hyperparameters, ``beta1 = 0``, ``beta2 = 1/(1+C^2)`` and the rate ``a/sqrt(t)``, Adam's
second moment forgets the rare large gradient ``C`` before the next one comes, so the two
``-1`` gradients move ``x`` up more than the ``C`` gradient moves it down: ``x`` drifts to
``+1``, the worst point, and the average regret ``R_T/T`` tends to ``(C-2) 2/3 > 0``.
AMSGrad keeps the max of the second moment, so its steps on the ``-1`` rounds stay small
and ``x -> -1``, ``R_T/T -> 0``.

Both are the package's optimizers in the paper's form (no bias correction):
``dissect(schedule, normalization="rms", b1=0, b2=1/(1+C^2), bias_correction=False)``
for Adam and ``amsgrad(schedule, b1=0, b2=1/(1+C^2), bias_correction=False)`` (Alg. 2) for
AMSGrad, plus ``adam``/``amsgrad`` with their default bias correction, which changes nothing
here. Runs go through :func:`optax_signvar.research.ablate` with ``inputs`` = the round ``t``, the
projection onto ``[-1, 1]`` and the regret loss ``f_t(x) - f_t(-1)``
(:func:`optax_signvar.research.problems.reddi_loss`), so ``mean_loss`` is ``R_t/t``. The start is
``x_1 = 0`` (``--x0``); Adam drifts to ``+1`` even from the optimum ``x_1 = -1``.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

import optax_signvar as osv
from optax_signvar import research
from optax_signvar.research import problems

CS = (3.0, 10.0)


def add_arguments(parser):
    parser.add_argument("--steps", type=int, default=None, help="rounds T")
    parser.add_argument("--rate", type=float, default=0.5, help="a in the rate a/sqrt(t)")
    parser.add_argument("--x0", type=float, default=0.0, help="the start x_1 in [-1, 1]")


def methods(c: float, rate: float) -> dict:
    h = problems.reddi_hyperparameters(c, rate)
    return {
        "Adam": osv.dissect(
            h["learning_rate"],
            normalization="rms",
            b1=h["b1"],
            b2=h["b2"],
            bias_correction=False,
        ),
        "AMSGrad": osv.amsgrad(**h, bias_correction=False),
        "Adam (debiased)": osv.adam(**h),
        "AMSGrad (debiased)": osv.amsgrad(**h),
    }


def run_c(c: float, rate: float, x0: float, steps: int, log_every: int) -> list[dict]:
    """Rows of ablate for one C: every step up to ``log_every``, then every ``log_every``-th.

    Two runs of the same deterministic problem, so the log x axis has its early steps too;
    the short run's rows replace the long run's before step ``log_every``.
    """
    common = dict(
        loss_fn=functools.partial(problems.reddi_loss, c=c),
        init_params=jnp.asarray(x0, jnp.float32),
        project=problems.reddi_project,
        eval_fn=lambda x: {"x": x},
    )
    configs = methods(c, rate)
    long = research.ablate(
        configs, steps=steps, log_every=log_every, inputs=jnp.arange(1, steps + 1), **common
    )
    short_steps = min(log_every, steps)
    short = research.ablate(
        configs, steps=short_steps, inputs=jnp.arange(1, short_steps + 1), **common
    )
    return [r for r in short] + [r for r in long if r["step"] >= short_steps]


def run(ctx):
    steps = ctx.args.steps or ctx.pick(1_000_000, 20_000)
    log_every = ctx.pick(1000, 100)
    rate, x0 = ctx.args.rate, ctx.args.x0
    if not -1.0 <= x0 <= 1.0:
        raise SystemExit("--x0 must lie in [-1, 1]")
    results: dict = {"steps": steps, "rate": rate, "x0": x0, "by_C": {}}
    rows_by_c = {}
    for c in ctx.progress(CS, total=len(CS), desc="C"):
        rows = run_c(c, rate, x0, steps, log_every)
        rows_by_c[c] = rows
        final = {}
        for name in methods(c, rate):
            mine = [r for r in rows if r["config"] == name]
            last = mine[-1]
            final[name] = {
                "x_T": last["x"],
                "average_regret": last["mean_loss"],
                # the mean iterate over the last tenth: x oscillates within a cycle
                "x_mean_last_tenth": float(
                    np.mean([r["x"] for r in mine if r["step"] >= 0.9 * steps])
                ),
            }
        results["by_C"][str(c)] = {
            "beta2": 1.0 / (1.0 + c**2),
            "adam_limit_regret_at_x_eq_1": (c - 2.0) * 2.0 / 3.0,
            "final": final,
        }
        for name, f in final.items():
            print(
                f"C={c:g} {name:20s} x_T={f['x_T']:+.4f}  mean x (last 10%)="
                f"{f['x_mean_last_tenth']:+.4f}  R_T/T={f['average_regret']:.4g}"
            )
        print(f"C={c:g} R_T/T of the point x=+1: (C-2)*2/3 = {(c - 2) * 2 / 3:.4g}")
    ok = all(
        r["final"]["Adam"]["x_mean_last_tenth"] > 0.9
        and r["final"]["AMSGrad"]["x_mean_last_tenth"] < -0.9
        and r["final"]["Adam"]["average_regret"] > 0.5 * r["adam_limit_regret_at_x_eq_1"]
        and r["final"]["AMSGrad"]["average_regret"] < 0.1 * r["adam_limit_regret_at_x_eq_1"]
        for r in results["by_C"].values()
    )
    results["paper_claim_reproduced"] = ok
    print(
        "paper's claim (Adam -> x=+1 with R_T/T bounded away from 0; AMSGrad -> x=-1, "
        "R_T/T -> 0): " + ("reproduced" if ok else "NOT reproduced")
    )

    fig, axes = ctx.figure(2, len(CS), figsize=(5 * len(CS), 6.5), sharex=True)
    for j, c in enumerate(CS):
        for name in methods(c, rate):
            mine = [r for r in rows_by_c[c] if r["config"] == name]
            t = np.array([r["step"] for r in mine]) + 1  # the round t = step + 1
            style = "--" if "debiased" in name else "-"
            axes[0, j].plot(t, [r["x"] for r in mine], style, label=name)
            axes[1, j].plot(t, [r["mean_loss"] for r in mine], style, label=name)
        axes[0, j].set_title(f"C = {c:g}, beta2 = 1/(1+C^2), rate {rate:g}/sqrt(t)")
        axes[0, j].set_ylabel("iterate x_t")
        axes[1, j].set_ylabel("average regret R_t / t")
        axes[1, j].set_yscale("symlog", linthresh=1e-3)
        axes[1, j].set_xlabel("round t")
        for ax in axes[:, j]:
            ax.set_xscale("log")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Reddi et al. (2018), sec. 3: Adam vs AMSGrad on the online counterexample")
    results["curves"] = {
        str(c): {
            name: {
                "t": [r["step"] + 1 for r in rows_by_c[c] if r["config"] == name][::10],
                "x": [r["x"] for r in rows_by_c[c] if r["config"] == name][::10],
                "average_regret": [r["mean_loss"] for r in rows_by_c[c] if r["config"] == name][
                    ::10
                ],
            }
            for name in methods(c, rate)
        }
        for c in CS
    }
    return results
