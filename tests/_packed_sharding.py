"""Subprocess body of ``tests/test_layout.py``: ``layout="packed"`` under an 8-device mesh.

Run as ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python
tests/_packed_sharding.py mesh2d explicit`` (the mesh of
``tests/_sharding_scripts.LAYOUTS``: leaves sharded along one dimension or the
other, over one mesh axis or two, and replicated; axes ``explicit`` or
``auto``). For each optimizer, the packed and the tree layout run the same
3 jitted steps on the same sharded parameters, and:

- the parameters and updates are equal bit for bit, and sharded like the
  parameters;
- each packed buffer is sharded as its group says (the leaves' sharded
  dimensions leading, over the same mesh axes): packing never crosses a sharding;
- the compiled packed step has no collective (all-gather, all-reduce,
  reduce-scatter, all-to-all, collective-permute) beyond those of the tree step.

The last line is ``PACKED-SHARDING-OK <mesh> <axes> <n> cases`` when every check
passed (exit status 0), else the failures are printed and the status is 1.
"""

from __future__ import annotations

import collections
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402

import optax_signvar as osv  # noqa: E402
from tests._sharding_scripts import LAYOUTS, host_data  # noqa: E402

MARKER = "PACKED-SHARDING-OK"
COLLECTIVE = re.compile(
    r"\b(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(-start)?\("
)
OPTIMIZERS = {
    "adam": lambda layout: osv.adam(1e-2, layout=layout),
    "m_svag": lambda layout: osv.m_svag(1e-2, layout=layout),
    "m_vassd": lambda layout: osv.m_vassd(1e-2, layout=layout),
    "amsbound": lambda layout: osv.amsbound(1e-2, final_lr=1e-2, layout=layout),
    "m_sgd": lambda layout: osv.m_sgd(1e-2, layout=layout),
}


def collectives(compiled_text: str) -> collections.Counter:
    return collections.Counter(m.group(1) for m in COLLECTIVE.finditer(compiled_text))


def run_layout(opt, params, grads):
    def step(p, s, g):
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, u

    jitted = jax.jit(step)
    state = opt.init(params)
    text = jitted.lower(params, state, grads[0]).compile().as_text()
    outs = []
    for g in grads:
        params, state, updates = jitted(params, state, g)
        outs.append((params, updates))
    return outs, state, collectives(text)


def check_buffers(label, state, errors):
    is_packed = lambda x: isinstance(x, osv.Packed)  # noqa: E731
    found = [x for x in jax.tree.leaves(state, is_leaf=is_packed) if is_packed(x)]
    if not found:
        errors.append(f"{label}: no packed buffer in the state")
    for packed in found:
        for buffer, group in zip(packed.buffers, packed.plan.groups, strict=True):
            want = NamedSharding(buffer.sharding.mesh, group.spec())
            have = buffer.sharding
            if not isinstance(have, NamedSharding) or not have.is_equivalent_to(want, buffer.ndim):
                errors.append(f"{label}: a packed buffer is {have}, its group says {want}")


def check_case(label, make, params, grads, errors):
    (tree, _, tree_coll), (packed, pstate, packed_coll) = (
        run_layout(make(layout), params, grads) for layout in ("tree", "packed")
    )
    for step, ((p_t, u_t), (p_p, u_p)) in enumerate(zip(tree, packed, strict=True)):
        for name in p_t:
            for what, a, b in (("params", p_t, p_p), ("updates", u_t, u_p)):
                if not np.array_equal(np.asarray(a[name]), np.asarray(b[name])):
                    errors.append(f"{label}: step {step} {what}[{name}] differs from tree layout")
                if not b[name].sharding.is_equivalent_to(params[name].sharding, b[name].ndim):
                    errors.append(f"{label}: {what}[{name}] is {b[name].sharding}")
    check_buffers(label, pstate, errors)
    extra = packed_coll - tree_coll
    if extra:
        errors.append(f"{label}: collectives beyond the tree step's: {dict(extra)}")
    print(f"{label:30s} collectives tree {dict(tree_coll)} packed {dict(packed_coll)}")


def main(mesh_name: str, axes: str) -> int:
    (shape, names), layout = LAYOUTS[mesh_name]
    kind = AxisType.Explicit if axes == "explicit" else AxisType.Auto
    mesh = jax.make_mesh(shape, names, axis_types=(kind,) * len(shape))
    host_params, host_grads, _ = host_data(layout)
    errors: list[str] = []
    with jax.set_mesh(mesh):
        shardings = {k: NamedSharding(mesh, spec) for k, (_, _, spec) in layout.items()}
        params = {k: jax.device_put(jnp.asarray(v), shardings[k]) for k, v in host_params.items()}
        grads = [
            {k: jax.device_put(jnp.asarray(v), shardings[k]) for k, v in g.items()}
            for g in host_grads
        ]
        for name, make in OPTIMIZERS.items():
            check_case(f"{mesh_name}/{axes}/{name}", make, params, grads, errors)
    for e in errors:
        print("FAIL", e)
    if errors:
        return 1
    print(f"{MARKER} {mesh_name} {axes} {len(OPTIMIZERS)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
