"""AdaBound's sec. 3 (Luo et al., 2019): extreme per-element rates, and an online problem where
they make Adam fail and AdaBound's bounds do not.

**(a) The online example** (the paper's p. 4, the construction behind its Theorem 1). The repo
has only a summary of the paper, so the construction below is *our reading* of it (from the
original, from memory): rounds ``t = 1, 2, ...`` of linear losses on ``x in [0, 1]``,

    ``f_t(x) = -x`` if ``t mod C == 1``, ``2x`` if ``t mod C == 2``, ``0`` otherwise,

so once every ``C`` rounds the gradient is ``-1`` (the wrong direction) and the round after it
``2``, 0 in between; the sum over a period is ``x``, the best fixed point is ``x* = 0`` and the
regret of a round is ``f_t(x_t) - f_t(0) = f_t(x_t)`` (x = 1 costs ``1/C`` per round). With
``beta1 = 0`` and the rate ``alpha/sqrt(t)``, Adam's second moment has decayed over the ``C - 2``
zeros, so at the ``-1`` round ``v`` is about ``1 - beta2`` and the step is large; at the ``2``
round ``v`` holds the 4 and the step is less than half as large per unit of gradient: if
``5 beta2^(C-2) <= (1 - beta2)/(4 - beta2)`` the ``-1`` round moves ``x`` up more than the ``2``
round moves it down, and ``x`` drifts to 1, the worst point, with average regret ``-> 1/C``.
We take ``beta2 = 0.99`` and the smallest such ``C`` (730); both are printed and stored.

The paper writes the losses on the real line with ``f_t(x) = -100 x`` for ``x < 0`` and
``f_t(x) = 0`` for ``x > 1``; we use the projection onto ``[0, 1]`` instead (a clip, as in
AMSGrad's counterexample, :mod:`benchmarks.reproduce.reddi`): taken literally the pieces leave
an iterate above 1 at zero loss for good (no gradient brings it back and every round's regret
there is 0), while the projected problem is a plain online convex problem with the same
gradients inside ``[0, 1]``.

Methods, all ``b1 = 0``, ``b2 = 0.99`` and the schedule ``alpha / sqrt(t)`` (``--alpha``,
default 2), through :func:`optax_signvar.research.ablate` from ``x_1 = 0.5`` (``--x0``):
Adam in the paper's form (``dissect(..., normalization="rms", bias_correction=False)``), Adam
with its bias correction (``osv.adam``), AMSGrad (paper's form, for reference) and AdaBound
(``osv.adabound`` with the same schedule as its ``learning_rate``, ``final_lr = alpha`` and
``gamma = 1e-4``). AdaBound's bounds are ``final_lr (1 - 1/(gamma t + 1))`` and
``final_lr (1 + 1/(gamma t))`` times ``a_t / a_0``, so they close in on SGD's ``alpha/sqrt(t)``;
they bite once the upper bound falls below Adam's rate at the ``-1`` rounds (about
``alpha/(sqrt(t) sqrt(1 - beta2))``, ten times SGD's), ``gamma t > 1/9``: here from the second
period's ``-1`` round (t = 1,461) on. From then on the ``-1`` round moves ``x`` up less than
the ``2`` round moves it down, and AdaBound, SGD-like, stays at ``x* = 0`` (x > 0 only for the
one round between a ``-1`` and the next ``2``). Reported per method: ``x_T``, the mean ``x``
over the last tenth of the rounds (x oscillates within a period), and the average regret
``R_T/T``. ``alpha = 1`` works too but needs ~10^6 rounds for Adam to get within 0.01 of 1
(at 10^5 rounds it is at 0.84).

**(b) Fig. 1's extreme rates.** The paper samples Adam's per-element rates for ResNet-34 on
CIFAR-10, one element from each of 9 3x3 convolution kernels of different layers and one bias
of the last linear layer, and finds, close to convergence, tiny rates (< 0.01) next to huge
ones (> 1000). Here: one run of Adam (rate 1e-3, ``osv.adam``'s defaults) and one of AdaBound
(``osv.adabound``, rate 1e-3, final_lr 0.1, gamma = 78 / steps, the ``adabound`` experiment's
``gamma * T``), seed 0, constant rate, on the ``adabound`` experiment's substitute problem
at its CPU budget: Fashion-MNIST (20,000 training images, batches of 32, 300 steps) and a
WRN-10-1 with 8 stem channels and GroupNorm (:data:`benchmarks.reproduce.adabound.NET`); the
paper's CIFAR-10, ResNet-34 and 200 epochs are not available here (see
:data:`benchmarks.reproduce.adabound.SUBSTITUTION`). Its 7 3x3 convolution layers give the 9
kernels (the stem and the second group's first convolution two each, the others one:
:func:`sample_parameters`, seeded). At 16 steps over training we record the per-element
rate ``r = a_t / ((1 - b1^t) (sqrt(v_hat_t) + eps))`` (the factor the update applies to
``m_t``, Adam's bias corrections folded in as the paper's code folds them; AdaBound's: the rate
after the clip into its bounds) of the 10 sampled parameters, and over all parameters the
quantiles (1, 10, 50, 90, 99%), extremes and the shares below 0.01 and above 1000, from
:func:`optax_signvar.diagnostics` with ``rates=True`` (its ``rate_*`` keys; AdaBound's
``bounded_rate_*``). Figure: the 10 x 16 heat maps (log colour scale) for both, the quantiles
and the shares over training, and (a)'s iterate and regret.

Budget. (a) 10^6 rounds (smoke 10^5), seconds. (b) the CPU budget above (smoke: sklearn's
digits, a one-stage WRN, 20 steps), about a minute on 2 CPU cores in all.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optax_signvar as osv
from benchmarks.reproduce import adabound, images
from optax_signvar import blocks, research

# (a) the online problem
ONLINE_B2 = 0.99
ONLINE_ALPHA = 2.0
ONLINE_GAMMA = 1e-4
ONLINE_X0 = 0.5

# (b) the rates
DEFAULT = dataclasses.replace(adabound.DEFAULT, records=16)
SMOKE = dataclasses.replace(adabound.SMOKE, records=5)
RATE = 1e-3
FINAL_LR = 0.1
QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)
THRESHOLDS = (0.01, 1000.0)  # the paper's "tiny" and "huge" rates
N_KERNELS = 9
PANELS = (("Adam", "", "C0"), ("AdaBound", "bounded_", "C3"))  # name, key prefix, colour


def add_arguments(parser) -> None:
    group = parser.add_argument_group("(a) the online problem")
    group.add_argument("--rounds", type=int, default=None, help="rounds T (10^6; smoke 10^5)")
    group.add_argument(
        "--alpha", type=float, default=ONLINE_ALPHA, help="alpha of the rate alpha/sqrt(t)"
    )
    group.add_argument("--b2", type=float, default=ONLINE_B2, help="beta2 (C follows from it)")
    group.add_argument(
        "--gamma", type=float, default=ONLINE_GAMMA, help="AdaBound's gamma (final_lr = alpha)"
    )
    group.add_argument("--x0", type=float, default=ONLINE_X0, help="the start x_1 in [0, 1]")
    group = parser.add_argument_group("(b) the per-element rates")
    group.add_argument("--steps", type=int, default=None, help=f"steps ({DEFAULT.steps})")
    group.add_argument(
        "--records", type=int, default=None, help=f"steps recorded ({DEFAULT.records})"
    )
    group.add_argument("--rate", type=float, default=RATE, help="Adam's and AdaBound's rate")


# --------------------------------------------------------------------------- #
# (a) The online problem.
# --------------------------------------------------------------------------- #


def smallest_c(b2: float) -> int:
    """The smallest period ``C >= 3`` with ``5 b2^(C-2) <= (1 - b2) / (4 - b2)``."""
    if not 0.0 <= b2 < 1.0:
        raise ValueError(f"beta2 must be in [0, 1), got {b2!r}")
    c = 3
    while 5.0 * b2 ** (c - 2) > (1.0 - b2) / (4.0 - b2):
        c += 1
    return c


def online_gradient(t: jax.Array, c: int) -> jax.Array:
    """The gradient of round ``t`` (1-based) inside ``[0, 1]``: -1, then 2, then C - 2 zeros."""
    r = jnp.asarray(t) % c
    return jnp.where(r == 1, -1.0, jnp.where(r == 2, 2.0, 0.0)).astype(jnp.float32)


def online_loss(x: jax.Array, t: jax.Array, c: int) -> jax.Array:
    """The regret term ``f_t(x) - f_t(0) = f_t(x)`` of round ``t`` (``x* = 0``, ``f_t(0) = 0``),
    so ablate's ``mean_loss`` is the average regret ``R_t / t``."""
    return online_gradient(t, c) * x


def online_project(x: jax.Array) -> jax.Array:
    """The projection onto the feasible set ``[0, 1]``."""
    return jnp.clip(x, 0.0, 1.0)


def sqrt_decay(alpha: float) -> Any:
    """``alpha / sqrt(t)`` as an optax schedule of the 0-based count (``t = count + 1``)."""

    def schedule(count: Any) -> jax.Array:
        return alpha / jnp.sqrt(jnp.asarray(count).astype(jnp.float32) + 1.0)

    return schedule


def online_methods(alpha: float, b2: float, gamma: float) -> dict[str, Any]:
    """Adam (paper's and debiased), AMSGrad and AdaBound with ``b1 = 0`` and ``alpha/sqrt(t)``."""
    lr = sqrt_decay(alpha)
    return {
        "Adam": osv.dissect(lr, normalization="rms", b1=0.0, b2=b2, bias_correction=False),
        "Adam (debiased)": osv.adam(lr, b1=0.0, b2=b2),
        "AMSGrad": osv.amsgrad(lr, b1=0.0, b2=b2, bias_correction=False),
        "AdaBound": osv.adabound(lr, final_lr=alpha, b1=0.0, b2=b2, gamma=gamma),
    }


def run_online(
    alpha: float, b2: float, gamma: float, x0: float, rounds: int, log_every: int
) -> tuple[int, list[dict]]:
    """The period ``C`` and ablate's rows (column ``x``: the iterate of round ``step + 1``):
    every round up to ``log_every``, then every ``log_every``-th.

    Two runs of the same deterministic problem, so the log axis has its early rounds too; the
    short run's rows replace the long run's before round ``log_every`` (as in
    :func:`benchmarks.reproduce.reddi.run_c`).
    """
    c = smallest_c(b2)
    common: dict[str, Any] = dict(
        loss_fn=functools.partial(online_loss, c=c),
        init_params=jnp.asarray(x0, jnp.float32),
        project=online_project,
        eval_fn=lambda x: {"x": x},
    )
    configs = online_methods(alpha, b2, gamma)
    long = research.ablate(
        configs, steps=rounds, log_every=log_every, inputs=jnp.arange(1, rounds + 1), **common
    )
    n = min(log_every, rounds)
    short = research.ablate(configs, steps=n, inputs=jnp.arange(1, n + 1), **common)
    return c, short + [r for r in long if r["step"] >= n]


def online_part(ctx) -> tuple[dict, dict]:
    args = ctx.args
    rounds = args.rounds or ctx.pick(1_000_000, 100_000)
    if rounds < 10:
        raise SystemExit("--rounds must be at least 10")
    if not 0.0 <= args.x0 <= 1.0:
        raise SystemExit("--x0 must lie in [0, 1]")
    if not 0.0 <= args.b2 < 1.0 or not 0.0 <= args.gamma < 1.0 or args.alpha <= 0:
        raise SystemExit("--b2 and --gamma must lie in [0, 1), --alpha must be positive")
    log_every = max(1, rounds // 1000)
    c, rows = run_online(args.alpha, args.b2, args.gamma, args.x0, rounds, log_every)
    lhs, rhs = 5.0 * args.b2 ** (c - 2), (1.0 - args.b2) / (4.0 - args.b2)
    print(
        f"(a) beta2 = {args.b2:g}, C = {c} (the smallest with 5 beta2^(C-2) = {lhs:.5g} <= "
        f"(1-beta2)/(4-beta2) = {rhs:.5g}), rate {args.alpha:g}/sqrt(t), x_1 = {args.x0:g}, "
        f"T = {rounds:,}; AdaBound final_lr {args.alpha:g}, gamma {args.gamma:g}"
    )
    by_method = {}
    final = {}
    for name in online_methods(args.alpha, args.b2, args.gamma):
        mine = [r for r in rows if r["config"] == name]
        by_method[name] = mine
        final[name] = {
            "x_T": mine[-1]["x"],
            "x_mean_last_tenth": float(
                np.mean([r["x"] for r in mine if r["step"] >= 0.9 * rounds])
            ),
            "average_regret": mine[-1]["mean_loss"],
        }
        f = final[name]
        print(
            f"  {name:16s} x_T={f['x_T']:.4f}  mean x (last 10%)={f['x_mean_last_tenth']:.4f}"
            f"  R_T/T={f['average_regret']:.3g}  (x=1: 1/C = {1 / c:.3g})"
        )
    adam, bound = final["Adam"], final["AdaBound"]
    ok = (
        adam["x_mean_last_tenth"] > 0.9
        and adam["average_regret"] > 0.5 / c
        and bound["x_mean_last_tenth"] < 0.1
        and bound["average_regret"] < 0.1 / c
    )
    out = {
        "rounds": rounds,
        "beta1": 0.0,
        "beta2": args.b2,
        "C": c,
        "condition": {"5 beta2^(C-2)": lhs, "(1-beta2)/(4-beta2)": rhs},
        "alpha": args.alpha,
        "adabound": {"final_lr": args.alpha, "gamma": args.gamma},
        "x0": args.x0,
        "projection": "[0, 1]",
        "regret_per_round_at_x_eq_1": 1.0 / c,
        "final": final,
        "paper_claim_reproduced": ok,
        "curves": {
            name: {
                "t": [r["step"] + 1 for r in mine][::10],
                "x": [r["x"] for r in mine][::10],
                "average_regret": [r["mean_loss"] for r in mine][::10],
            }
            for name, mine in by_method.items()
        },
    }
    print(
        "  claim (Adam -> x=1 with R_T/T ~ 1/C; AdaBound -> x*=0 with R_T/T -> 0): "
        + ("reproduced" if ok else "NOT reproduced")
    )
    return out, by_method


# --------------------------------------------------------------------------- #
# (b) The per-element rates of a network.
# --------------------------------------------------------------------------- #


def sample_parameters(params: Any, n_kernels: int = N_KERNELS, seed: int = 0) -> list[dict]:
    """One element of each of ``n_kernels`` 3x3 kernels from different convolution layers,
    and one bias of the last dense layer (``head/b``).

    The layers in the order of the network (stem first); kernel ``i`` comes from layer
    ``floor(i L / n_kernels)`` of the ``L`` layers, so every layer gives one when there are at
    least ``n_kernels`` and the first ones more otherwise; within the layer a random
    (output, input) channel pair not drawn yet and a random one of its 9 positions. Each entry:
    ``{"label", "leaf" (index into jax.tree.leaves), "index" (into the flattened leaf)}``.
    """
    rng = np.random.default_rng(seed)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in flat]
    convs = [i for i, (_, x) in enumerate(flat) if x.ndim == 4 and tuple(x.shape[:2]) == (3, 3)]
    convs.sort(key=lambda i: (not names[i].startswith("stem"), names[i]))
    if not convs:
        raise ValueError("no 3x3 convolution in the network")
    picks, taken = [], set()
    for k in range(n_kernels):
        leaf = convs[k * len(convs) // n_kernels]
        shape = flat[leaf][1].shape
        while True:
            pair = (int(rng.integers(shape[2])), int(rng.integers(shape[3])))
            if (leaf, pair) not in taken or len(taken) >= shape[2] * shape[3]:
                break
        taken.add((leaf, pair))
        pos = (int(rng.integers(3)), int(rng.integers(3)))
        index = int(np.ravel_multi_index((*pos, *pair), shape))
        label = f"{names[leaf].removesuffix('/w')}[{pos[0]},{pos[1]},{pair[0]},{pair[1]}]"
        picks.append({"label": label, "leaf": leaf, "index": index})
    (head,) = [i for i, n in enumerate(names) if n == "head/b"]
    j = int(rng.integers(flat[head][1].size))
    picks.append({"label": f"head/b[{j}]", "leaf": head, "index": j})
    return picks


def rate_stats(
    opt: Any, picks: list[dict], rate: float, b1: float, b2: float, eps: float, bounded: bool
) -> Any:
    """``stats(state)`` for :func:`benchmarks.reproduce.adabound.record_training`: the
    diagnostics' rate keys and the sampled parameters' rates (``"sampled"``), formed as
    :func:`optax_signvar.diagnostics` forms them (AdaBound's: after the clip)."""

    def stats(state: Any) -> dict[str, jax.Array]:
        d = osv.diagnostics(
            state,
            opt,
            rates=True,
            quantiles=QUANTILES,
            rate_thresholds=THRESHOLDS,
            max_coordinates=None,
        )
        found = adabound.dissected(state)
        second = jax.tree.leaves(found.nu_max if found.nu_max is not None else found.nu)
        v = jnp.stack([second[p["leaf"]].reshape(-1)[p["index"]] for p in picks])
        t = found.count
        if bounded:  # AdaBound: a_t clip(sqrt(1 - b2^t) / ((1 - b1^t)(sqrt(v) + eps)), bounds)
            r = rate * blocks.adaptive_rate(v, eps, blocks.adabound_step(b1, b2, t))
            r = jnp.clip(r, d["lower_bound"], d["upper_bound"])
        else:  # Adam: a_t / ((1 - b1^t)(sqrt(v_hat) + eps))
            vh = blocks.bias_correction(v, blocks.debias_denominator(b2, t))
            r = rate * blocks.adaptive_rate(vh, eps, 1.0 / blocks.debias_denominator(b1, t))
        keep = {k: x for k, x in d.items() if "rate" in k or k.endswith("_bound")}
        return keep | {"sampled": r}

    return stats


def rates_part(ctx) -> dict:
    args = ctx.args
    scale = dataclasses.replace(
        ctx.pick(DEFAULT, SMOKE),
        **{k: v for k, v in (("steps", args.steps), ("records", args.records)) if v is not None},
    )
    if scale.steps < 2 or scale.records < 2 or args.rate <= 0:
        raise SystemExit("--steps and --records must be at least 2, --rate positive")
    net = images.resnet_of(ctx, adabound.NET, adabound.SMOKE_NET)
    ds = images.load_data(ctx, "fashion_mnist")
    problem = images.scaled_problem(ds, net, scale)
    gamma = min(adabound.PAPER_GAMMA_T / scale.steps, 0.5)
    b1, b2, eps = adabound.B1, adabound.B2, adabound.EPS
    methods = {
        "Adam": (osv.adam(args.rate, b1=b1, b2=b2, eps=eps), False),
        "AdaBound": (
            osv.adabound(args.rate, final_lr=FINAL_LR, b1=b1, b2=b2, eps=eps, gamma=gamma),
            True,
        ),
    }
    picks = sample_parameters(jax.eval_shape(net.init, jax.random.key(0)))
    logged = np.unique(np.linspace(0, scale.steps - 1, scale.records).round().astype(int))
    print(
        f"\n(b) {ds.name}, {net.name} with GroupNorm ({problem.n_params:,} parameters), "
        f"sizes {problem.sizes}, {scale.steps} steps, rate {args.rate:g}, seed 0; AdaBound "
        f"final_lr {FINAL_LR:g}, gamma {gamma:.3g}"
        + ("" if ctx.smoke else f"\n    substitute: {adabound.SUBSTITUTION}")
    )
    traces, accuracy = {}, {}
    evaluate = jax.jit(problem.eval_fn)
    for name, (opt, bounded) in ctx.progress(methods.items(), total=2, desc="rates"):
        stats = rate_stats(opt, picks, args.rate, b1, b2, eps, bounded)
        params, loss, trace = adabound.record_training(problem, opt, stats, scale.steps, logged)
        traces[name] = trace | {"loss": loss}
        accuracy[name] = {k: float(v) for k, v in evaluate(params).items()}
    low, high = (f"{x:g}" for x in THRESHOLDS)
    summary = {}
    for name, (_, bounded) in methods.items():
        p = "bounded_" if bounded else ""
        tr = traces[name]
        print(f"  {name} ({'rates after the clip' if bounded else 'per-element rates'}):")
        print(
            "    "
            + " ".join(f"{h:>9s}" for h in ("t", "min", "q1", "q50", "q99", "max"))
            + f"  <{low}  >{high}"
        )
        for i, s in enumerate(logged):
            q = [tr[f"{p}rate_{k}"][i] for k in ("min", "q1", "q50", "q99", "max")]
            print(
                f"    {s + 1:9d} "
                + " ".join(f"{x:9.3g}" for x in q)
                + f"  {100 * tr[f'{p}rate_below_{low}'][i]:5.1f}%"
                f"  {100 * tr[f'{p}rate_above_{high}'][i]:5.2f}%"
            )
        summary[name] = {
            "final_below": float(tr[f"{p}rate_below_{low}"][-1]),
            "final_above": float(tr[f"{p}rate_above_{high}"][-1]),
            "final_min": float(tr[f"{p}rate_min"][-1]),
            "final_max": float(tr[f"{p}rate_max"][-1]),
            # the spread of the rates over the parameters: the paper's extremes are 1e5 apart
            "final_max_over_min": float(tr[f"{p}rate_max"][-1] / tr[f"{p}rate_min"][-1]),
            "final_q99_over_q1": float(tr[f"{p}rate_q99"][-1] / tr[f"{p}rate_q1"][-1]),
            "max_share_below_over_training": float(np.max(tr[f"{p}rate_below_{low}"])),
            "max_share_above_over_training": float(np.max(tr[f"{p}rate_above_{high}"])),
            "test_acc": accuracy[name]["test_acc"],
            "test_loss": accuracy[name]["test_loss"],
        }
        print(
            f"    final test accuracy {accuracy[name]['test_acc']:.4f}; at the end "
            f"{100 * summary[name]['final_below']:.1f}% of the rates < {low}, "
            f"{100 * summary[name]['final_above']:.2f}% > {high}; max/min "
            f"{summary[name]['final_max_over_min']:.3g} (the paper's {high}/{low}: 1e5)"
        )
    return {
        "data": ds.name,
        "net": net.name + " (GroupNorm)",
        "substitution": adabound.SUBSTITUTION + " (paper: CIFAR-10, ResNet-34, 200 epochs)",
        "budget": "CPU: "
        + ", ".join(f"{k} {v}" for k, v in problem.sizes.items())
        + f", {scale.steps} steps (not the paper's 78,200)",
        "n_params": problem.n_params,
        "steps": scale.steps,
        "rate": args.rate,
        "adabound": {"final_lr": FINAL_LR, "gamma": gamma},
        "seed": 0,
        "rate_definition": "a_t / ((1 - b1^t)(sqrt(v_hat_t) + eps)), the factor on m_t; "
        "AdaBound: a_t sqrt(1 - b2^t) / ((1 - b1^t)(sqrt(v_t) + eps)) clipped into its bounds",
        "quantiles": list(QUANTILES),
        "thresholds": list(THRESHOLDS),
        "sampled": [p["label"] for p in picks],
        "recorded_t": (logged + 1).tolist(),
        "summary": summary,
        "traces": {k: {n: v for n, v in tr.items()} for k, tr in traces.items()},
    }


# --------------------------------------------------------------------------- #
# The figure and the run.
# --------------------------------------------------------------------------- #


def plot(ctx, online: dict, by_method: dict, rates: dict) -> None:
    from matplotlib.colors import LogNorm

    fig, axes = ctx.figure(2, 3, figsize=(18, 9.5))
    c = online["C"]
    for name, mine in by_method.items():
        t = np.array([r["step"] for r in mine]) + 1
        style = "--" if "debiased" in name else "-"
        axes[0, 0].plot(t, [r["x"] for r in mine], style, label=name)
        regret = np.array([r["mean_loss"] for r in mine])
        axes[1, 0].plot(t[t >= 2], regret[t >= 2], style, label=name)
    axes[1, 0].axhline(1.0 / c, color="k", lw=0.8, ls=":", label="x = 1: 1/C")
    axes[0, 0].set_title(
        f"(a) online example: C = {c}, beta1 = 0, beta2 = {online['beta2']:g}, "
        f"rate {online['alpha']:g}/sqrt(t)",
        fontsize=9,
    )
    axes[0, 0].set_ylabel("iterate x_t (optimum x* = 0)")
    axes[1, 0].set_ylabel("average regret R_t / t")
    axes[1, 0].set_yscale("log")  # R_t / t > 0 from round 2 on
    for ax in axes[:, 0]:
        ax.set_xscale("log")
        ax.set_xlabel("round t")
        ax.legend(fontsize=7)

    tr = rates["traces"]
    t_rec = np.array(rates["recorded_t"])
    maps = {"Adam": tr["Adam"]["sampled"].T, "AdaBound": tr["AdaBound"]["sampled"].T}
    finite = np.concatenate([m[np.isfinite(m) & (m > 0)] for m in maps.values()])
    norm = LogNorm(vmin=float(finite.min()), vmax=float(finite.max()))
    for ax, (name, m) in zip((axes[0, 1], axes[1, 1]), maps.items(), strict=True):
        im = ax.imshow(m, aspect="auto", cmap="viridis", norm=norm)
        ax.set_yticks(range(len(rates["sampled"])), rates["sampled"], fontsize=6)
        ax.set_xticks(range(len(t_rec)), [str(x) for x in t_rec], fontsize=6, rotation=90)
        ax.set_xlabel("update t")
        which = "clipped rate" if name == "AdaBound" else "rate"
        ax.set_title(
            f"{name}: per-element {which} of 10 sampled parameters (log10 in cells)", fontsize=9
        )
        for (i, j), value in np.ndenumerate(m):
            if value > 0 and np.isfinite(value):
                ax.text(
                    j,
                    i,
                    f"{np.log10(value):.1f}",
                    ha="center",
                    va="center",
                    fontsize=4.5,
                    color="w",
                )
        fig.colorbar(im, ax=ax, fraction=0.04)

    ax = axes[0, 2]
    low, high = (f"{x:g}" for x in THRESHOLDS)
    for name, prefix, color in PANELS:
        d = tr[name]
        for lo, hi, alpha in ((1, 99, 0.12), (10, 90, 0.25)):
            ax.fill_between(
                t_rec,
                d[f"{prefix}rate_q{lo}"],
                d[f"{prefix}rate_q{hi}"],
                color=color,
                alpha=alpha,
                label=f"{name} {lo}-{hi}%",
            )
        ax.plot(t_rec, d[f"{prefix}rate_q50"], "-", color=color, label=f"{name} median")
        ax.plot(t_rec, d[f"{prefix}rate_min"], ":", color=color, label=f"{name} min / max")
        ax.plot(t_rec, d[f"{prefix}rate_max"], ":", color=color)
    ax.plot(t_rec, tr["AdaBound"]["lower_bound"], "k--", lw=0.8, label="AdaBound's bounds")
    ax.plot(t_rec, tr["AdaBound"]["upper_bound"], "k--", lw=0.8)
    for y in THRESHOLDS:
        ax.axhline(y, color="gray", lw=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("update t")
    ax.set_ylabel("per-element rate")
    ax.set_title(
        f"(b) quantiles of the rates over all {rates['n_params']:,} parameters", fontsize=9
    )
    ax.legend(fontsize=6, ncol=2)

    ax = axes[1, 2]
    for name, prefix, color in PANELS:
        d = tr[name]
        for key, style, sign in ((f"below_{low}", "-", "<"), (f"above_{high}", "--", ">")):
            level = low if sign == "<" else high
            ax.plot(
                t_rec,
                100 * d[f"{prefix}rate_{key}"],
                style,
                color=color,
                label=f"{name}: rate {sign} {level}",
            )
    ax.set_xlabel("update t")
    ax.set_ylabel("share of parameters (%)")
    ax.set_title("(b) the paper's extreme rates: shares below 0.01 and above 1000", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(
        f"AdaBound (Luo et al., 2019) sec. 3. (b): {rates['data']}, {rates['net']}, "
        f"{rates['steps']} steps, rate {rates['rate']:g} (paper: CIFAR-10, ResNet-34)"
        + ("  [smoke: digits]" if ctx.smoke else ""),
        fontsize=10,
    )
    fig.tight_layout()


def run(ctx) -> dict:
    online, by_method = online_part(ctx)
    rates = rates_part(ctx)
    adam = rates["summary"]["Adam"]
    claims = [
        {
            "text": "online example: Adam drifts to x = 1 (average regret ~ 1/C), AdaBound "
            "converges to x* = 0 (average regret -> 0)",
            "reproduced": online["paper_claim_reproduced"],
        },
        {
            "text": "Fig. 1: Adam's per-element rates include tiny ones (< 0.01) and huge ones "
            "(> 1000) at the end of training",
            "reproduced": adam["final_below"] > 0 and adam["final_above"] > 0,
        },
    ]
    for claim in claims:
        print(
            f"claim: {claim['text']}: "
            + ("reproduced" if claim["reproduced"] else "NOT reproduced")
        )
    plot(ctx, online, by_method, rates)
    return {
        "online": online,
        "rates": rates,
        "claims": claims,
        "paper_claim_reproduced": all(c["reproduced"] for c in claims),
    }
