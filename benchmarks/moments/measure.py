"""Compiles, XLA's memory analysis, interleaved timing, agreement between methods, paths.

Every timed function is ``jax.jit(f).lower(params, batch).compile()`` of ``f(params,
batch)``; nothing is donated. A round times every row of a model back to back (the median
of its steps); a row's steps are chosen from its first timed call so a round costs about
``ROW_BUDGET_S`` per row (1 for rows slower than that, at most ``--steps``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from benchmarks.moments import methods as M
from benchmarks.moments.models import Model

ROW_BUDGET_S = 0.4
# --quick compiles with XLA's backend optimizations off (a smoke run is mostly compiles,
# several times faster that way); its timings mean nothing. Set by ``set_quick``.
_OPTIONS: dict[str, Any] | None = None


def set_quick(quick: bool) -> None:
    global _OPTIONS
    _OPTIONS = {"xla_backend_optimization_level": 0} if quick else None


def compile_fn(fn: Callable, *args: Any) -> Any:
    return jax.jit(fn).lower(*args).compile(compiler_options=_OPTIONS)


@dataclass
class Row:
    """One compiled function of (params, batch) and its per-round median times."""

    name: str
    compiled: Any
    args: tuple[Any, ...]
    compile_s: float
    memory: dict[str, int]
    steps: int = 1
    times: list[float] = field(default_factory=list)
    out: Any = None

    def call(self) -> Any:
        return jax.block_until_ready(self.compiled(*self.args))


def memory(compiled: Any) -> dict[str, int]:
    """Argument, output, temp bytes of a compiled function and their sum (``total``, the
    figure the report's ratios use; nothing is donated, so no alias to subtract)."""
    m = compiled.memory_analysis()
    out = {
        "argument": int(m.argument_size_in_bytes),
        "output": int(m.output_size_in_bytes),
        "temp": int(m.temp_size_in_bytes),
        "alias": int(m.alias_size_in_bytes),
    }
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    peak = getattr(m, "peak_memory_in_bytes", 0)
    out["xla_peak"] = int(peak or 0)  # 0: the backend does not report one
    return out


def make_row(name: str, fn: Callable[[Any, Any], Any], params: Any, batch: Any) -> Row:
    t0 = time.perf_counter()
    compiled = compile_fn(fn, params, batch)
    compile_s = time.perf_counter() - t0
    return Row(name, compiled, (params, batch), compile_s, memory(compiled))


def calibrate(row: Row, max_steps: int) -> None:
    """Warms ``row`` (keeping its output for the agreement check) and sets its steps."""
    row.out = row.call()
    t0 = time.perf_counter()
    row.call()
    dt = time.perf_counter() - t0
    row.steps = int(max(1, min(max_steps, ROW_BUDGET_S // max(dt, 1e-6))))


def interleave(rows: Sequence[Row], rounds: int) -> None:
    for _ in range(rounds):
        for r in rows:
            r.call()  # one untimed call: the previous row's buffers are gone from cache
            ts = []
            for _ in range(r.steps):
                t0 = time.perf_counter()
                r.call()
                ts.append(time.perf_counter() - t0)
            r.times.append(statistics.median(ts))


def median_ratio(xs: Sequence[float], ys: Sequence[float]) -> float:
    return float(statistics.median(x / y for x, y in zip(xs, ys, strict=True)))


def summary(row: Row, base: Row) -> dict[str, Any]:
    return {
        "ms": 1e3 * statistics.median(row.times),
        "ratio": median_ratio(row.times, base.times),
        "round_ms": [1e3 * t for t in row.times],
        "steps": row.steps,
        "compile_s": row.compile_s,
        "memory": row.memory,
        "memory_ratio": row.memory["total"] / base.memory["total"],
    }


# --------------------------------------------------------------------------- #
# Agreement and paths.
# --------------------------------------------------------------------------- #


def max_rel_diff(a: Any, b: Any, floor: float = 1e-4) -> float:
    """max over leaves of max|a - b| / scale, scale the leaf's max|b|, but at least ``floor``
    times the largest max|b| of the tree (a leaf whose exact value is 0, as the gradient of
    an attention key's bias, would divide rounding noise by rounding noise)."""
    xs = [np.asarray(x, np.float64) for x in jax.tree.leaves(a)]
    ys = [np.asarray(y, np.float64) for y in jax.tree.leaves(b)]
    top = max((float(np.max(np.abs(y))) for y in ys if y.size), default=0.0)
    worst = 0.0
    for x, y in zip(xs, ys, strict=True):
        if not y.size:
            continue
        scale = max(float(np.max(np.abs(y))), floor * top)
        diff = float(np.max(np.abs(x - y)))
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def agreement(rows: dict[str, Row], reference: str = "vmap") -> dict[str, dict[str, float]]:
    """Each method's largest relative deviation from ``reference``'s mean and variance."""
    if reference not in rows:
        return {}
    ref_mean, ref_var = rows[reference].out
    return {
        name: {
            "mean": max_rel_diff(r.out[0], ref_mean),
            "variance": max_rel_diff(r.out[1], ref_var),
        }
        for name, r in rows.items()
        if name != reference and name in M.METHODS
    }


def category(path: str) -> str:
    return path.split(":", 1)[0].strip()


def leaf_table(model: Model, paths: Any | None) -> list[dict[str, Any]]:
    """Every leaf: its name, shape, layer kind and path (``None`` where not known)."""
    rows = []
    flat_kinds = jax.tree_util.tree_leaves_with_path(model.kinds)
    flat_paths = [None] * len(flat_kinds) if paths is None else jax.tree.leaves(paths)
    flat_params = jax.tree.leaves(model.params)
    for (key, kind), path, p in zip(flat_kinds, flat_paths, flat_params, strict=True):
        rows.append(
            {
                "leaf": jax.tree_util.keystr(key, simple=True, separator="/"),
                "shape": list(np.shape(p)),
                "size": int(np.size(p)),
                "kind": kind,
                "path": path,
            }
        )
    return rows


def kind_shares(leaves: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per layer kind: its parameters, the share on each path category, the paths seen."""
    out: dict[str, dict[str, Any]] = {}
    for leaf in leaves:
        k = out.setdefault(leaf["kind"], {"params": 0, "leaves": 0, "by_path": {}, "paths": []})
        k["params"] += leaf["size"]
        k["leaves"] += 1
        if leaf["path"] is not None:
            cat = category(leaf["path"])
            k["by_path"][cat] = k["by_path"].get(cat, 0) + leaf["size"]
            if leaf["path"] not in k["paths"]:
                k["paths"].append(leaf["path"])
    for k in out.values():
        k["shares"] = {c: n / k["params"] for c, n in k["by_path"].items()}
    return out


def restricted(model: Model, kind: str) -> tuple[Callable, Any]:
    """The loss as a function of the leaves of one layer kind only (a list), the others
    closed over as constants; and those leaves."""
    leaves, treedef = jax.tree.flatten(model.params)
    kinds = jax.tree.leaves(model.kinds)
    idx = [i for i, k in enumerate(kinds) if k == kind]

    def loss_fn(sub, example):
        full = list(leaves)
        for i, x in zip(idx, sub, strict=True):
            full[i] = x
        return model.loss_fn(jax.tree.unflatten(treedef, full), example)

    return loss_fn, [leaves[i] for i in idx]
