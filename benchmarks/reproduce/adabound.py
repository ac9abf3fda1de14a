"""AdaBound and AMSBound vs Adam, AMSGrad and SGD with momentum (Luo et al., 2019, the CIFAR-10
ResNet-34 comparison), with a small wide ResNet on Fashion-MNIST standing in.

Reproduced: the five methods of the paper's CIFAR-10 figure: SGDM (``optax.sgd(lr,
momentum=0.9)``, the paper's baseline, PyTorch's summed momentum), Adam and AMSGrad
(``osv.adam``, ``osv.amsgrad``), AdaBound and AMSBound (``osv.adabound``, ``osv.amsbound``:
final_lr 0.1, b1 0.9, b2 0.999), each rate picked from a small decade grid (Adam family {1e-4,
1e-3, 1e-2}, SGDM {0.01, 0.1, 1}; one seed, by final test accuracy) and then run on 3 seeds,
every rate (and so AdaBound's final_lr, scaled with it) x0.1 at 75% of the steps as the paper
decays at epoch 150 of 200. The paper's findings, checked on our numbers: AdaBound/AMSBound
end with a better test accuracy than Adam/AMSGrad, at least as good as SGDM, and make faster
progress than SGDM early on (average mini-batch loss over the run).

gamma. The bounds ``final_lr * (1 - 1/(gamma t + 1))`` and ``final_lr * (1 + 1/(gamma t))``
close in on final_lr as gamma * t grows; the paper's gamma = 1e-3 over 200 epochs of 391 steps
gives gamma * T = 78. A run of T = 300 steps with that gamma would never leave the Adam phase,
so we keep the paper's gamma * T (``--gamma-t``, default 78): gamma = 78 / T, the bounds as
a function of the fraction of training done are then the paper's.

Second panel: the bounds and the distribution (10/50/90th percentiles over all parameters) of
AdaBound's clipped per-element rates, ``clip(a_t r_t, lo_t, hi_t)``, at the recorded steps,
showing the transition from Adam-like to SGD-like rates. :func:`optax_signvar.research.ablate`
records losses only, so one extra training run of the picked AdaBound configuration (seed 0, the
same initial parameters and mini-batch keys as ablate's seed-0 run) records them from the
optimizer state with :func:`optax_signvar.diagnostics` (bounds, clipped shares) and the
package's blocks (the per-element rates); its mini-batch losses are compared with ablate's
seed-0 run as a check that it follows the same trajectory.

Substituted: CIFAR-10 cannot be obtained on this machine, so the data are Fashion-MNIST and the
network a small WRN (by default WRN-10-1 with 8 stem channels, widths 8/16/32, instead of
ResNet-34) with GroupNorm instead of BatchNorm (see :mod:`benchmarks.reproduce.nets`). The
figure title, table header and JSON say so.

Budget. The paper: 200 epochs of batch 128 on CIFAR-10 (78,200 steps). Ours, made for ~8
minutes on 2 CPU cores: 20,000 training images, 300 steps of batch 32, a 3-point grid, 3
seeds, 6 evaluations of 2,000 test images per run. Paper-like (a GPU job)::

    python -m benchmarks.reproduce adabound --depth 16 --width 4 --base 16 --steps 93750 \\
        --batch-size 128 --train-size 0 --test-size 0 --records 50 --seeds 5
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_signvar as osv
from benchmarks.reproduce import images
from optax_signvar import blocks

SUBSTITUTION = "CIFAR-10 ResNet-34 (unavailable here) replaced by Fashion-MNIST, small WRN"
B1, B2, EPS = 0.9, 0.999, 1e-8
PAPER_GAMMA_T = 78.0  # 1e-3 x 200 epochs x 391 steps
DEFAULT = dataclasses.replace(images.CPU_DEFAULT, grid=(0.1, 1.0, 10.0))
SMOKE = dataclasses.replace(images.SMOKE, records=3)
NET = images.ResNetSize(depth=10, width=1, base=8)
SMOKE_NET = images.ResNetSize(depth=10, width=1, base=8, stages=1)
PAIRS = {
    "bounds": [("AdaBound", "Adam"), ("AMSBound", "AMSGrad")],
    "vs SGDM": [("AdaBound", "SGDM"), ("AMSBound", "SGDM")],
}
CLAIMS = [
    images.Claim(
        "AdaBound/AMSBound end with a better test accuracy than Adam/AMSGrad",
        tuple(PAIRS["bounds"]),
        ("test_acc",),
        "helps",
    ),
    images.Claim(
        "AdaBound/AMSBound end at least as good as SGDM",
        tuple(PAIRS["vs SGDM"]),
        ("test_acc",),
        "never hurts",
    ),
    images.Claim(
        "AdaBound/AMSBound make faster progress than SGDM",
        tuple(PAIRS["vs SGDM"]),
        ("mean_loss",),
        "helps",
    ),
]


def methods(final_lr: float, gamma: float) -> images.Methods:
    """name -> (center rate, optimizer of a rate schedule)."""
    return {
        "SGDM": (0.1, lambda lr: optax.sgd(lr, momentum=0.9)),
        "Adam": (1e-3, osv.adam),
        "AMSGrad": (1e-3, osv.amsgrad),
        "AdaBound": (1e-3, lambda lr: osv.adabound(lr, final_lr=final_lr, gamma=gamma)),
        "AMSBound": (1e-3, lambda lr: osv.amsbound(lr, final_lr=final_lr, gamma=gamma)),
    }


def add_arguments(parser) -> None:
    images.add_arguments(parser, DEFAULT)
    images.add_resnet_arguments(parser, NET)
    group = parser.add_argument_group("AdaBound")
    group.add_argument(
        "--gamma-t",
        type=float,
        default=None,
        help=f"gamma x steps, the bounds' convergence over the run (paper: {PAPER_GAMMA_T:g})",
    )
    group.add_argument(
        "--final-lr", type=float, default=None, help="the SGD rate the bounds tend to (0.1)"
    )


def dissected(state: Any) -> osv.DissectedState:
    """The :class:`~optax_signvar.DissectedState` inside an optimizer's state."""

    def is_state(x: Any) -> bool:
        return isinstance(x, osv.DissectedState)

    return next(x for x in jax.tree.leaves(state, is_leaf=is_state) if is_state(x))


def record_training(
    problem: images.Problem,
    opt: optax.GradientTransformation,
    stats: Any,
    steps: int,
    logged: np.ndarray,
    seed: int = 0,
) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
    """Trains ``opt`` on ``problem`` for ``steps`` and records ``stats(state)`` at ``logged``.

    Keys and initial parameters are drawn as :func:`optax_signvar.research.ablate` draws them
    for ``seed``. At step ``t`` (0-based) the statistics are those of update ``t`` (the state
    after it, count ``t + 1``); the loss is the mini-batch loss before it, as ablate records
    it. Returns the final parameters, the losses at ``logged`` and ``stats``' dict of arrays
    at ``logged`` (one row per logged step).
    """
    is_logged = np.zeros(steps, bool)
    is_logged[logged] = True

    @jax.jit
    def run(key: jax.Array) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
        init_key, step_key = jax.random.split(key)
        params = problem.init_params(init_key)
        state = opt.init(params)
        blank = jax.tree.map(jnp.zeros_like, jax.eval_shape(stats, state))

        def step(carry, xs):
            params, state = carry
            key, record = xs
            loss, grads = jax.value_and_grad(problem.loss_fn)(params, key)
            updates, state = opt.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            out = jax.lax.cond(record, stats, lambda _: blank, state)
            return (params, state), (loss, out)

        xs = (jax.random.split(step_key, steps), jnp.asarray(is_logged))
        (params, _), (loss, out) = jax.lax.scan(step, (params, state), xs)
        return params, loss, out

    params, loss, out = run(jax.random.key(seed))
    return params, np.asarray(loss)[logged], {k: np.asarray(v)[logged] for k, v in out.items()}


def rate_trace(
    problem: images.Problem,
    rate: Any,
    final_lr: float,
    gamma: float,
    steps: int,
    logged: np.ndarray,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """AdaBound's bounds and per-element rates at the ``logged`` steps of one training run.

    Keys and initial parameters are drawn as :func:`optax_signvar.research.ablate` draws them for
    ``seed``. At step ``t`` (0-based) the statistics are those of update ``t`` (the state after
    it, count ``t + 1``); ``loss`` is the mini-batch loss before it, as ablate records it.
    """
    opt = osv.adabound(rate, final_lr=final_lr, gamma=gamma, b1=B1, b2=B2, eps=EPS)
    bounds = osv.Bounds(final_lr, gamma)
    schedule = rate if callable(rate) else (lambda count: rate)
    a0 = float(schedule(0))
    quantiles = jnp.array([10.0, 50.0, 90.0])

    def stats(state: Any) -> dict[str, jax.Array]:
        d = osv.diagnostics(
            state, b1=B1, b2=B2, bounds=bounds, learning_rate=rate, eps=EPS, quantiles=()
        )
        found = dissected(state)
        a_t = schedule(found.count - 1)
        # the rate before clipping, a_t sqrt(1 - b2^t) / ((1 - b1^t) (sqrt(v_t) + eps))
        raw = blocks.adaptive_rate(found.nu, EPS, blocks.adabound_step(B1, B2, found.count))
        flat = a_t * jnp.concatenate([x.ravel() for x in jax.tree.leaves(raw)])
        clipped = jnp.clip(flat, d["lower_bound"], d["upper_bound"])
        return {
            "lower": d["lower_bound"],
            "upper": d["upper_bound"],
            "sgd_rate": final_lr * a_t / a0,
            "clipped_lower": d["clipped_lower"],
            "clipped_upper": d["clipped_upper"],
            "rate_q": jnp.percentile(clipped, quantiles),
            "unclipped_q": jnp.percentile(flat, quantiles),
        }

    _, loss, trace = record_training(problem, opt, stats, steps, logged, seed)
    return trace | {"step": np.asarray(logged), "loss": loss}


def plot_rates(ax: Any, trace: dict[str, np.ndarray], title: str) -> None:
    steps = trace["step"]
    ax.plot(steps, trace["upper"], "r-", label=r"upper bound $\eta_u(t)$")
    ax.plot(steps, trace["lower"], "b-", label=r"lower bound $\eta_l(t)$")
    ax.plot(steps, trace["sgd_rate"], "k:", label="final_lr (scaled with the schedule)")
    q = trace["rate_q"]
    ax.fill_between(steps, q[:, 0], q[:, 2], color="g", alpha=0.25, label="clipped rate, 10-90%")
    ax.plot(steps, q[:, 1], "g-", label="clipped rate, median")
    ax.plot(steps, trace["unclipped_q"][:, 1], "g--", label="unclipped rate, median")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("per-element rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def run(ctx) -> dict:
    scale = images.scale_of(ctx, DEFAULT, SMOKE)
    gamma_t = ctx.args.gamma_t if getattr(ctx.args, "gamma_t", None) else PAPER_GAMMA_T
    final_lr = ctx.args.final_lr if getattr(ctx.args, "final_lr", None) else 0.1
    if gamma_t <= 0:
        raise SystemExit("--gamma-t must be positive")
    # AdaBound needs gamma < 1: runs shorter than gamma_t / 0.5 steps (the smoke test) get 0.5
    gamma = min(gamma_t / scale.steps, 0.5)
    print(
        f"AdaBound/AMSBound: final_lr {final_lr:g}, gamma {gamma:.3g}"
        f" (gamma x steps {gamma * scale.steps:g}; asked {gamma_t:g})"
    )
    net = images.resnet_of(ctx, NET, SMOKE_NET)
    schedule = images.step_decay(0.75)
    done = images.run_comparison(
        ctx,
        dataset="fashion_mnist",
        net=net,
        title=f"AdaBound vs Adam/AMSGrad/SGDM, substitute: Fashion-MNIST, {net.name}, GroupNorm"
        " (paper: CIFAR-10, ResNet-34)",
        default=DEFAULT,
        smoke=SMOKE,
        methods=methods(final_lr, gamma),
        pairs=PAIRS,
        schedule=schedule,
        claims=CLAIMS,
        smoke_methods=["Adam", "AdaBound"],  # CI time: one pair
        spare_axis=True,
        substitution=SUBSTITUTION,
        gamma=gamma,
        gamma_t=gamma_t,
        final_lr=final_lr,
    )
    # the extra run: the picked AdaBound rate, seed 0
    best = done.out["best"]["AdaBound"]
    logged = np.unique(np.r_[np.arange(0, scale.steps, images.log_every(scale)), scale.steps - 1])
    trace = rate_trace(done.problem, schedule(scale)(best), final_lr, gamma, scale.steps, logged)
    ablated = {
        r["step"]: r["loss"]
        for r in done.out["rows"]
        if r["config"] == "AdaBound" and r["seed"] == 0
    }
    gap = float(np.max(np.abs(trace["loss"] - np.array([ablated[int(t)] for t in logged]))))
    print(f"\nAdaBound (rate {best:g}, seed 0) per-element rates, recorded from an extra run:")
    print(" ".join(f"{h:>9s}" for h in ("step", "lower", "upper", "q10", "q50", "q90", "clipped")))
    for i, t in enumerate(trace["step"]):
        q = trace["rate_q"][i]
        clipped = trace["clipped_lower"][i] + trace["clipped_upper"][i]
        print(
            f"{t:9d} {trace['lower'][i]:9.3g} {trace['upper'][i]:9.3g} {q[0]:9.3g} {q[1]:9.3g}"
            f" {q[2]:9.3g} {100 * clipped:8.1f}%"
        )
    print(f"its mini-batch losses vs ablate's seed-0 run: max |difference| {gap:.2e}")
    plot_rates(
        done.spare_axis,
        trace,
        f"AdaBound's per-element rates (rate {best:g}, seed 0, gamma {gamma:.3g})",
    )
    done.spare_axis.figure.tight_layout()
    rates = {k: v for k, v in trace.items() if k != "loss"}
    return done.results | {
        "adabound_rates": rates | {"rate": best, "loss_gap_vs_ablate": gap},
    }
