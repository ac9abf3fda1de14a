"""Method comparisons as the papers make them: tune a constant rate per method on a log
grid (one seed), then rerun the best rate with more seeds; curves as mean +- 1 sd.

Every run goes through :func:`optax_signvar.research.ablate`, so all methods of one comparison see
the same initial parameters and the same mini-batch keys for a given seed. A method whose
factory returns a :class:`MinibatchVariance` (an optimizer fed the variance of the mini-batch
gradient, Dissecting Adam sec. 4.1 and supplement D) runs through :func:`ablate_minibatch`
instead: ``ablate``'s loop, keys and records, with the gradient and its variance from
:func:`optax_signvar.minibatch.per_example_grad_moments` on the same mini-batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax

from optax_signvar import research

# rate -> keyword arguments of optax_signvar.dissect, or an optax transformation
Method = Callable[[float], Any]


@dataclass(frozen=True)
class MinibatchVariance:
    """An optimizer that takes ``update(grads, state, params, grad_variance=tree)``, the
    variance of the mini-batch gradient (e.g. ``optax_signvar.dissect(..., variance=
    "minibatch")``): :func:`tune_and_repeat` trains it with :func:`ablate_minibatch`."""

    optimizer: optax.GradientTransformationExtraArgs


# moments_fn(params, key) -> (mean gradient, variance of the mini-batch gradient) of the
# mini-batch that loss_fn(params, key) draws with the same key
MomentsFn = Callable[[Any, jax.Array], tuple[Any, Any]]


def ablate_minibatch(
    configs: Mapping[str, MinibatchVariance],
    loss_fn: Callable[[Any, jax.Array], jax.Array],
    moments_fn: MomentsFn,
    init_params: Callable[[jax.Array], Any],
    *,
    steps: int,
    seeds: Sequence[int] = (0,),
    log_every: int = 1,
    eval_fn: Callable[[Any], Mapping[str, jax.Array]] | None = None,
) -> list[dict]:
    """:func:`optax_signvar.research.ablate` for optimizers fed the mini-batch variance.

    The same seeds -> keys (``init_key, step_key = split(key(seed))``, one key of
    ``split(step_key, steps)`` per step), the same recorded steps and the same rows
    (``loss`` at the parameters before the update, ``mean_loss``, the ``eval_fn``
    columns), so its runs line up with ``ablate``'s run for run. Each step is
    ``loss_fn(params, key)`` (the recorded loss, a forward pass) and ``moments_fn(params,
    key)``, whose mean gradient (equal to ``jax.grad(loss_fn)``'s) and variance go to
    ``update(grads, state, params, grad_variance=variance)``.
    """
    optimizers = {name: config.optimizer for name, config in configs.items()}
    return research.ablate(
        optimizers,
        loss_fn,
        init_params,
        steps=steps,
        seeds=seeds,
        log_every=log_every,
        eval_fn=eval_fn,
        moments_fn=moments_fn,
    )


def _final(rows: list[dict], column: str) -> float:
    last = max(r["step"] for r in rows)
    values = [r[column] for r in rows if r["step"] == last]
    value = float(np.mean(values))
    return value if math.isfinite(value) else math.nan


def tune_and_repeat(
    ctx: Any,
    methods: Mapping[str, Method],
    grid: Sequence[float] | Mapping[str, Sequence[float]],
    loss_fn: Callable,
    init_params: Any,
    *,
    steps: int,
    seeds: Sequence[int],
    select: str,
    maximize: bool,
    log_every: int,
    eval_fn: Callable | None = None,
    moments_fn: MomentsFn | None = None,
) -> dict:
    """Tunes each method's rate on ``grid`` with ``seeds[0]``, then runs the best on all seeds.

    Args:
      ctx: the experiment's context (progress bars).
      methods: name -> function of the rate returning the optimizer (or dissect kwargs).
      grid: the rates to try, for all methods or per method name.
      loss_fn, init_params, steps, log_every, eval_fn: as :func:`optax_signvar.research.ablate`.
      seeds: the seeds of the final runs; the first also tunes, and its tuning run is
        reused.
      select: the column whose final value (mean over seeds) picks the rate.
      maximize: pick the largest (accuracy) instead of the smallest (loss) value.
      moments_fn: ``moments_fn(params, key) -> (grad_mean, grad_variance)`` of the
        mini-batch ``loss_fn(params, key)`` draws; needed by the methods whose factory
        returns a :class:`MinibatchVariance` (run with :func:`ablate_minibatch`).

    Returns:
      ``{"grid": {method: {rate: final select value}}, "best": {method: rate},
      "rows": rows of the best rate's runs (all seeds), "final": {method: {column:
      [mean, sd]}}, "seconds": {method: {rate: seconds}}}`` (``seconds``: each tuning
      run's wall time, compilation included); a diverged run (NaN) never wins.
    """
    seeds = list(seeds)
    grids = {m: list(grid[m] if isinstance(grid, Mapping) else grid) for m in methods}
    common = dict(steps=steps, log_every=log_every, eval_fn=eval_fn)

    def ablate(name: str, config: Any, run_seeds: list[int]) -> list[dict]:
        if isinstance(config, MinibatchVariance):
            if moments_fn is None:
                raise ValueError(f"{name} takes the mini-batch variance: pass moments_fn.")
            return ablate_minibatch(
                {name: config}, loss_fn, moments_fn, init_params, seeds=run_seeds, **common
            )
        return research.ablate({name: config}, loss_fn, init_params, seeds=run_seeds, **common)

    seconds: dict[str, dict[float, float]] = {}
    scores: dict[str, dict[float, float]] = {}
    tuned_rows: dict[tuple[str, float], list[dict]] = {}
    bar = ctx.progress(total=sum(map(len, grids.values())) + len(methods), desc="runs")
    for name, make in methods.items():
        scores[name] = {}
        seconds[name] = {}
        for rate in grids[name]:
            start = time.perf_counter()
            rows = ablate(name, make(rate), seeds[:1])
            seconds[name][rate] = time.perf_counter() - start
            tuned_rows[(name, rate)] = rows
            scores[name][rate] = _final(rows, select)
            bar.update(1)
            bar.set_postfix_str(f"{name} rate={rate:g} {select}={scores[name][rate]:.4g}")
    best = {}
    for name, by_rate in scores.items():
        finite = {r: v for r, v in by_rate.items() if math.isfinite(v)}
        pick = max if maximize else min
        best[name] = pick(finite, key=finite.__getitem__) if finite else grids[name][0]
    rows: list[dict] = []
    for name, make in methods.items():
        rows += tuned_rows[(name, best[name])]
        if len(seeds) > 1:
            rows += ablate(name, make(best[name]), seeds[1:])
        bar.update(1)
    bar.close()
    out = {"grid": scores, "best": best, "rows": rows, "final": final_table(rows)}
    return out | {"seconds": seconds}


def final_table(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """{config: {column: [mean, sd]}} at each configuration's last recorded step."""
    table: dict[str, dict[str, list[float]]] = {}
    columns = [k for k in rows[0] if k not in ("config", "seed", "step")] if rows else []
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        last = max(r["step"] for r in mine)
        at_end = [r for r in mine if r["step"] == last]
        table[config] = {
            c: [float(np.mean([r[c] for r in at_end])), float(np.std([r[c] for r in at_end]))]
            for c in columns
        }
    return table


def plot_band(ax: Any, rows: list[dict], column: str, *, label_fmt: str = "{config}") -> None:
    """Mean +- 1 sd over seeds of ``column`` against step, one line per configuration."""
    for config in dict.fromkeys(r["config"] for r in rows):
        summary = research.summarize([r for r in rows if r["config"] == config], value=column)
        steps = np.array([s["step"] for s in summary])
        mean = np.array([s["mean"] for s in summary])
        std = np.array([s["std"] for s in summary])
        (line,) = ax.plot(steps, mean, label=label_fmt.format(config=config))
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(column)
