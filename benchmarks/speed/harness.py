"""The timing harness: parameter trees, donated-step runners, interleaved rounds, medians.

A :class:`Runner` owns one AOT-compiled donated step and the live buffers it updates;
:func:`interleaved_times` times several back to back per round, each on new buffers.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.speed.config import Factory

# --------------------------------------------------------------------------- #
# Parameter layouts.
# --------------------------------------------------------------------------- #


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


def fresh_copy(tree: Any) -> Any:
    # Every runner gets buffers of its own: a donated buffer shared with another runner (or
    # twice within one state) would be deleted under the other's feet.
    return jax.tree.map(lambda x: x.copy(), tree)


# --------------------------------------------------------------------------- #
# The donated steps and their runners.
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


# --------------------------------------------------------------------------- #
# Timing rounds and their medians.
# --------------------------------------------------------------------------- #


def interleaved_times(runners: Sequence[Runner], rounds: int, steps: int) -> list[list[float]]:
    """Per-round median step times of each of ``runners``, timed back to back every round.

    Each round first moves every runner to new buffers (see :meth:`Runner.refresh`). A
    runner listed twice is timed once; both of its places get the same list.
    """
    timed = list({id(r): r for r in runners}.values())
    times: dict[int, list[float]] = {id(r): [] for r in timed}
    for _ in range(rounds):
        for r in timed:
            r.refresh()
            r.warm(1)
        for r in timed:
            times[id(r)].append(r.time(steps))
    return [times[id(r)] for r in runners]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def median_ratio(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The median of the per-round ratios ``x / y`` (not a ratio of medians)."""
    return median([x / y for x, y in zip(xs, ys, strict=True)])


# --------------------------------------------------------------------------- #
# Progress.
# --------------------------------------------------------------------------- #


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
