"""Where the per-leaf cost of an optimizer step goes on XLA:CPU.

``python -m benchmarks.speed.leaf_cost [--quick] [--only SECTIONS] [--json PATH]``
(4-5 minutes on 2 busy CPU cores; ``--quick``: sections 1-3 on smaller trees, ~20 s).

What it measures, on trees of equal float32 leaves, every figure a median over interleaved
rounds in one process (each round times every runner back to back, on new buffers):

1. ``sweep``: the optimizer-alone step ``updates, state = opt.update(g, state, p);
   p = optax.apply_updates(p, updates)``, jitted with ``p`` and ``state`` donated, for
   ``optax.adam`` and ``optax_signvar``'s ``adam``, ``m_svag`` and ``m_vassd``, with 10^6
   parameters split into N = 1, 10, 50, 200, 1000 leaves; plus, up to 200 leaves (they
   take ~40 s each to compile at 1000), the same parameters with the state in one flat
   buffer (``ravel_pytree`` inside the step; ``optax.flatten``). Each step is split into

   * the *call boundary*: a step with the same buffers in and out and no computation
     (``(p, state, g) -> (p, state)``, donated): jit dispatch, PJRT argument handling,
     donation, the output arrays, ``block_until_ready``. It grows with the buffers that
     cross the call (``buffers``), whatever the kernels;
   * the *executable*: step minus boundary (paired per round): XLA:CPU's thunks, one per
     instruction of the compiled ENTRY computation that runs (fusions, copies,
     concatenates; counted from ``compiled.as_text()``), and the bytes they move.

   ``us/thunk step`` is ``(t(N) - t(1)) / (thunks(N) - thunks(1))``: step time minus the
   1-leaf (bandwidth) time, per extra thunk, boundary included; ``us/thunk exec`` is the same
   on the executable part alone; ``us/buffer`` is the boundary's growth per extra buffer.
   ``compile s`` is ``jax.jit(step).lower(...).compile()``.
2. ``size``: 300 leaves of 1 and of 1024 elements, and 300 of 1 element next to one of
   2^16: XLA:CPU's ThunkExecutor runs the thunks inline, one after the other, when
   every buffer is at most 512 bytes (or there are at most 8 thunks), and otherwise as a
   dataflow graph on the intra-op thread pool (thresholds built into jaxlib, no flag).
3. ``crossover``: per leaf, concatenating N = 400 leaves of s elements into one (donated)
   buffer against N separate elementwise kernels (``x * c``; one 2^16 leaf beside them so
   the thread pool runs them, as in any model with one large leaf), each against a no-op
   reference with the same buffers. On a linear fit of the copy's cost, the leaf size at
   which copying a leaf into a packed buffer costs as much as: one kernel here, one thunk
   of the Adam step (section 2), and what packing Adam's state saves a leaf (2 of its 3
   thunks, 4 of its 7 boundary buffers; section 1's per-buffer cost at 1000 leaves).
4. ``flags`` (subprocesses): the 300-leaf step under each XLA:CPU flag that might change
   the per-thunk or per-buffer cost, and on one core; flags this jaxlib rejects say so.
5. ``trace`` (subprocess, ``--xla_cpu_enable_xprof_traceme``): the 1000-leaf boundary
   step, Adam step, and Adam step on 1-element leaves; untraced, the call and
   ``block_until_ready`` timed apart; then a ``jax.profiler`` trace, its spans summed per
   step: where in the runtime the time goes, and on how many threads the kernels ran
   (attribution only: tracing slows every span, the kernels' most).

Findings: ``benchmarks/results/per_leaf_cost.md``.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import optax_signvar as osv
from benchmarks.speed.harness import Runner, interleaved_times, median, optimizer_step
from benchmarks.speed.machine import cpu_cores, cpu_model

LR = 1e-3
TOTAL = 1_000_000
BIG = 2**16
SMALL_BUFFER_BYTES = 512  # ThunkExecutor's execute_sequential_buffer_threshold
SEQUENTIAL_THUNKS = 8  # ... and its execute_sequential_num_thunks_threshold

Factory = Callable[[], optax.GradientTransformation]
OPTIMIZERS: dict[str, Factory] = {
    "optax.adam": lambda: optax.adam(LR),
    "osv.adam": lambda: osv.adam(LR),
    "osv.m_svag": lambda: osv.m_svag(LR),
    "osv.m_vassd": lambda: osv.m_vassd(LR),
}
SECTIONS = ("sweep", "size", "crossover", "flags", "trace")


@dataclass(frozen=True)
class Settings:
    leaf_counts: tuple[int, ...]
    flat_max_leaves: int  # the flat-state variants compile for ~40 s at 1000 leaves
    size_leaves: int
    cross_leaves: int
    cross_sizes: tuple[int, ...]
    rounds: int
    steps: int


FULL = Settings((1, 10, 50, 200, 1000), 200, 300, 400, (1, 128, 1024, 4096, 8192), 7, 10)
QUICK = Settings((1, 50), 50, 100, 100, (1, 512, 8192), 3, 5)

# --------------------------------------------------------------------------- #
# Trees, steps, compiled programs.
# --------------------------------------------------------------------------- #


def tree(sizes: Sequence[int]) -> dict[str, jax.Array]:
    """1-D float32 leaves of the given sizes, distinct nonzero values."""
    return {
        f"leaf_{i:05d}": jnp.full((s,), 0.01 * (i % 97 + 1), jnp.float32)
        for i, s in enumerate(sizes)
    }


def grads_like(params: Any) -> Any:
    return jax.tree.map(lambda x: 0.1 * x, params)


def fresh(t: Any) -> Any:
    return jax.tree.map(lambda x: x.copy(), t)


def boundary_step(a, b, c):
    """No computation: the donated buffers come back out as they are."""
    del c
    return a, b


def ravel_step(opt: optax.GradientTransformation) -> Callable:
    """The state lives in one flat buffer; params and grads are raveled in the step."""

    def step(params, state, grads):
        flat_p, unravel = ravel_pytree(params)
        flat_g, _ = ravel_pytree(grads)
        updates, state = opt.update(flat_g, state, flat_p)
        return unravel(optax.apply_updates(flat_p, updates)), state

    return step


_NOT_RUN = {"parameter", "tuple", "get-tuple-element", "constant", "bitcast"}


def entry_thunks(hlo_text: str) -> collections.Counter:
    """Opcodes of the instructions of the ENTRY computation that run as thunks."""
    entry = hlo_text[hlo_text.index("\nENTRY") :]
    entry = entry[: entry.index("\n}")]
    ops = re.findall(r"^\s*(?:ROOT )?%\S+ = .*? ([a-z][a-z0-9-]*)\(", entry, re.M)
    return collections.Counter(op for op in ops if op not in _NOT_RUN)


def hlo_ops(hlo_text: str) -> int:
    """Instructions of the whole compiled module, fused computations included, that compute
    (not parameters, tuples, constants): the arithmetic a step's kernels hold."""
    ops = re.findall(r"^\s*(?:ROOT )?%\S+ = .*? ([a-z][a-z0-9-]*)\(", hlo_text, re.M)
    return sum(op not in _NOT_RUN for op in ops)


@dataclass
class Program:
    """A donated step ``(a, b, c) -> (a, b)``: its runner, compile time and thunks."""

    runner: Runner
    compile_s: float
    thunks: collections.Counter
    buffers: int
    ops: int
    times: list[float] = field(default_factory=list)

    @property
    def n_thunks(self) -> int:
        return sum(self.thunks.values())


def program(fn: Callable, a: Any, b: Any, c: Any) -> Program:
    t0 = time.perf_counter()
    runner = Runner(fn, a, b, c)  # lowers and compiles the donated step
    seconds = time.perf_counter() - t0
    out = jax.eval_shape(fn, a, b, c)
    buffers = len(jax.tree.leaves((a, b, c))) + len(jax.tree.leaves(out))
    text = runner.compiled.as_text()
    return Program(runner, seconds, entry_thunks(text), buffers, hlo_ops(text))


def time_programs(programs: Sequence[Program], rounds: int, steps: int) -> None:
    """Interleaved rounds over all ``programs``; each gets its per-round medians."""
    times = interleaved_times([p.runner for p in programs], rounds, steps)
    for p, t in zip(programs, times, strict=True):
        p.times = t
        p.runner.close()


def paired_ms(x: Program, ref: Program) -> float:
    """Median over rounds of ``x - ref`` (timed back to back in each round), in ms."""
    return 1e3 * median([a - b for a, b in zip(x.times, ref.times, strict=True)])


def ms(p: Program) -> float:
    return 1e3 * median(p.times)


# --------------------------------------------------------------------------- #
# 1. The leaf-count sweep.
# --------------------------------------------------------------------------- #


def sweep_programs(
    n_leaves: int,
    total: int = TOTAL,
    names: Sequence[str] = tuple(OPTIMIZERS),
    flat: bool = True,
    flat_boundary: bool = True,
) -> dict[str, Program]:
    """The steps of ``names`` and the boundary on ``total`` parameters in ``n_leaves`` equal
    leaves; with ``flat``, also the variants that keep the state in one flat buffer, and
    with ``flat_boundary`` (or ``flat``) their boundary step."""
    params = tree([total // n_leaves] * n_leaves)
    grads = grads_like(params)
    progs = {}
    for name in names:
        opt = OPTIMIZERS[name]()
        progs[name] = program(optimizer_step(opt), fresh(params), opt.init(params), grads)
    adam_state = optax.adam(LR).init(params)
    progs["boundary"] = program(boundary_step, fresh(params), fresh(adam_state), grads)
    if flat:
        progs.update(flat_state_programs(params, grads))
    elif flat_boundary:
        flat_state = optax.adam(LR).init(ravel_pytree(params)[0])
        progs["boundary, flat state"] = program(boundary_step, fresh(params), flat_state, grads)
    return progs


def flat_state_programs(params: Any, grads: Any) -> dict[str, Program]:
    flat = ravel_pytree(params)[0]
    opt = optax.adam(LR)
    progs = {"ravel: optax.adam": program(ravel_step(opt), fresh(params), opt.init(flat), grads)}
    for name in ("optax.adam", "osv.adam"):
        opt = optax.flatten(OPTIMIZERS[name]())
        progs[f"optax.flatten({name})"] = program(
            optimizer_step(opt), fresh(params), opt.init(params), grads
        )
    flat_state = optax.adam(LR).init(flat)
    progs["boundary, flat state"] = program(boundary_step, fresh(params), flat_state, grads)
    return progs


def boundary_of(name: str) -> str:
    flat = name.startswith(("ravel", "optax.flatten", "boundary, flat"))
    return "boundary, flat state" if flat else "boundary"


def sweep_rows(runs: dict[int, dict[str, Program]]) -> list[dict[str, Any]]:
    base = runs[min(runs)]
    rows = []
    for n, progs in runs.items():
        for name, p in progs.items():
            ref, b0 = progs[boundary_of(name)], base[boundary_of(name)]
            row: dict[str, Any] = {"N": n, "variant": name, "thunks": p.n_thunks}
            row["buffers"] = p.buffers
            row["step_ms"] = ms(p)
            row["boundary_ms"] = ms(ref)
            row["exec_ms"] = paired_ms(p, ref) if p is not ref else 0.0
            dk, db = p.n_thunks - base[name].n_thunks, p.buffers - base[name].buffers
            row["thunks_per_leaf"] = dk / (n - 1) if n > 1 else None
            row["ops_per_leaf"] = (p.ops - base[name].ops) / (n - 1) if n > 1 else None
            row["us_per_thunk_step"] = 1e3 * (ms(p) - ms(base[name])) / dk if dk > 0 else None
            exec0 = paired_ms(base[name], b0) if base[name] is not b0 else 0.0
            row["us_per_thunk_exec"] = 1e3 * (row["exec_ms"] - exec0) / dk if dk > 0 else None
            row["us_per_buffer"] = 1e3 * (ms(ref) - ms(b0)) / db if db > 0 else None
            row["compile_s"] = p.compile_s
            row["thunk_ops"] = dict(p.thunks)
            rows.append(row)
    return rows


def run_sweep(s: Settings) -> list[dict[str, Any]]:
    runs = {n: sweep_programs(n, flat=n <= s.flat_max_leaves) for n in s.leaf_counts}
    time_programs([p for progs in runs.values() for p in progs.values()], s.rounds, s.steps)
    return sweep_rows(runs)


def fusions_per_leaf(n_leaves: int = 10, leaf_size: int = TOTAL // 10) -> dict[str, Any]:
    """Which fusions one leaf gets, per optimizer: the ENTRY's fusion names, per leaf."""
    params = tree([leaf_size] * n_leaves)
    out = {}
    for name, factory in OPTIMIZERS.items():
        opt = factory()
        fn = jax.jit(optimizer_step(opt), donate_argnums=(0, 1))
        text = fn.lower(params, opt.init(params), params).compile().as_text()
        entry = text[text.index("\nENTRY") :]
        shapes = re.findall(r"= (\S+) fusion\(", entry)
        names = re.findall(r"%([a-z_-]+?)(?:\.\d+)? = \S+ fusion\(", entry)
        leafy = [nm for nm, sh in zip(names, shapes, strict=True) if sh != "f32[]"]
        per = {k: v / n_leaves for k, v in collections.Counter(leafy).items()}
        out[name] = {"per_leaf": per, "scalar": len(names) - len(leafy)}
    return out


# --------------------------------------------------------------------------- #
# 2. Leaf size and the thread pool.
# --------------------------------------------------------------------------- #


def size_cases(n: int) -> dict[str, list[int]]:
    return {
        f"{n} x 1": [1] * n,
        f"{n} x 1024": [1024] * n,
        f"{n} x 1 + 1 x {BIG}": [1] * n + [BIG],
        f"1 x {BIG}": [BIG],
    }


def run_size(s: Settings) -> list[dict[str, Any]]:
    """optax.adam on each case against its boundary step; µs per thunk of the executable."""
    cases = size_cases(s.size_leaves)
    progs = {}
    for name, sizes in cases.items():
        params, opt = tree(sizes), optax.adam(LR)
        state = opt.init(params)
        progs[name] = (
            program(optimizer_step(opt), fresh(params), fresh(state), grads_like(params)),
            program(boundary_step, fresh(params), fresh(state), grads_like(params)),
        )
    # Small differences on a large boundary: three times the rounds.
    time_programs([p for pair in progs.values() for p in pair], 3 * s.rounds, s.steps)
    big_exec = paired_ms(*progs[f"1 x {BIG}"])
    big_thunks = progs[f"1 x {BIG}"][0].n_thunks
    rows = []
    for name, (step, ref) in progs.items():
        sizes = cases[name]
        exec_ms, thunks = paired_ms(step, ref), step.n_thunks
        if name.endswith(f"+ 1 x {BIG}"):  # the small leaves' thunks alone
            exec_ms, thunks = exec_ms - big_exec, thunks - big_thunks
        inline = max(sizes) * 4 <= SMALL_BUFFER_BYTES or step.n_thunks <= SEQUENTIAL_THUNKS
        rows.append(
            {
                "case": name,
                "executor": "inline" if inline else "thread pool",
                "thunks": step.n_thunks,
                "step_ms": ms(step),
                "boundary_ms": ms(ref),
                "exec_ms": paired_ms(step, ref),
                "us_per_thunk": 1e3 * exec_ms / thunks,
            }
        )
    return rows


# --------------------------------------------------------------------------- #
# 3. Copying a leaf into a packed buffer against running a kernel on it.
# --------------------------------------------------------------------------- #


def separate_kernels(xs, big, c):
    return [x * c for x in xs], big * c


def separate_reference(xs, big, c):
    return xs, big * c


def concatenate_into(a, big, c):
    del c
    xs, _ = a
    return (xs, jnp.concatenate(xs)), big


def cross_programs(n: int, size: int) -> dict[str, Program]:
    xs = list(tree([size] * n).values())
    big, c = jnp.ones((BIG,), jnp.float32), jnp.float32(1.0001)
    dst = jnp.zeros((n * size,), jnp.float32)
    return {
        "kernels": program(separate_kernels, fresh(xs), big.copy(), c),
        "kernels_ref": program(separate_reference, fresh(xs), big.copy(), c),
        "concat": program(concatenate_into, (fresh(xs), dst.copy()), big.copy(), c),
        "concat_ref": program(boundary_step, (fresh(xs), dst.copy()), big.copy(), c),
    }


def run_crossover(s: Settings, per_buffer: float | None, per_thunk: float | None) -> dict:
    """The per-leaf costs of both, and the leaf sizes at which the copy costs as much as:
    one kernel here (independent kernels), one thunk of the Adam step (``per_thunk``:
    section 2's 1-element leaves on the thread pool), and what packing Adam's state saves
    per leaf: 2 of its 3 thunks and 4 boundary buffers (m and v, in and out; ``per_buffer``
    from section 1's largest N). The parameter's own update stays one thunk a leaf."""
    n = s.cross_leaves
    runs = {size: cross_programs(n, size) for size in s.cross_sizes}
    # Short steps, small differences: twice the rounds.
    time_programs([p for progs in runs.values() for p in progs.values()], 2 * s.rounds, s.steps)
    rows = []
    for size, p in runs.items():
        kernel = 1e3 * paired_ms(p["kernels"], p["kernels_ref"]) / n
        copy = 1e3 * paired_ms(p["concat"], p["concat_ref"]) / n
        rows.append({"s": size, "kernel_us_per_leaf": kernel, "copy_us_per_leaf": copy})
    # The fixed cost of a kernel: where the leaves are small enough that it is all overhead.
    overhead = median([r["kernel_us_per_leaf"] for r in rows if r["s"] <= 128])
    targets = {"one kernel here": overhead}
    if per_thunk is not None:
        targets["one thunk of the Adam step"] = per_thunk
        if per_buffer is not None:
            targets["Adam's saving: 2 thunks + 4 buffers"] = 2 * per_thunk + 4 * per_buffer
    return {
        "leaves": n,
        "rows": rows,
        "copy_fit": copy_fit(rows),
        "crossovers": {k: (v, crossing(rows, v)) for k, v in targets.items()},
        "inputs": {"us_per_buffer": per_buffer, "us_per_thunk": per_thunk},
    }


def copy_fit(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Least-squares ``copy_us_per_leaf = a + b * s``: intercept (us), slope (us/element)."""
    sizes = np.array([r["s"] for r in rows], float)
    copies = np.array([r["copy_us_per_leaf"] for r in rows], float)
    slope, intercept = np.polyfit(sizes, copies, 1)
    return float(intercept), float(slope)


def crossing(rows: list[dict[str, Any]], target: float) -> float | None:
    """The leaf size at which copying a leaf into a packed buffer costs ``target`` us, on
    the linear fit of the copy's cost (extrapolated past the largest size if need be)."""
    intercept, slope = copy_fit(rows)
    return None if slope <= 0 else max(1.0, (target - intercept) / slope)


# --------------------------------------------------------------------------- #
# 4. XLA flags, each in a subprocess.
# --------------------------------------------------------------------------- #

PROBE_LEAVES = 300
TRACE_LEAVES = 1000
FLAG_CONFIGS: tuple[tuple[str, str], ...] = (
    ("default", ""),
    ("--xla_cpu_multi_thread_eigen=false", "Eigen's intra-op threads off"),
    ("--xla_cpu_use_thunk_runtime=false", "the pre-thunk runtime"),
    ("--xla_cpu_enable_concurrency_optimized_scheduler=false", "not the default scheduler"),
    ("--xla_cpu_use_fusion_emitters=false", "the older loop emitters"),
    ("--xla_cpu_parallel_codegen_split_count=1", "compile: one LLVM module"),
    ("--xla_cpu_use_multi_output_fusion=true", "fuse m, v and p of a leaf"),
    ("--xla_force_host_platform_device_count=2", "two CPU devices"),
    ("one core", "sched_setaffinity to one CPU"),
)


def probe(total: int = TOTAL, rounds: int = 4, steps: int = 6) -> dict[str, Any]:
    """optax.adam and the boundary at 1 and ``PROBE_LEAVES`` leaves (run in the child)."""
    runs = {
        n: sweep_programs(n, total, ["optax.adam"], flat=False, flat_boundary=False)
        for n in (1, PROBE_LEAVES)
    }
    time_programs([p for progs in runs.values() for p in progs.values()], rounds, steps)
    row = next(
        r for r in sweep_rows(runs) if r["N"] == PROBE_LEAVES and r["variant"] == "optax.adam"
    )
    row["program"] = program_digest(runs[PROBE_LEAVES]["optax.adam"].runner.compiled.as_text())
    return row


def program_digest(hlo_text: str) -> str:
    """A digest of the compiled program without its metadata: equal digests, same thunks."""
    text = re.sub(r", metadata=\{[^}]*\}", "", hlo_text)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def child(args: list[str], xla_flags: str = "", one_core: bool = False) -> tuple[Any, str]:
    """Runs this module with ``args`` in a fresh process; its last stdout line as JSON. With
    ``one_core`` the child pins itself to one CPU before XLA starts its threads."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", **({"XLA_FLAGS": xla_flags} if xla_flags else {}))
    pin = ["--pin-core", str(min(os.sched_getaffinity(0)))] if one_core else []
    cmd = [sys.executable, "-m", "benchmarks.speed.leaf_cost", *args, *pin]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        proc = subprocess.run(
            cmd,
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
    except subprocess.TimeoutExpired:
        return None, "timed out"
    err = proc.stderr
    if proc.returncode != 0:
        unknown = re.search(r"Unknown flags? in XLA_FLAGS: (\S+)", err)
        return None, f"rejected: unknown flag {unknown.group(1)}" if unknown else err[-300:]
    note = "accepted"
    if "no longer supported" in err:
        note = "accepted, warns: no longer supported"
    return json.loads(proc.stdout.strip().splitlines()[-1]), note


def run_flags() -> list[dict[str, Any]]:
    """Every config of ``FLAG_CONFIGS``, then the default again (the spread between runs)."""
    rows = []
    for flag, what in [*FLAG_CONFIGS, ("default", "again, last")]:
        one_core = flag == "one core"
        res, note = child(["--probe"], "" if one_core or flag == "default" else flag, one_core)
        rows.append({"flag": flag, "what": what, "note": note, "probe": res})
    default = rows[0]["probe"] or {}
    for r in rows:
        same = r["probe"] and r["probe"]["program"] == default.get("program")
        r["same_program"] = None if not r["probe"] else "yes" if same else "no"
    return rows


# --------------------------------------------------------------------------- #
# 5. A profiler trace of one step, its spans summed.
# --------------------------------------------------------------------------- #

TRACE_SPANS = (
    "ParseArguments",
    "CommonPjRtLoadedExecutable::ExecuteHelperOnSingleDevice",
    "CommonPjRtLoadedExecutable::ExecutePrepare",
    "Handle inputs",
    "AllocateOutputBuffersWithInputReuse",
    "ThunkExecutor::Execute",
    "ThunkExecutor::Execute (wait for completion)",
    "CommonPjRtClient::CreateOutputs",
)
_KERNEL = re.compile(r"^[a-z_.0-9-]*(fusion|copy|concatenate)[.0-9]*$")


def outermost(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for e in sorted(events, key=lambda e: (e["ts"], -e.get("dur", 0))):
        if not any(
            k["tid"] == e["tid"] and k["ts"] <= e["ts"] <= k["ts"] + k["dur"] for k in kept[-4:]
        ):
            kept.append(e)
    return kept


def trace_spans(runner: Runner, steps: int) -> dict[str, Any]:
    """Traces ``steps`` steps of ``runner``; per step: wall ms and each span's µs, count."""
    with tempfile.TemporaryDirectory() as log_dir:
        options = jax.profiler.ProfileOptions()
        options.python_tracer_level = 0
        walls = []
        with jax.profiler.trace(log_dir, create_perfetto_trace=True, profiler_options=options):
            for _ in range(steps):
                t0 = time.perf_counter()
                runner.step()
                walls.append(time.perf_counter() - t0)
        path = glob.glob(f"{log_dir}/plugins/profile/*/perfetto_trace.json.gz")[0]
        with gzip.open(path) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    groups = {name: [e for e in events if e["name"] == name] for name in TRACE_SPANS}
    groups["PjitFunction"] = outermost([e for e in events if e["name"].startswith("PjitFunc")])
    groups["kernels"] = [e for e in events if _KERNEL.match(e["name"])]
    out: dict[str, Any] = {"traced wall ms": 1e3 * median(walls)}
    for name, es in groups.items():
        out[name] = (sum(e["dur"] for e in es) / steps, len(es) / steps)
    out["threads running kernels"] = len({e["tid"] for e in groups["kernels"]})
    return out


def call_and_block_ms(runner: Runner, steps: int) -> tuple[float, float]:
    """Untraced: median ms of the call alone and of ``block_until_ready`` on its outputs."""
    calls, blocks = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        runner.a, runner.b = runner.compiled(runner.a, runner.b, runner.c)
        t1 = time.perf_counter()
        jax.block_until_ready((runner.a, runner.b))
        blocks.append(time.perf_counter() - t1)
        calls.append(t1 - t0)
    return 1e3 * median(calls), 1e3 * median(blocks)


def trace_probe(n: int = TRACE_LEAVES, steps: int = 5) -> dict[str, Any]:
    """The boundary step and optax.adam on ``n`` leaves of ``TOTAL // n`` elements, and
    optax.adam on ``n`` leaves of 1 element (inline executor), each traced (in the child)."""
    progs = sweep_programs(n, names=["optax.adam"], flat=False, flat_boundary=False)
    params, opt = tree([1] * n), optax.adam(LR)
    progs[f"optax.adam, {n} x 1"] = program(
        optimizer_step(opt), fresh(params), opt.init(params), grads_like(params)
    )
    out = {}
    for name, p in progs.items():
        p.runner.warm(3)
        call, block = call_and_block_ms(p.runner, 15)
        out[name] = {"untraced call ms": call, "untraced block_until_ready ms": block}
        out[name].update(trace_spans(p.runner, steps))
        p.runner.close()
    return out


def run_trace() -> dict[str, Any]:
    res, note = child(["--trace-probe"], "--xla_cpu_enable_xprof_traceme=true")
    return {"note": note, "spans": res}


# --------------------------------------------------------------------------- #
# Markdown.
# --------------------------------------------------------------------------- #


def fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_sweep(rows: list[dict[str, Any]], fusions: dict[str, Any]) -> None:
    print("\n## 1. Optimizer-alone step, 10^6 float32 parameters in N equal leaves\n")
    heads = ["N", "variant", "buffers", "thunks", "thunks/leaf", "ops/leaf", "step ms"]
    heads += ["boundary ms", "exec ms", "us/thunk step", "us/thunk exec", "us/buffer"]
    heads += ["compile s"]
    keys = ["N", "variant", "buffers", "thunks", "thunks_per_leaf", "ops_per_leaf", "step_ms"]
    keys += ["boundary_ms"]
    keys += ["exec_ms", "us_per_thunk_step", "us_per_thunk_exec", "us_per_buffer", "compile_s"]
    print(table(heads, [[r[k] for k in keys] for r in rows]))
    print("\nPer extra leaf (us), optax.adam: the step's growth over 1 leaf, the boundary's")
    print("(7 buffers a leaf: p, m, v, g in; p, m, v out), the part of it that is m and v")
    print("(boundary minus 'boundary, flat state'), and the executable's (3 thunks a leaf):\n")
    heads = ["N", "step us/leaf", "boundary us/leaf", "of which m, v", "exec us/leaf"]
    print(table(heads, leaf_breakdown(rows)))
    print("\nThunk opcodes of the ENTRY computation at the largest N:\n")
    n_max = max(r["N"] for r in rows)
    ops = [[r["variant"], r["thunk_ops"]] for r in rows if r["N"] == n_max]
    print(table(["variant", "opcode: count"], ops))
    print("\nFusions per leaf (10 leaves of 10^5), by XLA's fusion name:\n")
    print(table(["optimizer", "per leaf", "scalar fusions"], [
        [name, info["per_leaf"], info["scalar"]] for name, info in fusions.items()
    ]))  # fmt: skip


def leaf_breakdown(rows: list[dict[str, Any]], name: str = "optax.adam") -> list[list[Any]]:
    """Per leaf, for ``name``: the step's growth over 1 leaf, and its parts."""
    at = {(r["N"], r["variant"]): r for r in rows}
    n0 = min(r["N"] for r in rows)
    out = []
    for n in sorted({r["N"] for r in rows} - {n0}):
        step, bnd = at[(n, name)], at[(n, "boundary")]
        flat = at.get((n, "boundary, flat state"))
        per = 1e3 / (n - n0)
        state = (bnd["step_ms"] - flat["step_ms"]) * per if flat else None
        exec_growth = (step["exec_ms"] - at[(n0, name)]["exec_ms"]) * per
        total = (step["step_ms"] - at[(n0, name)]["step_ms"]) * per
        out.append([n, total, (bnd["step_ms"] - at[(n0, "boundary")]["step_ms"]) * per, state])
        out[-1].append(exec_growth)
    return out


def print_size(rows: list[dict[str, Any]]) -> None:
    print("\n## 2. Leaf size and the thread pool (optax.adam)\n")
    heads = ["leaves", "executor", "thunks", "step ms", "boundary ms", "exec ms", "us/thunk"]
    keys = ["case", "executor", "thunks", "step_ms", "boundary_ms", "exec_ms", "us_per_thunk"]
    print(table(heads, [[r[k] for k in keys] for r in rows]))
    print(f"\n'+ 1 x {BIG}': us/thunk of the small leaves' thunks alone (the big leaf's")
    print("executable time and thunks, measured alone, subtracted).")


def print_crossover(res: dict[str, Any]) -> None:
    n = res["leaves"]
    print(f"\n## 3. Concatenate {n} leaves of s elements vs {n} elementwise kernels\n")
    rows = [[r["s"], r["kernel_us_per_leaf"], r["copy_us_per_leaf"]] for r in res["rows"]]
    print(table(["s", "kernel us/leaf", "concatenate us/leaf"], rows))
    a, b = res["copy_fit"]
    print(f"\nCopy into the packed buffer, fitted: {a:.2f} us + {1e3 * b:.3f} ns x s per leaf.")
    print(f"Inputs from sections 1 and 2 (us): {res['inputs']}\n")
    rows = [[k, v, None if s is None else round(s)] for k, (v, s) in res["crossovers"].items()]
    print(table(["the copy of one leaf costs as much as", "us", "at s (elements)"], rows))


def print_flags(rows: list[dict[str, Any]]) -> None:
    n = PROBE_LEAVES
    print(f"\n## 4. XLA:CPU flags (optax.adam, {n} leaves of {TOTAL // n}, subprocesses)\n")
    heads = ["flag", "what", "this jaxlib", "same program", "step ms", "boundary ms"]
    heads += ["exec ms", "us/thunk exec", "us/buffer", "compile s"]
    keys = ["step_ms", "boundary_ms", "exec_ms", "us_per_thunk_exec", "us_per_buffer"]
    out = []
    for r in rows:
        p = r["probe"] or {}
        vals = [p.get(k) for k in [*keys, "compile_s"]]
        out.append([f"`{r['flag']}`", r["what"], r["note"], r["same_program"], *vals])
    print(table(heads, out))
    print("\nEach row is its own process, timed at its own moment: the two 'default' rows show")
    print("how far apart two runs of the same thing land. 'same program': the compiled HLO")
    print("(metadata aside) is the default's, so the flag can only act at run time.")


def print_trace(res: dict[str, Any]) -> None:
    n = TRACE_LEAVES
    print(f"\n## 5. Profiler trace, {n} leaves of {TOTAL // n} (per step, traced)\n")
    spans = res["spans"]
    if not spans:
        print(f"no trace: {res['note']}")
        return
    rows = []
    for name in next(iter(spans.values())):
        cells = [spans[v][name] for v in spans]
        if isinstance(cells[0], list | tuple):
            rows.append([name, *[f"{c[0]:.0f} us / {c[1]:.0f}" for c in cells]])
        else:
            rows.append([name, *[fmt(c) for c in cells]])
    print(table(["per step (span: us / events)", *spans], rows))
    print("\nPjitFunction: the C++ jit call (argument signatures, dispatch, donation, output")
    print("arrays); ExecuteHelperOnSingleDevice: PJRT's execute inside it, which runs the")
    print("thunks. Kernel spans exist only under --xla_cpu_enable_xprof_traceme.")


def print_header(args: argparse.Namespace) -> None:
    cmd = "python -m benchmarks.speed.leaf_cost " + " ".join(sys.argv[1:])
    print("# Where the per-leaf cost of an optimizer step goes (XLA:CPU)\n")
    print(f"- machine: {cpu_model()}, {cpu_cores()} cores; jax {jax.__version__}, "
          f"optax {optax.__version__}; backend {jax.default_backend()}")  # fmt: skip
    print(f"- command: `{cmd.strip()}`; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"- load average at start (1, 5, 15 min): {os.getloadavg()}", flush=True)


# --------------------------------------------------------------------------- #
# Main.
# --------------------------------------------------------------------------- #


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller trees, sections 1-3")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trace-probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pin-core", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def run_sections(args: argparse.Namespace) -> dict[str, Any]:
    s = QUICK if args.quick else FULL
    only = args.only.split(",") if args.only else SECTIONS[:3] if args.quick else SECTIONS
    out: dict[str, Any] = {}
    for section in SECTIONS:
        if section in only:
            t0 = time.perf_counter()
            out[section] = run_section(section, s, out)
            print(f"\n({section}: {time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def run_section(section: str, s: Settings, done: dict[str, Any]) -> Any:
    if section == "sweep":
        res: Any = {"rows": run_sweep(s), "fusions": fusions_per_leaf()}
        print_sweep(res["rows"], res["fusions"])
    elif section == "size":
        res = run_size(s)
        print_size(res)
    elif section == "crossover":
        rows = done.get("sweep", {}).get("rows", [])
        per_buffer = [r["us_per_buffer"] for r in rows if r["variant"] == "boundary"]
        pool = [r["us_per_thunk"] for r in done.get("size", []) if "+" in r["case"]]
        res = run_crossover(s, per_buffer[-1] if per_buffer else None, pool[0] if pool else None)
        print_crossover(res)
    elif section == "flags":
        res = run_flags()
        print_flags(res)
    else:
        res = run_trace()
        print_trace(res)
    return res


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.pin_core is not None:  # before the backend starts its thread pools
        os.sched_setaffinity(0, {args.pin_core})
    jax.config.update("jax_platforms", "cpu")
    if args.probe or args.trace_probe:
        print(json.dumps(probe() if args.probe else trace_probe()))
        return
    t0 = time.perf_counter()
    print_header(args)
    out = run_sections(args)
    print(f"\n(total {time.perf_counter() - t0:.0f} s; load average now {os.getloadavg()})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
