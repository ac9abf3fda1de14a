"""Method comparisons as the papers make them: tune a constant rate per method on a log
grid (one seed), then rerun the best rate with more seeds; curves as mean +- 1 sd.

Every run goes through :func:`optax_signvar.research.ablate`, so all methods of one comparison see
the same initial parameters and the same mini-batch keys for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from optax_signvar import research

# rate -> keyword arguments of optax_signvar.dissect, or an optax transformation
Method = Callable[[float], Any]


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

    Returns:
      ``{"grid": {method: {rate: final select value}}, "best": {method: rate},
      "rows": rows of the best rate's runs (all seeds), "final": {method: {column:
      [mean, sd]}}}``; a diverged run (NaN) never wins.
    """
    seeds = list(seeds)
    grids = {m: list(grid[m] if isinstance(grid, Mapping) else grid) for m in methods}
    common = dict(steps=steps, log_every=log_every, eval_fn=eval_fn)
    scores: dict[str, dict[float, float]] = {}
    tuned_rows: dict[tuple[str, float], list[dict]] = {}
    bar = ctx.progress(total=sum(map(len, grids.values())) + len(methods), desc="runs")
    for name, make in methods.items():
        scores[name] = {}
        for rate in grids[name]:
            rows = research.ablate(
                {name: make(rate)}, loss_fn, init_params, seeds=seeds[:1], **common
            )
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
            rows += research.ablate(
                {name: make(best[name])}, loss_fn, init_params, seeds=seeds[1:], **common
            )
        bar.update(1)
    bar.close()
    return {"grid": scores, "best": best, "rows": rows, "final": final_table(rows)}


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
