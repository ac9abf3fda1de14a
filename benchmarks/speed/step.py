"""Step-time measurements: copy bandwidth, and every pair against optax and the floor kernel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.speed.config import Config, Pair
from benchmarks.speed.harness import (
    Runner,
    buffer_leaves,
    copy_step,
    floor_runner,
    fresh_copy,
    fresh_copy_step,
    interleaved_times,
    make_params,
    median,
    median_ratio,
    optimizer_runner,
    tree_bytes,
)
from benchmarks.speed.memory import memory_stats


def measure_copy(cfg: Config) -> dict[str, Any]:
    """Device copy bandwidth: the better of an in-place ``x + c`` and a copy into a new buffer.

    Both read and write ``n`` float32; the in-place form has shown odd slowness on a GPU
    (no faster than kernels moving 1.5x the bytes), so the fresh copy is timed too.
    """
    n = max(cfg.sizes)
    x = jax.random.normal(jax.random.key(0), (n,), jnp.float32)
    nbytes = 2 * n * 4
    out: dict[str, Any] = {"n": n, "bytes": nbytes}
    for name, fn, b in (
        ("in_place", copy_step, ()),
        ("fresh", fresh_copy_step, jnp.zeros_like(x)),
    ):
        r = Runner(fn, fresh_copy(x), b, jnp.float32(1.0))
        r.warm(cfg.warmup)
        t = median([r.time(cfg.steps) for _ in range(cfg.rounds)])
        r.close()
        out[name] = {"ms": 1e3 * t, "gbps": nbytes / t / 1e9}
    best = max(("in_place", "fresh"), key=lambda k: out[k]["gbps"])
    out.update(kind=best, ms=out[best]["ms"], gbps=out[best]["gbps"])
    return out


def measure_layout(
    cfg: Config, pairs: Sequence[Pair], size: int, layout: str, bar: Any
) -> list[dict[str, Any]]:
    """Every pair on one size and layout: floor, ours and optax interleaved per round."""
    params = make_params(size, layout, jax.random.key(1))
    grads = jax.tree.map(lambda p: 0.01 * jnp.sign(p) + 1e-3 * p, params)
    # The floor kernels, by state-buffer count, shared by the pairs that keep as many.
    floors: dict[int, Runner] = {}
    rows = []
    for pair in pairs:
        bar.set_description(f"{pair.name} {layout} {size:.0e}")
        rows.append(_measure_pair(cfg, pair, size, layout, params, grads, floors))
        bar.update(1)
    for r in floors.values():
        r.close()
    return rows


def _measure_pair(
    cfg: Config,
    pair: Pair,
    size: int,
    layout: str,
    params: Any,
    grads: Any,
    floors: dict[int, Runner],
) -> dict[str, Any]:
    """One pair's row: ours, optax's and the floor kernels for both, timed interleaved."""
    ours = optimizer_runner(pair.ours, params, grads)
    theirs = optimizer_runner(pair.theirs, params, grads)
    n_leaves = len(jax.tree.leaves(params))
    # Buffer counts are in leaves; the floor kernel needs them in whole param trees.
    bufs_ours = len(buffer_leaves(ours.b)) // n_leaves
    bufs_theirs = len(buffer_leaves(theirs.b)) // n_leaves
    for k in {bufs_ours, bufs_theirs}:
        if k not in floors:
            floors[k] = floor_runner(params, grads, k)
            floors[k].warm(cfg.warmup)
    ours.warm(cfg.warmup)
    theirs.warm(cfg.warmup)
    # the two floors are one runner when ours and optax's keep as many buffers
    runners = (floors[bufs_ours], floors[bufs_theirs], ours, theirs)
    t_f, t_ft, t_o, t_t = interleaved_times(runners, cfg.rounds, cfg.steps)
    p_bytes = tree_bytes(params)
    nbytes = 2 * p_bytes + p_bytes + 2 * tree_bytes(buffer_leaves(ours.b))
    row = {
        "optimizer": pair.name,
        "counterpart": pair.counterpart,
        "size": size,
        "layout": layout,
        "n_params": sum(int(x.size) for x in jax.tree.leaves(params)),
        "n_leaves": n_leaves,
        "state_buffers": bufs_ours,
        "counterpart_state_buffers": bufs_theirs,
        "bytes_per_step": nbytes,
        "ours_ms": 1e3 * median(t_o),
        "optax_ms": 1e3 * median(t_t),
        "ratio": median_ratio(t_o, t_t),
        "gbps": nbytes / median(t_o) / 1e9,
        "floor_ms": 1e3 * median(t_f),
        "floor_gbps": nbytes / median(t_f) / 1e9,
        "time_per_floor": median_ratio(t_o, t_f),
        "optax_time_per_floor": median_ratio(t_t, t_ft),
        "donated": bool(ours.donated and theirs.donated),
        "memory": {"ours": memory_stats(ours.compiled), "optax": memory_stats(theirs.compiled)},
        "round_ms": {
            "ours": [1e3 * t for t in t_o],
            "optax": [1e3 * t for t in t_t],
            "floor": [1e3 * t for t in t_f],
        },
    }
    ours.close()
    theirs.close()
    return row
