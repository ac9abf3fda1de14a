"""optax_signvar against the PyTorch implementations its users know, step by step.

* ``adam`` / ``amsgrad`` against ``torch.optim.Adam(amsgrad=False/True)``;
* ``adabound`` / ``amsbound`` against the authors' ``adabound.AdaBound`` (PyPI),
  with and without coupled L2, and under a learning-rate schedule (a
  ``LambdaLR`` producing the same rate at every step);
* ``adaboundw`` / ``amsboundw`` against a transcription of the authors'
  ``AdaBoundW``, which is not on PyPI (see ``_reference_helpers``).

The gradients are pre-generated (open loop) and identical for both sides, and
the parameters are compared after every one of 200 steps. In float64 the two
sides differ only by the order of their floating-point operations, which
leaves deviations of 1e-15 to 1e-13 (1e-12 next to a zero crossing); rtol 1e-10
is far above that and far below any formula error (1e-3 and up), or even a
float32-rounded constant (5e-8). The float32 runs use the arithmetic a user's
run would. ``pytest -s`` prints the deviations per optimizer and precision.
"""

from __future__ import annotations

import functools

import adabound as adabound_pkg
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import optax_signvar as osv
from tests._reference_helpers import (
    STEPS,
    AdaBoundWTranscription,
    assert_trajectories_close,
    make_problem,
    max_abs_deviation,
    max_rel_deviation,
    run_optax,
    run_torch,
    tolerance_used,
)

F64_TOL = dict(rtol=1e-10, atol=1e-12)
# float32: both sides round every operation to 2**-24 ~ 6e-8 relative, in a
# different order (torch's Adam uses lerp and folds the bias corrections into
# the denominator; the AdaBound reference computes step sizes and bounds in
# Python float64, optax_signvar in float32). The deviation is mostly absolute:
# each step rounds p + u to the ulp of |p| (|p| reaches ~28 in the "custom"
# runs, ulp 1.9e-6), and a parameter passing near 0 keeps the absolute error
# of the O(1) values it came from. rtol 1e-5 (~80 ulps) and atol 1e-5 leave
# ~10x headroom over what 200 steps give (the "tol used" column of -s), while
# a wrong formula moves the parameters by 1e-3 or more. Formula agreement to
# rounding is the float64 runs' job; the float32 runs check the float32 path.
F32_TOL = dict(rtol=1e-5, atol=1e-5)
DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]

# name -> (max rel deviation, the same with |d| floored at 1e-2, max abs
# deviation, fraction of the tolerance used)
DEVIATIONS: dict[str, tuple[float, float, float, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def deviation_report():
    yield
    print("\nparameters vs reference, max over all steps and elements:")
    print(f"  {'optimizer':<56s} {'rel':>9s} {'rel,fl.01':>9s} {'abs':>9s} {'tol used':>9s}")
    for name in sorted(DEVIATIONS):
        print(f"  {name:<56s}" + "".join(f" {x:9.2e}" for x in DEVIATIONS[name]))


@pytest.fixture(scope="module")
def problem():
    return make_problem(STEPS)


def _compare(name, build_optax, make_torch, dtype, problem, lr_lambda=None):
    """Runs both sides in ``dtype``; asserts every step; records the deviation."""
    params, grads = problem
    with jax.enable_x64(dtype == np.float64):
        # Built inside the context: a schedule's value at step 0, which the
        # AdaBound bounds divide by, is evaluated at construction.
        got = run_optax(build_optax(), params, grads, dtype)
    want = run_torch(make_torch, params, grads, dtype, lr_lambda)
    tol = F64_TOL if dtype == np.float64 else F32_TOL
    key = f"{name} [{np.dtype(dtype).name}]"
    DEVIATIONS[key] = (
        max_rel_deviation(got, want),
        max_rel_deviation(got, want, floor=1e-2),
        max_abs_deviation(got, want),
        tolerance_used(got, want, **tol),
    )
    assert_trajectories_close(got, want, **tol)


# --------------------------------------------------------------------------- #
# Adam and AMSGrad vs torch.optim.Adam.
# --------------------------------------------------------------------------- #

ADAM_CONFIGS = {
    "default": dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8),
    "custom": dict(lr=1e-2, b1=0.8, b2=0.99, eps=1e-6),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", sorted(ADAM_CONFIGS))
@pytest.mark.parametrize("name", ["adam", "amsgrad"])
def test_adam_and_amsgrad_match_torch(name, config, dtype, problem):
    c = ADAM_CONFIGS[config]
    amsgrad = name == "amsgrad"
    fn = osv.amsgrad if amsgrad else osv.adam

    def make_torch(params):
        # foreach=False pins the single-tensor loop, the documented arithmetic.
        return torch.optim.Adam(
            params,
            lr=c["lr"],
            betas=(c["b1"], c["b2"]),
            eps=c["eps"],
            amsgrad=amsgrad,
            foreach=False,
        )

    _compare(
        f"{name} {config}",
        lambda: fn(c["lr"], c["b1"], c["b2"], c["eps"]),
        make_torch,
        dtype,
        problem,
    )


def test_stream_makes_the_amsgrad_max_bind(problem):
    """Without this the AMSGrad comparison could pass for plain Adam."""
    params, grads = problem
    c = dict(lr=1e-3, betas=(0.9, 0.999), foreach=False)
    adam = run_torch(lambda p: torch.optim.Adam(p, **c), params, grads, np.float64)
    ams = run_torch(lambda p: torch.optim.Adam(p, amsgrad=True, **c), params, grads, np.float64)
    assert max_rel_deviation(ams, adam) > 1e-4


@pytest.mark.standard_promotion  # optax.amsgrad itself
def test_optax_amsgrad_debiased_max_differs_from_torch(problem):
    """optax.amsgrad maxes the *debiased* v (docs/update_rules.rst); the stream tells it apart.

    This is what makes the tight AMSGrad comparison meaningful: the wrong
    placement of the max is visible far above the float64 tolerance.
    """
    params, grads = problem
    with jax.enable_x64(True):
        got = run_optax(optax.amsgrad(1e-3), params, grads, np.float64)
    want = run_torch(
        lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True, foreach=False),
        params,
        grads,
        np.float64,
    )
    assert max_rel_deviation(got, want) > 1e-2


# --------------------------------------------------------------------------- #
# AdaBound / AMSBound vs the authors' adabound package.
# --------------------------------------------------------------------------- #

BOUND_CONFIGS = {
    "default": dict(lr=1e-3, final_lr=0.1, b1=0.9, b2=0.999, eps=1e-8, gamma=1e-3),
    "custom": dict(lr=1e-2, final_lr=0.05, b1=0.85, b2=0.995, eps=1e-7, gamma=1e-2),
}


def _osv_bound(name, c, weight_decay, lr=None):
    fn = {
        "adabound": osv.adabound,
        "amsbound": osv.amsbound,
        "adaboundw": osv.adaboundw,
        "amsboundw": osv.amsboundw,
    }[name]
    return fn(
        learning_rate=c["lr"] if lr is None else lr,
        final_lr=c["final_lr"],
        b1=c["b1"],
        b2=c["b2"],
        eps=c["eps"],
        gamma=c["gamma"],
        weight_decay=weight_decay,
    )


def _torch_bound_kwargs(c, weight_decay, amsbound):
    return dict(
        lr=c["lr"],
        betas=(c["b1"], c["b2"]),
        final_lr=c["final_lr"],
        gamma=c["gamma"],
        eps=c["eps"],
        weight_decay=weight_decay,
        amsbound=amsbound,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 5e-2], ids=["no_wd", "l2"])
@pytest.mark.parametrize("config", sorted(BOUND_CONFIGS))
@pytest.mark.parametrize("name", ["adabound", "amsbound"])
def test_adabound_and_amsbound_match_package(name, config, weight_decay, dtype, problem):
    c = BOUND_CONFIGS[config]
    kwargs = _torch_bound_kwargs(c, weight_decay, amsbound=name == "amsbound")
    _compare(
        f"{name} {config} wd={weight_decay:g}",
        lambda: _osv_bound(name, c, weight_decay),
        lambda p: adabound_pkg.AdaBound(p, **kwargs),
        dtype,
        problem,
    )


@pytest.mark.parametrize("config", sorted(BOUND_CONFIGS))
def test_stream_exercises_both_bounds(config, problem):
    """The rate must be clipped from below and above, and left alone, at some steps;
    otherwise the comparison would not test the bound functions."""
    params, grads = problem
    kwargs = _torch_bound_kwargs(BOUND_CONFIGS[config], 0.0, amsbound=False)
    counts = {}

    def make(p):
        opt = AdaBoundWTranscription(p, **kwargs)
        counts.update(opt=opt)
        return opt

    run_torch(make, params, grads, np.float64)
    clip = counts["opt"].clip_counts
    assert min(clip.values()) > 100, clip


@pytest.mark.parametrize("amsbound", [False, True])
def test_transcription_without_decay_is_the_package(amsbound, problem):
    """The AdaBoundW transcription shares everything but the decay with AdaBound;
    at weight_decay=0 it must reproduce the package to the last bits."""
    params, grads = problem
    kwargs = _torch_bound_kwargs(BOUND_CONFIGS["custom"], 0.0, amsbound)
    ours = run_torch(lambda p: AdaBoundWTranscription(p, **kwargs), params, grads, np.float64)
    pkg = run_torch(lambda p: adabound_pkg.AdaBound(p, **kwargs), params, grads, np.float64)
    assert max_rel_deviation(ours, pkg) <= 1e-15


# --------------------------------------------------------------------------- #
# AdaBoundW / AMSBoundW vs the transcription of the authors' AdaBoundW.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", sorted(BOUND_CONFIGS))
@pytest.mark.parametrize("name", ["adaboundw", "amsboundw"])
def test_adaboundw_and_amsboundw_match_authors_rule(name, config, dtype, problem):
    c = BOUND_CONFIGS[config]
    # AdaBoundW's decay is per step, not scaled by the rate: 1e-2 shrinks |p| by
    # ~e^-2 over the run, so a missing decay, or one multiplied by lr, is off by
    # O(1), while the parameters stay far from 0.
    weight_decay = 1e-2
    kwargs = _torch_bound_kwargs(c, weight_decay, amsbound=name == "amsboundw")
    _compare(
        f"{name} {config} wd={weight_decay:g}",
        lambda: _osv_bound(name, c, weight_decay),
        lambda p: AdaBoundWTranscription(p, **kwargs),
        dtype,
        problem,
    )


# --------------------------------------------------------------------------- #
# Learning-rate schedules: the reference under torch's LambdaLR.
# --------------------------------------------------------------------------- #

SCHEDULES = {
    "exponential": lambda: optax.exponential_decay(1e-3, transition_steps=25, decay_rate=0.6),
    "piecewise": lambda: optax.piecewise_constant_schedule(1e-2, {60: 0.3, 140: 0.1}),
}


@functools.cache  # one compiled scan per schedule and precision
def _lr_lambda(schedule_name, dtype):
    """LambdaLR factors giving the reference the rate optax uses at each step.

    optax evaluates the schedule at the count before the increment, so the
    k-th update (0-based) uses schedule(k); LambdaLR gives step k the rate
    base_lr * lambda(k). The rates are read from the optax schedule itself, the
    way the optax side evaluates it, so both sides see the same numbers:
    at optax's int32 count, where ``optax.exponential_decay`` is float32 even
    under x64 (``int32 / int`` is float32; at a Python int it is float64), and
    inside a compiled scan, whose float32 ``pow`` differs from the eager op by
    up to 4e-7 relative.
    """
    # optax's schedules mix Python floats with the int32 count: standard promotion,
    # as the package evaluates them (tests/conftest.py makes tests strict)
    with jax.enable_x64(dtype == np.float64), jax.numpy_dtype_promotion("standard"):
        schedule = SCHEDULES[schedule_name]()

        def body(count, _):
            return count + 1, schedule(count)

        rates = jax.jit(
            lambda: jax.lax.scan(body, jnp.zeros([], jnp.int32), None, length=STEPS + 1)[1]
        )()
    rates = [float(r) for r in np.asarray(rates)]
    return rates[0], lambda k: rates[k] / rates[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("name", ["adabound", "amsbound"])
def test_schedule_matches_package_under_lambda_lr(name, schedule, dtype, problem):
    c = dict(BOUND_CONFIGS["default"], final_lr=0.1)
    base_lr, lr_lambda = _lr_lambda(schedule, dtype)
    kwargs = _torch_bound_kwargs(dict(c, lr=base_lr), 0.0, amsbound=name == "amsbound")
    _compare(
        f"{name} schedule={schedule}",
        lambda: _osv_bound(name, c, 0.0, lr=SCHEDULES[schedule]()),
        lambda p: adabound_pkg.AdaBound(p, **kwargs),
        dtype,
        problem,
        lr_lambda=lr_lambda,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("name", ["adaboundw", "amsboundw"])
def test_decoupled_decay_follows_schedule(name, schedule, dtype, problem):
    """Under a schedule the package decays at lam * a_t / a_0 (docs/update_rules.rst), which
    the authors' AdaBoundW does not do (it ignores the scheduler); the reference
    here is the transcription with that one documented change."""
    c = BOUND_CONFIGS["default"]
    base_lr, lr_lambda = _lr_lambda(schedule, dtype)
    kwargs = _torch_bound_kwargs(dict(c, lr=base_lr), 1e-2, amsbound=name == "amsboundw")
    _compare(
        f"{name} schedule={schedule} (decay * a_t/a_0)",
        lambda: _osv_bound(name, c, 1e-2, lr=SCHEDULES[schedule]()),
        lambda p: AdaBoundWTranscription(p, scale_decay_with_lr=True, **kwargs),
        dtype,
        problem,
        lr_lambda=lr_lambda,
    )


@pytest.mark.parametrize("what", ["bound", "decay"])
def test_a0_is_the_rate_the_chain_applies_at_step_0(what):
    """f_t = final_lr * a_t / a_0 and the decoupled lam * a_t / a_0 must give
    exactly final_lr and lam at step 0, whatever precision the schedule has.

    optax_signvar multiplies by a_t = schedule(count) with optax's int32 count;
    a_0 must be that same value, schedule(int32 0). optax.exponential_decay
    returns float32 at an int32 count even under x64, so an a_0 taken at the
    Python int 0 (float64) differs from it by float32 rounding (1e-3 rounds to
    1.0000000474974513e-3) and f_0 comes out as final_lr * (1 + 4.7e-8). This
    is the one-step form of the exponential-schedule failures above.
    """
    final_lr, gamma, lam, b1 = 0.1, 1e-3, 1e-2, 0.9
    with jax.enable_x64(True):
        schedule = optax.exponential_decay(1e-3, transition_steps=25, decay_rate=0.6)
        a0 = float(schedule(jnp.int32(0)))
        p = jnp.array([0.5])
        if what == "bound":
            # |g| = 1e6 puts the adaptive rate (~1e-9) far below the lower bound
            # (~1e-4), so the step is the bound times m_1 = (1 - b1) g.
            opt = osv.adabound(schedule, final_lr=final_lr, gamma=gamma)
            g = jnp.array([1e6])
            expected = -final_lr * (1 - 1 / (gamma + 1)) * (1 - b1) * 1e6
        else:
            # g = 0: m = 0, so the update is the decay alone, -lam * (a_0/a_0) * p.
            opt = osv.adaboundw(schedule, final_lr=final_lr, gamma=gamma, weight_decay=lam)
            g = jnp.zeros(1)
            expected = -lam * 0.5
        u, _ = opt.update(g, opt.init(p), p)
    assert a0 != 1e-3  # the premise: the schedule's int32 value is float32-rounded
    # 1 - 1/(gamma + 1) cancels ~3 digits, so 1e-11, not 1e-15; the bug is 4.7e-8.
    np.testing.assert_allclose(np.asarray(u), [expected], rtol=1e-11)
