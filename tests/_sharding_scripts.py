"""Subprocess body of ``tests/test_sharding.py``: every optimizer under an explicit mesh.

The number of simulated host devices is fixed when jax initialises, so the
checks run in a fresh interpreter started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/_sharding_scripts.py mesh1d

``mesh1d`` puts the parameters on ``jax.make_mesh((8,), ("x",))``, sharded along
one dimension or the other, with a replicated small leaf; ``mesh2d`` on an
FSDP-style ``jax.make_mesh((4, 2), ("data", "model"))`` with leaves sharded over
both axes. For every optimizer of ``tests/test_conformance.OPTIMIZERS`` (and a
few variants: the mini-batch variance extra argument, ``inject_hyperparams``,
``variance="minibatch"``), under ``jax.set_mesh``:

- ``jit(opt.init)`` and the eager ``opt.init`` on sharded parameters give every
  parameter-shaped state leaf its parameter's sharding, and every scalar leaf
  (the count, injected hyperparameters) a sharding replicated over the mesh;
- a jitted step (3 calls) keeps that: the new state, the updates and the new
  parameters are sharded like the parameters, and the step compiles once (a
  state whose sharding drifted would recompile on the next call);
- the parameters, updates and state equal, bit for bit, those of the same
  steps run on one device in the same process on unsharded copies (bfloat16
  leaves: to 2 ulps unless ``--xla_allow_excess_precision=false``, see
  :func:`compare`).

A control case whose state ignores the sharding must be reported, or the checks
prove nothing. Every failure is collected and printed; the last line is
``SHARDING-OK <mesh> <n> cases; ...`` only when there were none (exit status 0),
else the exit status is 1.
"""

from __future__ import annotations

import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import optax_signvar as osv  # noqa: E402
from tests.registry import NAMES, OPTIMIZERS, make  # noqa: E402

STEPS = 3
MARKER = "SHARDING-OK"

# name -> (shape, dtype, partition spec) of each parameter leaf, per mesh.
LAYOUTS = {
    "mesh1d": (
        ((8,), ("x",)),
        {
            "w": ((16, 12), jnp.float32, P("x", None)),  # rows over the mesh
            "u": ((3, 24), jnp.bfloat16, P(None, "x")),  # columns; float32 second moments
            "b": ((5,), jnp.float32, P(None)),  # a small replicated leaf
        },
    ),
    "mesh2d": (
        ((4, 2), ("data", "model")),
        {
            "w": ((8, 6), jnp.float32, P("data", "model")),
            "u": ((4, 12), jnp.bfloat16, P("model", "data")),
            "v": ((24,), jnp.float32, P(("data", "model"))),  # one dim over both axes
            "b": ((3,), jnp.float32, P(None)),
        },
    ),
}


def _variance_adapted(name: str) -> bool:
    return OPTIMIZERS[name].factory in (osv.svag, osv.m_svag, osv.m_vassd)


def cases():
    """``(label, optimizer, feeds grad_variance)``: the conformance table and variants."""
    out = [(name, make(name), False) for name in NAMES]
    out += [
        (f"{name}+grad_variance", make(name), True) for name in NAMES if _variance_adapted(name)
    ]
    out.append(
        (
            "dissect(variance='minibatch')",
            osv.dissect(1e-2, variance_adaptation="optimal", variance="minibatch"),
            True,
        )
    )
    for name in ("m_svag", "adabound"):
        entry = OPTIMIZERS[name]
        out.append(
            (
                f"inject_hyperparams({name})",
                optax.inject_hyperparams(entry.factory)(**entry.kwargs),
                False,
            )
        )
    out.append((CONTROL, unsharded_state_control(), False))
    return out


CONTROL = "control: state built without sharding"


def unsharded_state_control() -> optax.GradientTransformation:
    """A transformation whose state ignores the params' sharding (``jnp.zeros(p.shape)``):
    the harness must report it, or its checks prove nothing."""

    def init(params):
        return jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), params)

    def update(updates, state, params=None, **extra):
        del params, extra
        return updates, state

    return optax.GradientTransformationExtraArgs(init, update)


def host_data(layout, seed=0):
    """Initial params and a stream of gradients and variances, as numpy arrays.

    Gradient coordinates have signal-to-noise ratios from high to nil, and one
    coordinate of every leaf never sees a gradient (0/0 guards).
    """
    rng = np.random.default_rng(seed)
    params, grads, variances = {}, [], []
    for name, (shape, dtype, _) in layout.items():
        params[name] = rng.normal(size=shape).astype(dtype)
    signal = {
        k: rng.normal(size=v.shape) * rng.uniform(0, 2, size=v.shape) for k, v in params.items()
    }
    for _ in range(STEPS):
        g, s = {}, {}
        for k, p in params.items():
            x = signal[k] + rng.normal(size=p.shape)
            x.reshape(-1)[0] = 0.0
            g[k] = x.astype(p.dtype)
            s[k] = (rng.uniform(0, 1, size=p.shape) ** 2).astype(p.dtype)
        grads.append(g)
        variances.append(s)
    return params, grads, variances


def place(tree, shardings):
    return jax.tree.map(lambda x, s: jax.device_put(x, s), tree, shardings)


def update_all(cases_, params, states, grads, variance):
    """One step of every case: ``(new params, new state, updates)`` per case."""
    out = []
    for (_, opt, feed_variance), p, s in zip(cases_, params, states, strict=True):
        extra = {"grad_variance": variance} if feed_variance else {}
        updates, s = opt.update(grads, s, p, **extra)
        out.append((optax.apply_updates(p, updates), s, updates))
    return tuple(out)


def make_programs(cases_):
    """All cases in one jitted init and one jitted step: 2 compilations, not 2 per case."""
    init = jax.jit(lambda params: tuple(opt.init(params) for _, opt, _ in cases_))
    step = jax.jit(lambda *args: update_all(cases_, *args))
    return init, step


def traceable(cases_, params, grads, variance, errors):
    """The cases whose init and update trace (a sharding type error is raised when
    tracing under an explicit mesh); the others are reported and left out."""
    ok = []
    for case in cases_:
        label, opt, _ = case
        try:
            state = jax.eval_shape(opt.init, params)
            jax.eval_shape(
                lambda s, c=case: update_all([c], (params,), (s,), grads, variance), state
            )
            ok.append(case)
        except Exception:
            errors.append(f"{label}: raised\n{traceback.format_exc()}")
            print(f"{label:38s} RAISED", flush=True)
    return ok


def param_of(path, param_paths):
    """The parameter a state leaf belongs to: the one whose key path ends its own."""
    for ppath, name in param_paths:
        if len(path) >= len(ppath) and tuple(path[-len(ppath) :]) == ppath:
            return name
    return None


def check_layout(what, tree, params, replicated, errors):
    """Every parameter-shaped leaf is sharded like its parameter; scalars are replicated."""
    param_paths = [(tuple(p), p[-1].key) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    n_param_leaves = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        where = f"{what}{jax.tree_util.keystr(path)}"
        name = param_of(path, param_paths)
        if name is not None and leaf.shape == params[name].shape:
            n_param_leaves += 1
            ref = params[name].sharding
            if not leaf.sharding.is_equivalent_to(ref, leaf.ndim):
                errors.append(f"{where}: sharding {leaf.sharding} != the param's {ref}")
        elif leaf.ndim == 0:
            if not leaf.sharding.is_equivalent_to(replicated, 0):
                errors.append(f"{where}: scalar sharded as {leaf.sharding}, not replicated")
        else:
            errors.append(f"{where}: a {leaf.shape} leaf that matches no parameter")
    return n_param_leaves


def _excess_precision() -> bool:
    return "--xla_allow_excess_precision=false" not in os.environ.get("XLA_FLAGS", "")


def compare(what, sharded, single, errors, not_bitwise):
    """Bit for bit. Without ``--xla_allow_excess_precision=false`` XLA may keep a
    16-bit intermediate in float32 or not depending on the fusion, which differs
    between the partitioned and the single-device program: 16-bit leaves are
    then held to 2 ulps (at the leaf's largest magnitude) and noted."""
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(sharded), jax.tree.leaves(single), strict=True
    ):
        where = f"{what}{jax.tree_util.keystr(path)}"
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype or a.shape != b.shape:
            errors.append(f"{where}: {a.dtype}{a.shape} sharded, {b.dtype}{b.shape} single")
            continue
        if np.array_equal(a, b, equal_nan=True):
            continue
        not_bitwise.append(where)
        dtype = a.dtype
        a, b = a.astype(np.float64), b.astype(np.float64)
        err = np.max(np.abs(a - b))
        if dtype.itemsize == 2 and _excess_precision():
            ulp = 2.0 ** (np.floor(np.log2(np.max(np.abs(b)))) - jnp.finfo(dtype).nmant)
            if err <= 2 * ulp:
                continue
        errors.append(f"{where}: sharded != single-device (max abs diff {err:.3g})")


def check_case(label, t, sharded, single, params0, replicated, errors, not_bitwise):
    params, state, updates = sharded
    check_layout(f"{label}: step {t} state", state, params0, replicated, errors)
    check_layout(f"{label}: step {t} updates", updates, params0, replicated, errors)
    check_layout(f"{label}: step {t} params", params, params0, replicated, errors)
    compare(f"{label}: step {t} (params, state, updates)", sharded, single, errors, not_bitwise)


def main(mesh_name: str) -> int:
    (shape, axes), layout = LAYOUTS[mesh_name]
    if jax.device_count() < int(np.prod(shape)):
        print(f"need {np.prod(shape)} devices, have {jax.device_count()}: set XLA_FLAGS")
        return 2
    mesh = jax.make_mesh(shape, axes)
    replicated = NamedSharding(mesh, P())
    print(f"{mesh_name}: {mesh}, jax {jax.__version__}", flush=True)
    shardings = {k: NamedSharding(mesh, spec) for k, (_, _, spec) in layout.items()}
    params_np, grads_np, vars_np = host_data(layout)
    errors = []
    all_cases = cases()

    # single device: unsharded copies on device 0, outside the mesh
    device0 = jax.devices()[0]
    good = traceable(all_cases, params_np, grads_np[0], vars_np[0], errors)
    init, step = make_programs(good)
    p1 = jax.device_put(params_np, device0)
    # jit(init) of committed params gives uncommitted zeros (they do not depend on
    # the params): commit them, or the step's second call would compile again
    params, states = (p1,) * len(good), jax.device_put(init(p1), device0)
    single = []  # per step: label -> (params, state, updates)
    for g, v in zip(grads_np, vars_np, strict=True):
        out = step(params, states, jax.device_put(g, device0), jax.device_put(v, device0))
        single.append({label: o for (label, _, _), o in zip(good, out, strict=True)})
        params, states = tuple(o[0] for o in out), tuple(o[1] for o in out)

    not_bitwise = {label: [] for label, _, _ in good}
    n_errors = dict.fromkeys(not_bitwise, 0)
    with jax.set_mesh(mesh):
        p0 = place(params_np, shardings)
        g0, v0 = place(grads_np[0], shardings), place(vars_np[0], shardings)
        good = traceable(good, p0, g0, v0, errors)
        init, step = make_programs(good)
        states = init(p0)
        for (label, opt, _), state in zip(good, states, strict=True):
            before = len(errors)
            check_layout(f"{label}: jit(init) state", state, p0, replicated, errors)
            check_layout(f"{label}: eager init state", opt.init(p0), p0, replicated, errors)
            n_errors[label] += len(errors) - before
        params = (p0,) * len(good)
        for t, (g, v) in enumerate(zip(grads_np, vars_np, strict=True)):
            out = step(params, states, place(g, shardings), place(v, shardings))
            for (label, _, _), o in zip(good, out, strict=True):
                before = len(errors)
                ref = single[t][label]
                check_case(label, t, o, ref, p0, replicated, errors, not_bitwise[label])
                n_errors[label] += len(errors) - before
            params, states = tuple(o[0] for o in out), tuple(o[1] for o in out)
        if step._cache_size() != 1:
            errors.append(
                f"the sharded step compiled {step._cache_size()} times: a state's sharding "
                "(or type) changed from one step to the next"
            )
    for label, _, _ in good:
        status = "ok" if n_errors[label] == 0 else "FAILED"
        if label == CONTROL:
            status = "caught" if n_errors[label] else "MISSED"
        nb = not_bitwise[label]
        exact = "bitwise" if not nb else f"not bitwise in {len(nb)} leaves: {nb[0]}, ..."
        print(f"{label:38s} {status:6s} {exact}", flush=True)
    # the control must have been caught; its (expected) failures are not failures
    caught = [e for e in errors if e.startswith(CONTROL)]
    errors = [e for e in errors if not e.startswith(CONTROL)]
    if not any("jit(init) state" in e and "!= the param's" in e for e in caught):
        errors.append(f"{CONTROL}: not reported, so the sharding checks are not working")
    if errors:
        print(f"{len(errors)} sharding failures:", *errors, sep="\n", file=sys.stderr)
        return 1
    print(f"{MARKER} {mesh_name} {len(all_cases) - 1} cases; the control was caught")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "mesh1d"))
