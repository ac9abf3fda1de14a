"""Part 1 of issue 17, "why 200x": where the vmap path's time goes on the MLP.

Three measurements, all on the MLP of :mod:`benchmarks.moments.models` at the run's batch:

1. **Components**, timed interleaved in this process against ``jax.grad`` of the mean loss:
   the per-example gradients alone (``vmap(grad)``, returned), one per-example outer product
   of the first layer's size alone (``x[:, :, None] * d[:, None, :]``), the reductions of
   ``_mean_and_m2`` on a ``(B, 784, 512)`` array (``mean(0)`` and the centred ``sum(0)``;
   git 5257cba) and the same as matrix-vector products (``ones(B) @ g.reshape(B, -1)``),
   and the whole vmap path with the old reductions and as the package has it now.
2. **Thunks**: ``jax.profiler.trace`` of the old vmap path and of the per-example
   gradients alone, read back with jaxlib's
   ``ProfileData`` (private; skipped where it is missing): the time of each XLA:CPU thunk
   (summed over the threads that ran it, per call), matched to its HLO instruction in
   ``jax.jit(f).lower(...).compile().as_text()`` (shape, the op it came from, whether it is
   a YNNPACK fusion).
3. **Without YNNPACK's reductions**: the components again in a child process with
   ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce`` (XLA:CPU keeps YNNPACK for
   dots, and emits its own reductions).

``python -m benchmarks.moments.profile [--quick] [--rounds N]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.moments import measure as E
from benchmarks.moments import methods as M
from benchmarks.moments.models import build

NO_YNN_REDUCE = "--xla_cpu_experimental_ynn_fusion_type=-reduce"

COMPONENTS = {
    "grad": "jax.grad of the mean loss (the baseline)",
    "per_example_grads": "per-example gradients alone: jit(vmap(grad(loss_fn))), returned",
    "outer_product": "one outer product x[:, :, None] * d[:, None, :] of the first layer's "
    "size (B x in x out), returned",
    "outer_product_summed": "the same outer product summed in the same jit (XLA fuses it "
    "into the sum: nothing of size B x in x out is written)",
    "fresh_buffer": "writing a new (B, in, out) buffer: jnp.full(shape, c), returned",
    "reductions_old": "_mean_and_m2's reductions (5257cba) on a (B, in, out) array: "
    "mean(0), then sum((g - mean)**2, 0)",
    "reductions_matvec": "the same as matrix-vector products (precision HIGHEST, as the "
    "package now has them): ones(B) @ g.reshape(B, -1), then ones(B) @ (g - mean)**2",
    "vmap_old": "the whole vmap path with the reductions of 5257cba",
    "vmap": "the whole vmap path as the installed package has it (method='vmap' where it exists)",
}


def _reductions_old(g):
    m = jnp.mean(g, axis=0)
    return m, jnp.sum((g - m) ** 2, axis=0)


def _reductions_matvec(g):
    b = g.shape[0]
    ones = jnp.ones((b,), g.dtype)
    flat = g.reshape(b, -1)
    m = jnp.dot(ones, flat, precision=jax.lax.Precision.HIGHEST) / b
    m2 = jnp.dot(ones, (flat - m) ** 2, precision=jax.lax.Precision.HIGHEST)
    return m.reshape(g.shape[1:]), m2.reshape(g.shape[1:])


def _component_fns(model) -> dict[str, tuple[Any, tuple[Any, ...]]]:
    p, b = model.params, model.batch
    n_b = model.batch_size
    n_in, n_out = p["fc1"]["w"].shape
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    x, d = jax.random.normal(k1, (n_b, n_in)), jax.random.normal(k2, (n_b, n_out))
    g = jax.random.normal(k3, (n_b, n_in, n_out))
    per_example = jax.vmap(jax.grad(model.loss_fn), in_axes=(None, 0))
    return {
        "grad": (M.baseline(model.loss_fn), (p, b)),
        "per_example_grads": (per_example, (p, b)),
        "outer_product": (lambda x, d: x[:, :, None] * d[:, None, :], (x, d)),
        "outer_product_summed": (lambda x, d: jnp.sum(x[:, :, None] * d[:, None, :]), (x, d)),
        "fresh_buffer": (lambda c: jnp.full((n_b, n_in, n_out), c), (jnp.float32(1.0),)),
        "reductions_old": (_reductions_old, (g,)),
        "reductions_matvec": (_reductions_matvec, (g,)),
        "vmap_old": (M.moments_fn("vmap_old", model.loss_fn), (p, b)),
        "vmap": (M.moments_fn("vmap", model.loss_fn), (p, b)),
    }


def components(quick: bool, rounds: int, max_steps: int) -> dict[str, Any]:
    model = build("mlp", quick)
    rows = {}
    for name, (fn, args) in _component_fns(model).items():
        t0 = E.time.perf_counter()
        compiled = E.compile_fn(fn, *args)
        rows[name] = E.Row(name, compiled, args, E.time.perf_counter() - t0, E.memory(compiled))
    for r in rows.values():
        E.calibrate(r, max_steps)
        r.out = None
    E.interleave(list(rows.values()), rounds)
    out = {name: E.summary(r, rows["grad"]) for name, r in rows.items()}
    return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": out}


# --------------------------------------------------------------------------- #
# Thunks.
# --------------------------------------------------------------------------- #

_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+) (\w+)\((.*)$")


def _instructions(hlo: str) -> dict[str, dict[str, str]]:
    """The entry computation's instructions: name -> shape, opcode, source op, YNN or not."""
    out = {}
    entry = hlo[hlo.index("\nENTRY") :]
    for line in entry.splitlines()[1:]:
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, opcode, rest = m.groups()
        op = re.search(r'op_name="([^"]*)"', rest)
        out[name] = {
            "shape": shape.split("{")[0],
            "opcode": opcode,
            "op_name": op.group(1).split("/")[-1] if op else "",
            "ynn": "__ynn_fusion" in rest,
        }
    return out


THUNKED = ("vmap_old", "per_example_grads")


def thunks(quick: bool, name: str, calls: int = 3, top: int = 8) -> dict[str, Any]:
    """Per-thunk time of component ``name`` on the MLP, from a profiler trace."""
    try:
        from jax._src.lib import _profile_data  # type: ignore[attr-defined]
    except ImportError as e:  # private: not every jaxlib has it
        return {"error": f"jaxlib has no _profile_data ({e})"}
    model = build("mlp", quick)
    fn, args = _component_fns(model)[name]
    compiled = E.compile_fn(fn, *args)
    instr = _instructions(compiled.as_text())
    jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            for _ in range(calls):
                jax.block_until_ready(compiled(*args))
        files = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        if not files:
            return {"error": "the profiler wrote no trace"}
        data = _profile_data.ProfileData.from_file(files[0])
        total: collections.Counter[str] = collections.Counter()
        execute_ns = 0
        for plane in data.planes:
            for line in plane.lines:
                for ev in line.events:
                    if ev.name in instr:
                        total[ev.name] += ev.duration_ns
                    elif ev.name == "ThunkExecutor::Execute (wait for completion)":
                        execute_ns += ev.duration_ns
    all_ms = sum(total.values()) / 1e6 / calls
    rows = []
    for name, ns in total.most_common(top):
        rows.append({"thunk": name, "ms_per_call": ns / 1e6 / calls, **instr[name]})
    by_source: collections.Counter[str] = collections.Counter()
    for name, ns in total.items():
        i = instr[name]
        by_source[_source(i)] += ns / 1e6 / calls
    return {
        "calls": calls,
        "thread_ms_per_call": all_ms,
        "wall_ms_per_call": execute_ns / 1e6 / calls,
        "top": rows,
        "by_source": dict(by_source.most_common()),
    }


def _source(i: dict[str, Any]) -> str:
    kind = "YNNPACK " if i["ynn"] else ""
    if i["op_name"] in ("reduce_sum", "div") and len(i["shape"].split(",")) >= 2:
        return f"{kind}reduction over the batch axis"
    if i["op_name"] == "transpose" and i["shape"].count(",") >= 2:
        return f"{kind}per-example outer product (B x in x out)"
    if i["op_name"] == "dot_general":
        return f"{kind}matmuls of the forward/backward pass"
    if i["opcode"] == "fusion" and i["op_name"] == "" and i["shape"].count(",") >= 2:
        return "copies of per-example gradients into the output"
    return "everything else"


# --------------------------------------------------------------------------- #
# The child without YNNPACK's reductions, and the whole profile.
# --------------------------------------------------------------------------- #


def _child(quick: bool, rounds: int, max_steps: int) -> dict[str, Any]:
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + NO_YNN_REDUCE))
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "benchmarks.moments.profile", "--components-only"]
    cmd += ["--rounds", str(rounds), "--steps", str(max_steps)] + (["--quick"] if quick else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode:
        return {"error": res.stderr[-2000:]}
    return json.loads(res.stdout)


def profile(quick: bool, rounds: int, max_steps: int, child: bool = True) -> dict[str, Any]:
    model = build("mlp", quick)
    return {
        "model": model.title,
        "batch": model.batch_size,
        "what": COMPONENTS,
        "components": components(quick, rounds, max_steps),
        "thunks": {name: thunks(quick, name) for name in THUNKED},
        "no_ynn_reduce": _child(quick, rounds, max_steps) if child else None,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.moments.profile")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--components-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    E.set_quick(a.quick)
    if a.components_only:
        print(json.dumps(components(a.quick, a.rounds, a.steps)))
    else:
        print(json.dumps(profile(a.quick, a.rounds, a.steps), indent=1))


if __name__ == "__main__":
    main()
