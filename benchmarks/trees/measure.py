"""The measurements of one model: full train step, optimizer alone, compile time.

Every step is jitted with ``donate_argnums=(0, 1)`` (params and optimizer state donated) and
timed with :mod:`benchmarks.speed.harness`'s runners: all rows of a model interleaved in
each round, each round on new buffers, medians over rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks.speed.harness import Runner, fresh_copy, median
from benchmarks.trees.config import Config
from benchmarks.trees.models import Model
from benchmarks.trees.variants import LR, Variant, pack, unpack

# Seconds of timed steps per row and round, at most (see _steps_for).
ROUND_BUDGET_S = 0.25
# A full step whose first compile took longer is not compiled again (one sample).
COMPILE_REPEAT_LIMIT_S = 10.0
# A full step slower than this is timed once, not in rounds; if it is a packed-params row,
# the model's later packed-params rows are skipped: they share what makes it slow (unpack).
SLOW_STEP_S = 1.0


def _apply(opt: optax.GradientTransformation | None, params, state, grads):
    """One optimizer update and ``apply_updates``; ``opt=None`` is the floor, ``p - lr g``."""
    if opt is None:
        return jax.tree.map(lambda p, g: p - LR * g, params, grads), state
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def full_step(loss_fn: Callable, opt, packed_params: bool) -> Callable:
    """``(params, (state, loss), batch) -> (params, (state, loss))``: a whole train step."""
    f = (lambda p, b: loss_fn(unpack(p), b)) if packed_params else loss_fn

    def step(params, carry, batch):
        state, _ = carry
        loss, grads = jax.value_and_grad(f)(params, batch)
        params, state = _apply(opt, params, state, grads)
        return params, (state, loss)

    return step


def optimizer_step(opt) -> Callable:
    """``(params, state, grads) -> (params, state)``: the update alone, on fixed grads."""

    def step(params, state, grads):
        return _apply(opt, params, state, grads)

    return step


class CompiledRunner(Runner):
    """A :class:`Runner` around a step compiled (and timed) elsewhere. With ``loss``, ``b``
    is ``(state, loss)``: the loss is an output for the caller, not a buffer updated in
    place, so donation is checked on params and state only."""

    def __init__(self, compiled: Any, a: Any, b: Any, c: Any, loss: bool = False):
        self.compiled, self.a, self.b, self.c = compiled, a, b, c
        self.loss = loss
        self.donated = None
        self.timed_steps = 0
        self.slow: float | None = None  # the one step's seconds, where too slow to time
        self.skipped = False  # not compiled: an earlier row of its kind was too slow

    def warm(self, n: int) -> None:
        old = jax.tree.leaves((self.a, self.b[0] if self.loss else self.b))
        self.step()
        self.donated = all(x.is_deleted() for x in old)
        for _ in range(max(0, n - 1)):
            self.step()


def compiler_options(cfg: Config) -> dict[str, Any] | None:
    """``--quick`` compiles with XLA's backend optimizations off: several times faster
    compiles (a smoke run is mostly compiles), slower code; its timings mean nothing."""
    return {"xla_backend_optimization_level": 0} if cfg.quick else None


def timed_compile(fn: Callable, args: tuple, options: dict | None) -> tuple[Any, float, float]:
    """The donated step compiled from scratch (caches cleared); trace + lower and XLA s."""
    jax.clear_caches()
    t0 = time.perf_counter()
    lowered = jax.jit(fn, donate_argnums=(0, 1)).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile(compiler_options=options)
    return compiled, t1 - t0, time.perf_counter() - t1


def _inputs(model: Model, v: Variant, grads: Any) -> tuple[Any, Any, Any, Any]:
    """``v``'s optimizer and fresh params, state and grads in its layout (packed or not)."""
    params, g = model.params, grads
    if v.packed_params:
        params, g = pack(params), pack(grads)
    params = fresh_copy(params)
    opt = v.make() if v.make else None
    state = fresh_copy(opt.init(params)) if opt else ()
    return opt, params, state, g


def _full_runner(model: Model, v: Variant) -> tuple[Callable, CompiledRunner]:
    """``v``'s full train step and a runner holding its inputs (not compiled yet)."""
    opt, params, state, _ = _inputs(model, v, model.params)
    fn = full_step(model.loss_fn, opt, v.packed_params)
    carry = (state, jnp.zeros((), jnp.float32))
    return fn, CompiledRunner(None, params, carry, model.batch, loss=True)


def _probe(r: CompiledRunner, v: Variant, slow_packed: list[str]) -> None:
    """Times ``r``'s first step: one slower than :data:`SLOW_STEP_S` is not timed in rounds
    (``r.slow``); a packed-params one has the model's later packed-params rows skipped."""
    t0 = time.perf_counter()
    r.warm(1)
    if time.perf_counter() - t0 > SLOW_STEP_S:
        r.slow = time.perf_counter() - t0
        if v.packed_params:
            slow_packed.append(v.name)


def _compile_full_steps(model: Model, vs: Sequence[Variant], cfg: Config, bar: Any):
    """Each row's full step compiled ``cfg.compile_repeats_for`` times from scratch,
    interleaved; the first compile of each becomes its runner, probed by one step (see
    :func:`_probe`). Returns the runners and compile times."""
    repeats = cfg.compile_repeats_for(model.spec.name)
    made = [_full_runner(model, v) for v in vs]
    lower: list[list[float]] = [[] for _ in vs]
    xla: list[list[float]] = [[] for _ in vs]
    slow_packed: list[str] = []
    for rep in range(repeats):
        for i, (v, (fn, r)) in enumerate(zip(vs, made, strict=True)):
            bar.update(1)
            if rep == 0 and v.packed_params and slow_packed:
                r.skipped = True
            if r.skipped or (rep and lower[i][0] + xla[i][0] > COMPILE_REPEAT_LIMIT_S):
                continue
            bar.set_description(f"{model.spec.name}: compile {v.name}")
            compiled, t_lower, t_xla = timed_compile(fn, (r.a, r.b, r.c), compiler_options(cfg))
            lower[i].append(t_lower)
            xla[i].append(t_xla)
            if rep == 0:
                r.compiled = compiled
                _probe(r, v, slow_packed)
    return [r for _, r in made], lower, xla


def _optimizer_runners(model: Model, vs: Sequence[Variant], cfg: Config, bar: Any):
    """Each row's optimizer alone on the model's gradient at its initial parameters."""
    grads = jax.jit(jax.grad(model.loss_fn))(model.params, model.batch)
    runners = []
    for v in vs:
        bar.set_description(f"{model.spec.name}: compile {v.name} (optimizer alone)")
        opt, params, state, g = _inputs(model, v, grads)
        fn = jax.jit(optimizer_step(opt), donate_argnums=(0, 1))
        compiled = fn.lower(params, state, g).compile(compiler_options=compiler_options(cfg))
        runners.append(CompiledRunner(compiled, params, state, g))
        bar.update(1)
    return runners


def _steps_for(r: CompiledRunner, cfg: Config) -> int:
    """Timed steps per round: ``cfg.steps``, fewer for a row whose one step takes more than
    :data:`ROUND_BUDGET_S` / ``cfg.steps`` (at least 1), so a pathological row does not
    take the run's whole time."""
    return max(1, min(cfg.steps, int(ROUND_BUDGET_S / r.time(1))))


def _timed_rounds(
    runners: Sequence[CompiledRunner], cfg: Config, bar: Any, what: str
) -> list[list[float]]:
    """Per-round median step times (s) of every runner, interleaved; the runners closed.

    As :func:`benchmarks.speed.harness.interleaved_times` (every round moves each runner to
    new buffers and warms it, then times them back to back), with a number of steps per
    runner (:func:`_steps_for`, fixed at the first round).
    """
    times: list[list[float]] = [[] for _ in runners]
    steps: list[int] = []
    for k in range(cfg.rounds):
        bar.set_description(f"{what}, round {k + 1}/{cfg.rounds}")
        for r in runners:
            r.refresh()
            r.warm(1)
        steps = steps or [_steps_for(r, cfg) for r in runners]
        for r, n, ts in zip(runners, steps, times, strict=True):
            ts.append(r.time(n))
            r.timed_steps = n
        bar.update(1)
    for r in runners:
        r.close()
    return times


def task_count(n_variants: int, compile_repeats: int, rounds: int) -> int:
    """Progress-bar tasks of one model: its compiles and its timing rounds."""
    return n_variants * (compile_repeats + 1) + 2 * rounds


def _full_times(full: list[CompiledRunner], cfg: Config, bar: Any, what: str) -> list:
    """Per-round times of the rows timed in rounds; ``[slow] * rounds`` for a slow row,
    None for a skipped one."""
    timed = [r for r in full if r.slow is None and not r.skipped]
    times = iter(_timed_rounds(timed, cfg, bar, what))
    out = []
    for r in full:
        if r.skipped:
            out.append(None)
            r.close()
        elif r.slow is not None:
            out.append([r.slow] * cfg.rounds)
            r.close()
        else:
            out.append(next(times))
    return out


def _ms(times: list[float] | None) -> float | None:
    return None if times is None else 1e3 * median(times)


def measure_model(model: Model, vs: Sequence[Variant], cfg: Config, bar: Any) -> list[dict]:
    """Raw figures of every row of ``model``: per-round step times, compile times."""
    full, lower, xla = _compile_full_steps(model, vs, cfg, bar)
    full_times = _full_times(full, cfg, bar, f"{model.spec.name}: full step")
    opt_runners = _optimizer_runners(model, vs, cfg, bar)
    opt_times = _timed_rounds(opt_runners, cfg, bar, f"{model.spec.name}: optimizer alone")
    rows = []
    for i, v in enumerate(vs):
        compiles = [a + b for a, b in zip(lower[i], xla[i], strict=True)]
        status = "skipped" if full[i].skipped else "slow" if full[i].slow else "ok"
        rows.append(
            {
                "variant": v.name,
                "family": v.family,
                "layout": v.layout,
                "packed_params": v.packed_params,
                "status": status,
                "step_s": full_times[i],
                "opt_s": opt_times[i],
                "compile_lower_s": lower[i],
                "compile_xla_s": xla[i],
                "step_ms": _ms(full_times[i]),
                "opt_ms": _ms(opt_times[i]),
                "compile_s": median(compiles) if compiles else None,
                "donated": bool(full[i].skipped or full[i].donated) and opt_runners[i].donated,
                "timed_steps": [full[i].timed_steps, opt_runners[i].timed_steps],
            }
        )
    return rows
