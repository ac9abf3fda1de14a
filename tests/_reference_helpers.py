"""Drivers for comparing optax_signvar with PyTorch reference optimizers.

Both sides are fed the same pre-generated gradient at every step (open loop),
so a deviation can only come from the update rule, never from a trajectory
that drifted into a different gradient.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import optax
import torch

STEPS = 200

# jax flattens a dict in sorted-key order; torch gets its tensors in the same
# order so that "leaf i" means the same thing on both sides.
LEAVES = ("b", "s", "w")


def make_problem(steps: int = STEPS, seed: int = 0):
    """Initial parameters and a (steps, *shape) gradient array per leaf, float64.

    Per-element gradient scales span 1e-4 to 10 so that, at the default
    AdaBound rates, the adaptive rate ``lr / |g|`` falls below the lower
    bound, above the upper bound and between them. A burst of large gradients
    (steps 20-40) followed by small ones makes AMSGrad's running max hold an
    old ``v``, so max-tracking changes the trajectory.
    """
    rng = np.random.default_rng(seed)
    params = {
        "b": rng.normal(size=5),
        "s": np.asarray(rng.normal()),
        "w": rng.normal(size=(3, 4)),
    }
    scale_w = 10.0 ** rng.uniform(-4, 1, size=(3, 4))
    mean_w = 0.5 * scale_w * rng.normal(size=(3, 4))
    g_w = mean_w + scale_w * rng.normal(size=(steps, 3, 4))
    g_w[20:40] *= 5.0
    # A coordinate that never gets a gradient: m = v = 0, the AdaBound rate
    # eps-limited and clipped to the upper bound, the step exactly 0.
    g_w[:, 0, 0] = 0.0
    g_b = np.array([1e-2, 1.0, 1e-3, 1.0, 3.0]) * rng.normal(size=(steps, 5))
    g_b[:, 1] = 0.7  # constant gradient: zero variance
    g_b[:, 3] = -2e-4  # constant and tiny: the adaptive rate stays above the upper bound
    # The sign flips every 50 steps, so m_t passes through 0.
    g_s = 0.3 * np.sign(np.cos(np.arange(steps) * np.pi / 50.0)) + 0.2 * rng.normal(size=steps)
    return params, {"b": g_b, "s": g_s, "w": g_w}


def run_optax(opt: optax.GradientTransformation, params, grads, dtype):
    """Parameter history (steps, *shape) per leaf of ``opt`` under ``grads``.

    The caller decides float32/float64 with ``jax.enable_x64``; ``opt`` must be
    built under the same setting, since a schedule-dependent constant such as
    ``final_lr / a_0`` is evaluated at construction.
    """
    params = {k: jax.numpy.asarray(v, dtype) for k, v in params.items()}
    grads = {k: jax.numpy.asarray(v, dtype) for k, v in grads.items()}

    def body(carry, g):
        p, s = carry
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        return (p, s), p

    _, hist = jax.jit(lambda p, g: jax.lax.scan(body, (p, opt.init(p)), g))(params, grads)
    return {k: np.asarray(v) for k, v in hist.items()}


def run_torch(make_opt, params, grads, dtype, lr_lambda=None):
    """Parameter history per leaf of the torch optimizer ``make_opt(tensors)``.

    ``lr_lambda`` drives a ``LambdaLR`` stepped after every optimizer step, so
    step k (0-based) runs at ``base_lr * lr_lambda(k)``.
    """
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    tensors = [
        torch.tensor(np.asarray(params[k]), dtype=tdtype, requires_grad=True) for k in LEAVES
    ]
    opt = make_opt(tensors)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) if lr_lambda else None
    steps = len(grads[LEAVES[0]])
    hist = {k: np.empty((steps,) + np.shape(params[k]), dtype) for k in LEAVES}
    for t in range(steps):
        for k, p in zip(LEAVES, tensors, strict=True):
            p.grad = torch.tensor(np.asarray(grads[k][t]), dtype=tdtype)
        opt.step()
        if sched is not None:
            sched.step()
        for k, p in zip(LEAVES, tensors, strict=True):
            hist[k][t] = p.detach().numpy()
    return hist


def _pairs(actual, desired):
    for k in desired:
        yield np.asarray(actual[k], np.float64), np.asarray(desired[k], np.float64)


def max_rel_deviation(actual, desired, floor: float = 0.0) -> float:
    """max |a - d| / max(|d|, floor) over all steps, leaves and elements (0/0 is 0).

    With ``floor=0`` a parameter passing close to 0 dominates: its absolute
    error is set by the rounding of the O(1) values it was computed from, so
    a positive ``floor`` gives the deviation away from such crossings.
    """
    worst = 0.0
    for a, d in _pairs(actual, desired):
        err = np.abs(a - d)
        den = np.maximum(np.abs(d), floor)
        rel = np.where(err == 0, 0.0, err / np.where(den == 0, 0.0, den))
        worst = max(worst, float(np.max(rel)))
    return worst


def max_abs_deviation(actual, desired) -> float:
    return max(float(np.max(np.abs(a - d))) for a, d in _pairs(actual, desired))


def tolerance_used(actual, desired, rtol: float, atol: float) -> float:
    """max |a - d| / (atol + rtol |d|): the fraction of the tolerance used (1 = at the limit)."""
    return max(
        float(np.max(np.abs(a - d) / (atol + rtol * np.abs(d)))) for a, d in _pairs(actual, desired)
    )


def assert_trajectories_close(actual, desired, rtol: float, atol: float) -> float:
    """Checks every step of every leaf; reports the first step that fails.

    Returns the max relative deviation for the record.
    """
    steps = len(desired[LEAVES[0]])
    for t in range(steps):
        for k in LEAVES:
            a, d = actual[k][t], desired[k][t]
            if not np.allclose(a, d, rtol=rtol, atol=atol):
                bad = np.abs(a - d) - (atol + rtol * np.abs(d))
                idx = np.unravel_index(np.argmax(bad), np.shape(d))
                raise AssertionError(
                    f"step {t + 1}, leaf {k!r}{list(idx)}: optax {np.asarray(a)[idx]!r} vs "
                    f"reference {np.asarray(d)[idx]!r} (rtol={rtol}, atol={atol}); "
                    f"max rel deviation over the run {max_rel_deviation(actual, desired):.3e}"
                )
    return max_rel_deviation(actual, desired)


class AdaBoundWTranscription(torch.optim.Optimizer):
    """The authors' ``AdaBoundW`` (Luolc/AdaBound, ``adabound/adabound.py``), transcribed.

    The ``adabound`` package on PyPI (0.0.5) ships only ``AdaBound``; the
    decoupled variant lives only in the authors' repository. This is its
    ``step`` line for line, with the deprecated ``add_(Number, Tensor)``
    overloads rewritten as ``add_(Tensor, alpha=Number)``. Its decay is
    ``p <- p - step - wd * p_old`` at a rate that does not follow the
    learning-rate schedule.

    ``scale_decay_with_lr=True`` is *not* the authors' code: it multiplies the
    decay by ``lr / base_lr`` as docs/update_rules.rst specifies for a schedule
    (``u <- u - lam * (a_t / a_0) * p``), the same workaround the authors apply
    to ``final_lr``.

    ``clip_counts`` tallies, over all steps and elements with ``m != 0``, where
    the per-element rate fell relative to the bounds (to check that a test
    exercises both).
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        final_lr=0.1,
        gamma=1e-3,
        eps=1e-8,
        weight_decay=0,
        amsbound=False,
        scale_decay_with_lr=False,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            final_lr=final_lr,
            gamma=gamma,
            eps=eps,
            weight_decay=weight_decay,
            amsbound=amsbound,
        )
        super().__init__(params, defaults)
        self.base_lrs = [group["lr"] for group in self.param_groups]
        self.scale_decay_with_lr = scale_decay_with_lr
        self.clip_counts = {"lower": 0, "inside": 0, "upper": 0}

    @torch.no_grad()
    def step(self, closure=None):
        for group, base_lr in zip(self.param_groups, self.base_lrs, strict=True):
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                amsbound = group["amsbound"]
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if amsbound:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1

                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if amsbound:
                    max_exp_avg_sq = state["max_exp_avg_sq"]
                    torch.max(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                    denom = max_exp_avg_sq.sqrt().add_(group["eps"])
                else:
                    denom = exp_avg_sq.sqrt().add_(group["eps"])

                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                step_size = group["lr"] * math.sqrt(bias_correction2) / bias_correction1

                final_lr = group["final_lr"] * group["lr"] / base_lr
                lower_bound = final_lr * (1 - 1 / (group["gamma"] * state["step"] + 1))
                upper_bound = final_lr * (1 + 1 / (group["gamma"] * state["step"]))
                step_size = torch.full_like(denom, step_size)
                rate = step_size.div_(denom)
                # Where m = 0 the clip is moot (the never-updated coordinate
                # always sits at the upper bound); count only where it acts.
                acts = exp_avg != 0
                self.clip_counts["lower"] += int((acts & (rate < lower_bound)).sum())
                self.clip_counts["upper"] += int((acts & (rate > upper_bound)).sum())
                self.clip_counts["inside"] += int(
                    (acts & (rate >= lower_bound) & (rate <= upper_bound)).sum()
                )
                step_size = rate.clamp_(lower_bound, upper_bound).mul_(exp_avg)

                if group["weight_decay"] != 0:
                    decay = group["weight_decay"]
                    if self.scale_decay_with_lr:
                        decay = decay * group["lr"] / base_lr
                    decayed_weights = torch.mul(p, decay)
                    p.add_(-step_size)
                    p.sub_(decayed_weights)
                else:
                    p.add_(-step_size)
        return None
