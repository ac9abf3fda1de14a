"""Compile time: trace + lower and XLA's compile of the donated step, and its op count."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.speed.config import LR, Config, Factory, Pair
from benchmarks.speed.harness import median, median_ratio, optimizer_step


def compile_tree_shapes(n_leaves: int) -> dict[str, tuple[int, ...]]:
    """Many small leaves of mixed rank: compile time grows with the leaf count, not size."""
    patterns = ((64,), (32, 32), (8, 8, 4), (128, 16), (3, 5), (256,))
    return {f"leaf_{i:03d}": patterns[i % len(patterns)] for i in range(n_leaves)}


def large_compile_tree_shapes(n_leaves: int) -> dict[str, tuple[int, ...]]:
    """A few large leaves (2^18 elements each), where per-element code choices show:
    ``m_vassd`` evaluates erf inline on leaves of 2^16+ elements on a CPU (see blocks)."""
    patterns = ((512, 512), (2**18,), (64, 64, 64))
    return {f"large_{i:02d}": patterns[i % len(patterns)] for i in range(n_leaves)}


def lower_compile_seconds(factory: Factory, params: Any) -> tuple[float, float, int]:
    """Seconds to trace + lower the donated step and for XLA to compile it; its op count."""
    opt = factory()
    state = jax.eval_shape(opt.init, params)
    # A new function object and cleared caches, so nothing traced before is reused.
    fn = jax.jit(optimizer_step(opt), donate_argnums=(0, 1))
    t0 = time.perf_counter()
    lowered = fn.lower(params, state, params)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    ops = len(re.findall(r"= (?:stablehlo|chlo)\.", lowered.as_text()))
    return t1 - t0, t2 - t1, ops


def compile_entries(pairs: Sequence[Pair]) -> list[tuple[str, Factory]]:
    """optax.adam (the reference), every counterpart once, then ours."""
    entries: dict[str, Factory] = {"optax.adam": lambda: optax.adam(LR)}
    for p in pairs:
        entries.setdefault(p.counterpart, p.theirs)
    return list(entries.items()) + [(p.name, p.ours) for p in pairs]


def measure_compiles(cfg: Config, pairs: Sequence[Pair], bar: Any) -> dict[str, Any]:
    """Both compile tables: ``compile`` (many small leaves), ``compile_large`` (few large)."""
    return {
        "compile": measure_compile(
            cfg, pairs, bar, compile_tree_shapes(cfg.compile_leaves), "many small leaves"
        ),
        "compile_large": measure_compile(
            cfg,
            pairs,
            bar,
            large_compile_tree_shapes(cfg.compile_large_leaves),
            "few large leaves",
        ),
    }


def measure_compile(
    cfg: Config, pairs: Sequence[Pair], bar: Any, shapes: dict[str, tuple[int, ...]], tree: str
) -> dict[str, Any]:
    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
    entries = compile_entries(pairs)
    lower: dict[str, list[float]] = {name: [] for name, _ in entries}
    xla: dict[str, list[float]] = {name: [] for name, _ in entries}
    ops: dict[str, int] = {}
    for _ in range(cfg.compile_repeats):
        # Interleaved like the step timings, so drift in machine load hits all alike.
        for name, factory in entries:
            bar.set_description(f"compile {name}")
            jax.clear_caches()
            t_lower, t_xla, ops[name] = lower_compile_seconds(factory, params)
            lower[name].append(t_lower)
            xla[name].append(t_xla)
            bar.update(1)
    times = {name: [a + b for a, b in zip(lower[name], xla[name], strict=True)] for name in lower}

    def row(name: str, counterpart: str) -> dict[str, Any]:
        # compiles of one repeat ran back to back: their ratio cancels drift in machine load
        return {
            "s": median(times[name]),
            "lower_s": median(lower[name]),
            "xla_s": median(xla[name]),
            "ops_per_leaf": ops[name] / len(shapes),
            "counterpart_ops_per_leaf": ops[counterpart] / len(shapes),
            "ratio": median_ratio(times[name], times["optax.adam"]),
            "counterpart": counterpart,
            "counterpart_s": median(times[counterpart]),
            "counterpart_ratio": median_ratio(times[name], times[counterpart]),
        }

    return {
        "tree": tree,
        "n_leaves": len(shapes),
        "n_params": sum(int(np.prod(s)) for s in shapes.values()),
        "repeats": cfg.compile_repeats,
        "optax_adam_s": median(times["optax.adam"]),
        "optax_adam_lower_s": median(lower["optax.adam"]),
        "optax_adam_xla_s": median(xla["optax.adam"]),
        "optax_adam_ops_per_leaf": ops["optax.adam"] / len(shapes),
        "optimizers": {p.name: row(p.name, p.counterpart) for p in pairs},
        "all_s": times,
    }
