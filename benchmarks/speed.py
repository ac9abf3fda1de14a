"""Step time, bandwidth, memory and compile time of every named optimizer against optax.

Every named optimizer and its nearest optax counterpart are timed in the same process, each
as one jitted step ``update + optax.apply_updates`` compiled with
``donate_argnums=(0, 1)`` (params and state donated, as a training loop would), on float32
parameters laid out as one flat array and as a realistic tree (a few large leaves holding
most parameters plus ~46 small ones). The machine is assumed noisy: in each of R rounds the
floor kernel, ours and optax's are timed back to back (median of S steps each), and every
figure below is the median over the rounds of these per-round medians (ratios are the
median of the per-round ratios, not a ratio of medians). Every round starts each runner on
newly allocated buffers, so a slow allocation (no huge pages, say) spoils one round, not all.
Default sizes: 1M and 10M parameters, plus 100M when ``jax.default_backend() == "gpu"``; 20
steps, 9 rounds.

Usage::

    python -m benchmarks.speed                        # full run, ~7 minutes on 2 CPU cores
    python -m benchmarks.speed --quick                # smoke run, < ~40 s on 2 CPU cores
    python -m benchmarks.speed --sizes 1e6,1e7 --repeats 5 --steps 20 \\
        --optimizers adam,m_svag --out DIR --no-torch --no-progress

Writes ``<out>/<machine>.md`` and ``<out>/<machine>.json`` (``<machine>-quick.*`` with
``--quick``), where ``<machine>`` is ``<cpu model>_<cores>cpu_<device kind>``; the markdown is
also printed.

Columns of the step-time tables:

* ``ours ms`` / ``optax ms``: median step time of ours / of the optax counterpart.
* ``ours/optax``: median over rounds of the per-round ratio; < 1 means ours is faster.
* ``GB/s``: bytes a step must move at least (params read and written, grads read, each
  state buffer read and written: ``2 P + G + 2 S``) over our median step time.
* ``/floor``: our step time over that of the floor kernel, a trivial donated step that
  moves exactly the same bytes (``p + c g`` and ``s c1 + c2 g`` on the same number of state
  buffers); 1.0 is as fast as memory traffic allows, the excess is arithmetic and extra
  passes. ``optax /floor`` is the same for the counterpart (same buffer count).

Floor table: the floor kernel per state-buffer count (``bufs``), its step time and GB/s.
``copy GB/s`` is a donated ``x + c`` on one array of the largest size (read + write).

Memory table: ``state/param`` is the optimizer state's bytes (leaves with ``ndim > 0``,
i.e. not the step count) over the parameters' bytes, ours and optax's. ``arg``, ``out``,
``alias``, ``temp`` and ``peak`` MiB come from XLA's ``memory_analysis()`` of the compiled
donated step at the largest size (tree layout): ``alias`` is the output memory that reuses
donated inputs, ``temp`` the scratch XLA needs on top (0 means the step ran in place), and
``peak`` XLA's peak (or ``arg + out - alias + temp`` where XLA reports none).

Compile tables: wall time of ``jax.jit(step).lower(...).compile()`` on a tree of many small
mixed-shape leaves (200; 20 with ``--quick``) and on one of a few large leaves (20 of 2^18
elements; 2 with ``--quick``), median of fresh compiles with
``jax.clear_caches()`` before each (9; 1 with ``--quick``), split into trace + lower and
XLA's compile, against ``optax.adam`` and against the optimizer's own counterpart compiled
the same way (ratios: median over the repeats of the per-repeat ratio). ``ops/leaf``
is the number of StableHLO ops of the lowered step over the number of leaves: both parts of
the compile time grow with it.

Torch table ("what a user would pick instead"): ``torch.optim.Adam`` (fused, or foreach
where fused is unsupported, as named in the row), with ``amsgrad=True``, and the AdaBound
authors' ``adabound`` package (``amsbound=True`` too), timing ``opt.step()`` with ``p.grad``
set on one flat parameter, torch threads at their default, interleaved per round with our
flat donated step of the same size; ``ours/torch`` < 1 means ours is faster.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_signvar as osv

LR = 1e-3
WEIGHT_DECAY = 1e-4
MiB = 2**20

Factory = Callable[[], optax.GradientTransformation]


@dataclass(frozen=True)
class Pair:
    """One of our optimizers and the optax optimizer a user would otherwise reach for."""

    name: str
    ours: Factory
    counterpart: str
    theirs: Factory


PAIRS: tuple[Pair, ...] = (
    Pair("adam", lambda: osv.adam(LR), "optax.adam", lambda: optax.adam(LR)),
    Pair("amsgrad", lambda: osv.amsgrad(LR), "optax.amsgrad", lambda: optax.amsgrad(LR)),
    Pair("adabound", lambda: osv.adabound(LR), "optax.adam", lambda: optax.adam(LR)),
    Pair("amsbound", lambda: osv.amsbound(LR), "optax.amsgrad", lambda: optax.amsgrad(LR)),
    Pair(
        "adaboundw",
        lambda: osv.adaboundw(LR, weight_decay=WEIGHT_DECAY),
        "optax.adam",
        lambda: optax.adam(LR),
    ),
    Pair(
        "amsboundw",
        lambda: osv.amsboundw(LR, weight_decay=WEIGHT_DECAY),
        "optax.amsgrad",
        lambda: optax.amsgrad(LR),
    ),
    Pair(
        "m_sgd",
        lambda: osv.m_sgd(LR),
        "optax.sgd(momentum=0.9)",
        lambda: optax.sgd(LR, momentum=0.9),
    ),
    Pair("ssd", lambda: osv.ssd(LR), "optax.sign_sgd", lambda: optax.sign_sgd(LR)),
    Pair("m_ssd", lambda: osv.m_ssd(LR), "optax.signum", lambda: optax.signum(LR)),
    Pair("svag", lambda: osv.svag(LR), "optax.adam", lambda: optax.adam(LR)),
    Pair("m_svag", lambda: osv.m_svag(LR), "optax.adam", lambda: optax.adam(LR)),
    Pair("m_vassd", lambda: osv.m_vassd(LR), "optax.adam", lambda: optax.adam(LR)),
)
PAIR_BY_NAME = {p.name: p for p in PAIRS}

# Our optimizer -> the torch alternative a PyTorch user would pick instead.
TORCH_ALTERNATIVES = ("adam", "amsgrad", "adabound", "amsbound")


@dataclass
class Config:
    sizes: list[int]
    steps: int
    rounds: int
    warmup: int
    compile_leaves: int
    compile_large_leaves: int
    compile_repeats: int
    torch: bool
    optimizers: list[str]
    out: Path
    quick: bool
    progress: bool


# --------------------------------------------------------------------------- #
# Machine and parameter layouts.
# --------------------------------------------------------------------------- #


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    # A container's affinity mask, not the host's core count, is what the step can use.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_slug() -> str:
    model = re.sub(r"\((r|tm)\)", " ", cpu_model().lower())
    model = model.split("@")[0]  # an Intel model name's clock says nothing the model doesn't
    model = re.sub(r"\b(cpu|processor)\b", " ", model)
    return f"{_slug(model)}_{cpu_cores()}cpu_{_slug(jax.devices()[0].device_kind)}"


def default_sizes() -> list[int]:
    if jax.default_backend() == "gpu":
        return [10**6, 10**7, 10**8]
    return [10**6, 10**7]


def tree_shapes(n: int, n_small: int = 46, n_large: int = 4) -> dict[str, tuple[int, ...]]:
    """Shapes of a model-like tree of about ``n`` parameters.

    ~95% of the parameters sit in ``n_large`` 2-D weight matrices; the rest is spread over
    ``n_small`` biases, norm scales and thin matrices, since per-leaf overhead (one fusion,
    one buffer each) is what a flat array hides.
    """
    unit = max(1, n // (20 * n_small))
    small_patterns = ((unit,), (unit,), (max(1, unit // 4), 4), (max(1, unit // 2), 2, 1))
    shapes = {f"small_{i:02d}": small_patterns[i % 4] for i in range(n_small)}
    left = n - sum(int(np.prod(s)) for s in shapes.values())
    per = max(1, left // n_large)
    cols = 2 ** max(0, round(np.log2(np.sqrt(per))))
    for i in range(n_large):
        shapes[f"large_{i}"] = (max(1, per // cols), cols)
    return shapes


def compile_tree_shapes(n_leaves: int) -> dict[str, tuple[int, ...]]:
    """Many small leaves of mixed rank: compile time grows with the leaf count, not size."""
    patterns = ((64,), (32, 32), (8, 8, 4), (128, 16), (3, 5), (256,))
    return {f"leaf_{i:03d}": patterns[i % len(patterns)] for i in range(n_leaves)}


def large_compile_tree_shapes(n_leaves: int) -> dict[str, tuple[int, ...]]:
    """A few large leaves (2^18 elements each), where per-element code choices show:
    ``m_vassd`` evaluates erf inline on leaves of 2^16+ elements on a CPU (see blocks)."""
    patterns = ((512, 512), (2**18,), (64, 64, 64))
    return {f"large_{i:02d}": patterns[i % len(patterns)] for i in range(n_leaves)}


def make_params(n: int, layout: str, key: jax.Array) -> Any:
    if layout == "flat":
        return 0.1 * jax.random.normal(key, (n,), jnp.float32)
    shapes = tree_shapes(n)
    keys = jax.random.split(key, len(shapes))
    return {
        name: 0.1 * jax.random.normal(k, shape, jnp.float32)
        for k, (name, shape) in zip(keys, sorted(shapes.items()), strict=True)
    }


def tree_bytes(tree: Any) -> int:
    return sum(int(x.size) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def buffer_leaves(state: Any) -> list[Any]:
    """The state's per-parameter buffers: every leaf but the scalar step counts."""
    return [x for x in jax.tree.leaves(state) if len(x.shape) > 0]


def state_per_param(factory: Factory, params: Any) -> float:
    # eval_shape: the ratio needs shapes only, so nothing of the largest size is allocated.
    state = jax.eval_shape(factory().init, params)
    return tree_bytes(buffer_leaves(state)) / tree_bytes(params)


def fresh_copy(tree: Any) -> Any:
    # Every runner gets buffers of its own: a donated buffer shared with another runner (or
    # twice within one state) would be deleted under the other's feet.
    return jax.tree.map(lambda x: x.copy(), tree)


# --------------------------------------------------------------------------- #
# The donated steps and their timing.
# --------------------------------------------------------------------------- #


def optimizer_step(opt: optax.GradientTransformation) -> Callable:
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def floor_step(params, bufs, grads):
    """The cheapest step moving an optimizer's bytes: read p, g, each buffer; write p, each."""
    params = jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)
    bufs = tuple(jax.tree.map(lambda s, g: 0.9 * s + 0.1 * g, b, grads) for b in bufs)
    return params, bufs


def copy_step(x, unused, c):
    # c is a runtime scalar so XLA cannot fold the add away and alias the output to x.
    return x + c, unused


def fresh_copy_step(x, unused, c):
    # Reads x and writes a new buffer (x itself is not donated): a plain device copy.
    del unused
    return x, x * c


class Runner:
    """One AOT-compiled donated step ``(a, b, c) -> (a, b)`` and the live buffers it owns."""

    def __init__(self, fn: Callable, a: Any, b: Any, c: Any):
        self.compiled = jax.jit(fn, donate_argnums=(0, 1)).lower(a, b, c).compile()
        self.a, self.b, self.c = a, b, c
        self.donated: bool | None = None

    def step(self) -> None:
        # The old a, b are donated (deleted) by the call: only the outputs are used again.
        self.a, self.b = self.compiled(self.a, self.b, self.c)
        jax.block_until_ready((self.a, self.b))

    def warm(self, n: int) -> None:
        old = jax.tree.leaves((self.a, self.b))
        self.step()
        # A backend that ignores donation would time copies instead of in-place updates.
        self.donated = all(x.is_deleted() for x in old)
        for _ in range(max(0, n - 1)):
            self.step()

    def time(self, n: int) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def refresh(self) -> None:
        """Moves the live buffers to new allocations: where an allocation lands (huge pages
        or not, its alignment) can slow one runner's every step for the life of the buffer
        (seen: 1.6x on one 10M run, none in a fresh process), so each round gets new ones."""
        old = (self.a, self.b)
        self.a, self.b = fresh_copy(old[0]), fresh_copy(old[1])
        for x in jax.tree.leaves(old):
            x.delete()

    def memory(self) -> dict[str, Any] | None:
        return memory_stats(self.compiled)

    def close(self) -> None:
        for x in jax.tree.leaves((self.a, self.b)):
            x.delete()


def optimizer_runner(factory: Factory, params: Any, grads: Any) -> Runner:
    opt = factory()
    params = fresh_copy(params)
    state = fresh_copy(opt.init(params))
    return Runner(optimizer_step(opt), params, state, grads)


def floor_runner(params: Any, grads: Any, n_buffers: int) -> Runner:
    bufs = tuple(jax.tree.map(jnp.zeros_like, params) for _ in range(n_buffers))
    return Runner(floor_step, fresh_copy(params), bufs, grads)


def memory_stats(compiled: Any) -> dict[str, Any] | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        return None
    if m is None:
        return None
    out: dict[str, Any] = {}
    for key in ("argument", "output", "alias", "temp", "generated_code"):
        v = getattr(m, f"{key}_size_in_bytes", None)
        if v is not None:
            out[key] = int(v)
    peak = getattr(m, "peak_memory_in_bytes", None)
    if peak:
        out["peak"], out["peak_estimated"] = int(peak), False
    elif all(k in out for k in ("argument", "output", "alias", "temp")):
        out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
        out["peak_estimated"] = True
    return out or None


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# --------------------------------------------------------------------------- #
# Measurements.
# --------------------------------------------------------------------------- #


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
    p_bytes = tree_bytes(params)
    floors: dict[int, Runner] = {}
    rows = []
    for pair in pairs:
        bar.set_description(f"{pair.name} {layout} {size:.0e}")
        ours = optimizer_runner(pair.ours, params, grads)
        theirs = optimizer_runner(pair.theirs, params, grads)
        k_ours, k_theirs = len(buffer_leaves(ours.b)), len(buffer_leaves(theirs.b))
        n_leaves = len(jax.tree.leaves(params))
        # Buffer counts are in leaves; the floor kernel needs them in whole param trees.
        bufs_ours, bufs_theirs = k_ours // n_leaves, k_theirs // n_leaves
        for k in {bufs_ours, bufs_theirs}:
            if k not in floors:
                floors[k] = floor_runner(params, grads, k)
                floors[k].warm(cfg.warmup)
        ours.warm(cfg.warmup)
        theirs.warm(cfg.warmup)
        t_o, t_t, t_f, t_ft = [], [], [], []
        # the two floors are one runner when ours and optax's keep as many buffers
        runners = (floors[bufs_ours], floors[bufs_theirs], ours, theirs)
        timed = list({id(r): r for r in runners}.values())
        for _ in range(cfg.rounds):
            for r in timed:
                r.refresh()
                r.warm(1)
            t_f.append(floors[bufs_ours].time(cfg.steps))
            t_ft.append(
                floors[bufs_theirs].time(cfg.steps) if bufs_theirs != bufs_ours else t_f[-1]
            )
            t_o.append(ours.time(cfg.steps))
            t_t.append(theirs.time(cfg.steps))
        s_bytes = tree_bytes(buffer_leaves(ours.b))
        nbytes = 2 * p_bytes + p_bytes + 2 * s_bytes
        rows.append(
            {
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
                "ratio": median([o / t for o, t in zip(t_o, t_t, strict=True)]),
                "gbps": nbytes / median(t_o) / 1e9,
                "floor_ms": 1e3 * median(t_f),
                "floor_gbps": nbytes / median(t_f) / 1e9,
                "time_per_floor": median([o / f for o, f in zip(t_o, t_f, strict=True)]),
                "optax_time_per_floor": median([t / f for t, f in zip(t_t, t_ft, strict=True)]),
                "donated": bool(ours.donated and theirs.donated),
                "memory": {"ours": ours.memory(), "optax": theirs.memory()},
                "round_ms": {
                    "ours": [1e3 * t for t in t_o],
                    "optax": [1e3 * t for t in t_t],
                    "floor": [1e3 * t for t in t_f],
                },
            }
        )
        ours.close()
        theirs.close()
        bar.update(1)
    for r in floors.values():
        r.close()
    return rows


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
    ref = median(times["optax.adam"])

    def paired(name: str, other: str) -> float:
        # compiles of one repeat ran back to back: their ratio cancels drift in machine load
        return median([a / b for a, b in zip(times[name], times[other], strict=True)])

    def row(name: str, counterpart: str) -> dict[str, Any]:
        return {
            "s": median(times[name]),
            "lower_s": median(lower[name]),
            "xla_s": median(xla[name]),
            "ops_per_leaf": ops[name] / len(shapes),
            "counterpart_ops_per_leaf": ops[counterpart] / len(shapes),
            "ratio": paired(name, "optax.adam"),
            "counterpart": counterpart,
            "counterpart_s": median(times[counterpart]),
            "counterpart_ratio": paired(name, counterpart),
        }

    return {
        "tree": tree,
        "n_leaves": len(shapes),
        "n_params": sum(int(np.prod(s)) for s in shapes.values()),
        "repeats": cfg.compile_repeats,
        "optax_adam_s": ref,
        "optax_adam_lower_s": median(lower["optax.adam"]),
        "optax_adam_xla_s": median(xla["optax.adam"]),
        "optax_adam_ops_per_leaf": ops["optax.adam"] / len(shapes),
        "optimizers": {p.name: row(p.name, p.counterpart) for p in pairs},
        "all_s": times,
    }


def _torch_adam_impl(torch: Any, device: str) -> str:
    p = torch.nn.Parameter(torch.zeros(4, device=device))
    p.grad = torch.ones(4, device=device)
    try:
        torch.optim.Adam([p], lr=LR, fused=True).step()
        return "fused"
    except (RuntimeError, TypeError, ValueError):
        return "foreach"


def measure_torch(cfg: Config, pairs: Sequence[Pair], bar: Any) -> dict[str, Any]:
    import torch

    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    on_same_device = device == "cuda" or jax.default_backend() == "cpu"
    # CPU torch against a GPU jax step would compare devices, not implementations.
    n = max(cfg.sizes) if on_same_device else max(s for s in cfg.sizes if s <= 10**7)
    impl = _torch_adam_impl(torch, device)
    have_adabound = importlib.util.find_spec("adabound") is not None
    cases: dict[str, tuple[str, Callable[[list], Any]]] = {
        "adam": (
            f"torch.optim.Adam ({impl})",
            lambda ps: torch.optim.Adam(ps, lr=LR, **{impl: True}),
        ),
        "amsgrad": (
            f"torch.optim.Adam(amsgrad=True) ({impl})",
            lambda ps: torch.optim.Adam(ps, lr=LR, amsgrad=True, **{impl: True}),
        ),
    }
    if have_adabound:
        import adabound

        cases["adabound"] = ("adabound.AdaBound", lambda ps: adabound.AdaBound(ps, lr=LR))
        cases["amsbound"] = (
            "adabound.AdaBound(amsbound=True)",
            lambda ps: adabound.AdaBound(ps, lr=LR, amsbound=True),
        )
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def torch_time(opt: Any) -> float:
        times = []
        for _ in range(cfg.steps):
            t0 = time.perf_counter()
            opt.step()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    rows = []
    params = make_params(n, "flat", jax.random.key(2))
    grads = 0.01 * jnp.sign(params)
    for pair in pairs:
        if pair.name not in cases:
            continue
        label, make = cases[pair.name]
        bar.set_description(f"torch {label}")
        p = torch.nn.Parameter(torch.from_numpy(np.array(params)).to(device))
        p.grad = torch.from_numpy(np.array(grads)).to(device)
        opt = make([p])
        ours = optimizer_runner(pair.ours, params, grads)
        ours.warm(cfg.warmup)
        with warnings.catch_warnings():
            # The adabound package calls a deprecated torch overload on every step.
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(cfg.warmup):
                opt.step()
            sync()
            t_o, t_t = [], []
            for _ in range(cfg.rounds):
                t_o.append(ours.time(cfg.steps))
                t_t.append(torch_time(opt))
        ours.close()
        rows.append(
            {
                "optimizer": pair.name,
                "alternative": label,
                "ours_ms": 1e3 * median(t_o),
                "torch_ms": 1e3 * median(t_t),
                "ratio": median([o / t for o, t in zip(t_o, t_t, strict=True)]),
            }
        )
        bar.update(1)
    return {
        "n": n,
        "device": device,
        "threads": torch.get_num_threads(),
        "adam_impl": impl,
        "adabound_installed": have_adabound,
        "rows": rows,
    }


# --------------------------------------------------------------------------- #
# Report.
# --------------------------------------------------------------------------- #


def _fmt_n(n: int) -> str:
    for div, unit in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _g(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _mib(stats: dict[str, Any] | None, key: str) -> str:
    if not stats or key not in stats:
        return "-"
    return f"{stats[key] / MiB:.1f}" + ("~" if key == "peak" and stats["peak_estimated"] else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _compile_section(comp: dict[str, Any]) -> list[str]:
    lines = [
        f"## Compile time, {comp['tree']}",
        "",
        f"lower + compile of the donated step on {comp['n_leaves']} leaves "
        f"({_fmt_n(comp['n_params'])} params), median of {comp['repeats']} fresh compiles; "
        f"optax.adam: {comp['optax_adam_s']:.3g} s ({comp['optax_adam_lower_s']:.3g} s trace + "
        f"lower, {comp['optax_adam_xla_s']:.3g} s XLA, {comp['optax_adam_ops_per_leaf']:.0f} "
        "StableHLO ops per leaf). Both parts grow with the ops per leaf (the lowered module's "
        "op count over the number of leaves, step-count and scalar ops included), so an update "
        "with more arithmetic per element compiles longer on many-leaf trees.",
        "",
    ]
    lines += _table(
        [
            "optimizer",
            "s",
            "trace+lower s",
            "XLA s",
            "ops/leaf",
            "/optax.adam",
            "counterpart",
            "counterpart ops/leaf",
            "/counterpart",
        ],
        [
            [
                k,
                _g(v["s"]),
                _g(v["lower_s"]),
                _g(v["xla_s"]),
                f"{v['ops_per_leaf']:.0f}",
                _f(v["ratio"]),
                v["counterpart"],
                f"{v['counterpart_ops_per_leaf']:.0f}",
                _f(v["counterpart_ratio"]),
            ]
            for k, v in comp["optimizers"].items()
        ],
    )
    return lines


def render_markdown(res: dict[str, Any]) -> str:
    meta = res["meta"]
    lines = [
        f"# optax_signvar step speed: `{meta['machine']}`",
        "",
        f"- date: {meta['date']}; wall time {meta['wall_s']:.0f} s"
        + (" (--quick)" if meta["quick"] else ""),
        f"- jax {meta['jax']}, optax {meta['optax']}, torch {meta['torch'] or 'not used'}, "
        f"numpy {meta['numpy']}, python {meta['python']}",
        f"- backend {meta['backend']}, device kind `{meta['device_kind']}`, "
        f"CPU `{meta['cpu_model']}`, {meta['cores']} cores",
        f"- float32; {meta['rounds']} rounds x median of {meta['steps']} steps "
        f"after {meta['warmup']} warm-up steps; learning rate {LR}",
        f"- copy bandwidth: {res['copy']['gbps']:.1f} GB/s ({res['copy']['kind']} copy of "
        f"{_fmt_n(res['copy']['n'])} float32, {res['copy']['ms']:.3g} ms; in place "
        f"{res['copy']['in_place']['gbps']:.1f}, into a new buffer "
        f"{res['copy']['fresh']['gbps']:.1f} GB/s)",
        "",
        "## Step time against optax",
        "",
    ]
    speed = res["speed"]
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in speed:
        groups.setdefault((row["size"], row["layout"]), []).append(row)
    for (_size, layout), rows in groups.items():
        r0 = rows[0]
        lines.append(
            f"### {_fmt_n(r0['n_params'])} params, {layout} ({r0['n_leaves']} "
            f"lea{'ves' if r0['n_leaves'] > 1 else 'f'})"
        )
        lines.append("")
        body = [
            [
                r["optimizer"],
                r["counterpart"],
                _g(r["ours_ms"]),
                _g(r["optax_ms"]),
                _f(r["ratio"]),
                _g(r["gbps"]),
                _f(r["time_per_floor"]),
                _f(r["optax_time_per_floor"]),
            ]
            + ([] if r["donated"] else ["NOT DONATED"])
            for r in rows
        ]
        header = ["optimizer", "optax counterpart", "ours ms", "optax ms", "ours/optax"]
        lines += _table(header + ["GB/s", "/floor", "optax /floor"], body)
        lines.append("")
    lines += ["## Floor kernel", ""]
    floor_rows = []
    for (_size, layout), rows in groups.items():
        by_k: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            by_k.setdefault(r["state_buffers"], []).append(r)
        for k in sorted(by_k):
            ms = median([r["floor_ms"] for r in by_k[k]])
            nbytes = by_k[k][0]["bytes_per_step"]
            n = by_k[k][0]["n_params"]
            floor_rows.append([_fmt_n(n), layout, str(k), _g(ms), _g(nbytes / ms / 1e6)])
    lines += _table(["params", "layout", "bufs", "ms", "GB/s"], floor_rows)
    lines += ["", "## Memory", ""]
    mem = res["memory"]
    lines.append(
        f"XLA memory analysis of the donated step at {_fmt_n(mem['n_params'])} params, "
        f"{mem['layout']} layout (MiB; ~ = estimated)."
    )
    lines.append("")
    mem_rows = []
    for name, m in mem["optimizers"].items():
        o, t = m["compiled_ours"], m["compiled_optax"]
        mem_rows.append(
            [name, _g(m["state_per_param"]), _g(m["optax_state_per_param"])]
            + [_mib(o, k) for k in ("argument", "output", "alias", "temp", "peak")]
            + [_mib(t, "temp"), _mib(t, "peak")]
        )
    header = ["optimizer", "state/param", "optax state/param", "arg", "out", "alias", "temp"]
    lines += _table(header + ["peak", "optax temp", "optax peak"], mem_rows)
    for key in ("compile", "compile_large"):
        if key in res:
            lines += ["", *_compile_section(res[key])]
    tr = res.get("torch")
    if tr:
        lines += [
            "",
            "## What a user would pick instead (PyTorch)",
            "",
            f"`opt.step()` on one flat parameter of {_fmt_n(tr['n'])} float32 on {tr['device']}, "
            f"{tr['threads']} torch threads; torch Adam is `{tr['adam_impl']}`"
            + ("" if tr["adabound_installed"] else "; adabound package not installed")
            + ".",
            "",
        ]
        lines += _table(
            ["ours", "ours ms", "alternative", "torch ms", "ours/torch"],
            [
                [
                    r["optimizer"],
                    _g(r["ours_ms"]),
                    r["alternative"],
                    _g(r["torch_ms"]),
                    _f(r["ratio"]),
                ]
                for r in tr["rows"]
            ],
        )
    elif res["meta"]["torch_note"]:
        lines += ["", f"PyTorch comparison skipped: {res['meta']['torch_note']}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- #
# Entry point.
# --------------------------------------------------------------------------- #


def parse_args(argv: Sequence[str] | None) -> Config:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, few steps (smoke run)")
    ap.add_argument("--sizes", help="comma-separated parameter counts, e.g. 1e6,1e7")
    ap.add_argument("--repeats", type=int, help="rounds of interleaved timing (default 9)")
    ap.add_argument("--steps", type=int, help="timed steps per round (default 20)")
    ap.add_argument("--optimizers", help=f"comma-separated subset of {','.join(PAIR_BY_NAME)}")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    names = a.optimizers.split(",") if a.optimizers else list(PAIR_BY_NAME)
    unknown = [n for n in names if n not in PAIR_BY_NAME]
    if unknown:
        ap.error(f"unknown optimizers {unknown}; choose from {list(PAIR_BY_NAME)}")
    if a.sizes:
        sizes = [int(float(s)) for s in a.sizes.split(",")]
    else:
        sizes = [10**5] if a.quick else default_sizes()
    return Config(
        sizes=sizes,
        steps=a.steps or (5 if a.quick else 20),
        rounds=a.repeats or (3 if a.quick else 9),
        warmup=2 if a.quick else 3,
        compile_leaves=20 if a.quick else 200,
        compile_large_leaves=2 if a.quick else 20,
        compile_repeats=1 if a.quick else 9,
        torch=not a.no_torch,
        optimizers=names,
        out=a.out,
        quick=a.quick,
        progress=not a.no_progress,
    )


class _NoBar:
    """Stands in for tqdm where it is not installed (it is an optional dependency)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or importlib.util.find_spec("tqdm") is None:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="task")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark with command-line ``argv``; returns the results (also as JSON)."""
    cfg = parse_args(argv)
    t_start = time.perf_counter()
    pairs = [PAIR_BY_NAME[n] for n in cfg.optimizers]
    torch_note = None
    if cfg.torch and importlib.util.find_spec("torch") is None:
        cfg.torch, torch_note = False, "torch not importable"
    elif not cfg.torch:
        torch_note = "--no-torch"
    n_torch = sum(p.name in TORCH_ALTERNATIVES for p in pairs) if cfg.torch else 0
    total = (
        1 + len(cfg.sizes) * 2 * len(pairs) + 2 * cfg.compile_repeats * len(compile_entries(pairs))
    )
    bar = progress_bar(total + n_torch, cfg.progress)

    bar.set_description("copy bandwidth")
    copy = measure_copy(cfg)
    bar.update(1)
    speed = []
    for size in cfg.sizes:
        for layout in ("flat", "tree"):
            speed += measure_layout(cfg, pairs, size, layout, bar)
    compile_res = measure_compile(
        cfg, pairs, bar, compile_tree_shapes(cfg.compile_leaves), "many small leaves"
    )
    compile_large = measure_compile(
        cfg, pairs, bar, large_compile_tree_shapes(cfg.compile_large_leaves), "few large leaves"
    )
    torch_res = measure_torch(cfg, pairs, bar) if cfg.torch else None
    bar.close()

    largest = max(cfg.sizes)
    mem_params = jax.eval_shape(lambda: make_params(largest, "tree", jax.random.key(0)))
    compiled = {
        r["optimizer"]: r["memory"] for r in speed if r["size"] == largest and r["layout"] == "tree"
    }
    memory = {
        "n_params": sum(int(x.size) for x in jax.tree.leaves(mem_params)),
        "layout": "tree",
        "optimizers": {
            p.name: {
                "counterpart": p.counterpart,
                "state_per_param": state_per_param(p.ours, mem_params),
                "optax_state_per_param": state_per_param(p.theirs, mem_params),
                "compiled_ours": compiled[p.name]["ours"],
                "compiled_optax": compiled[p.name]["optax"],
            }
            for p in pairs
        },
    }

    slug = machine_slug() + ("-quick" if cfg.quick else "")
    torch_version = None
    if torch_res is not None:
        import torch

        torch_version = torch.__version__
    res: dict[str, Any] = {
        "meta": {
            "machine": slug,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "jax": jax.__version__,
            "optax": optax.__version__,
            "torch": torch_version,
            "torch_note": torch_note,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind,
            "cpu_model": cpu_model(),
            "cores": cpu_cores(),
            "quick": cfg.quick,
            "sizes": cfg.sizes,
            "steps": cfg.steps,
            "rounds": cfg.rounds,
            "warmup": cfg.warmup,
            "optimizers": cfg.optimizers,
        },
        "copy": copy,
        "speed": speed,
        "memory": memory,
        "compile": compile_res,
        "compile_large": compile_large,
        "torch": torch_res,
    }
    res["meta"]["wall_s"] = time.perf_counter() - t_start
    md = render_markdown(res)
    cfg.out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = cfg.out / f"{slug}.md", cfg.out / f"{slug}.json"
    md_path.write_text(md)
    res["files"] = {"markdown": str(md_path), "json": str(json_path)}
    json_path.write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
    print(md)
    return res


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return asdict(x) if hasattr(x, "__dataclass_fields__") else str(x)


if __name__ == "__main__":
    main()
