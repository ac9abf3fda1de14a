"""Per-example gradient moments from each parameterised op's inputs and output gradients.

The per-example loss ``loss_fn(params, example)`` is traced once, for one
example, into a jaxpr, and that jaxpr is evaluated on the whole batch one
equation at a time (each equation ``jax.vmap``-ed over axis 0 of its batched
inputs, so every batched value keeps the batch on axis 0). Values are
*parameter* values (computed from the parameters only: a weight, its transpose,
its cast) or *data* values (depending on the example). An equation that takes
both is a *boundary*: the parameters enter the example's computation there
(``x @ W``, a convolution with a kernel, ``table[ids]``, ``x * scale``). The
gradient of example ``n``'s loss with respect to a boundary's parameter operand
depends only on that example's inputs to the equation and on the gradient
``δₙ`` of its loss with respect to the equation's output. One backward pass
gives every ``δₙ``: each boundary output gets a zero perturbation ``ε`` (batched,
one row per example) and the summed loss is differentiated with respect to the
``ε`` only. The per-example operand gradient is then the equation's own
vector-Jacobian product at ``(xₙ, δₙ)``, batched over ``n``; the parameter's is
that pulled back through the parameter-only computation (a transpose, a
broadcast, ...), summed over the parameter's uses (a weight shared across time
steps, a tied embedding).

*Factored* leaves form no per-example gradient at all. A leaf that reaches the
loss only through a ``dot_general`` whose data operand has no free dimension
(a dense layer on a vector: the per-example gradient is the outer product
``xₙ δₙᵀ``, each entry one product) gets its sums from products of the
batch's inputs and output gradients, centred first so that nothing cancels
(:func:`_dot_moments`: three products of the weight gradient's size). An
embedding lookup sums its output gradients per (example, row)
(:func:`_lookup_moments`). A weight that meets a new input in several
``dot_general`` (an RNN unrolled in Python) has its per-example gradient
formed by one batched product over the uses (:func:`_shared_dots`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np

# Calls whose body is traced inline: differentiating the body is differentiating
# the call. Custom-derivative calls (relu, logsumexp, ...) stay whole so that
# their own rules keep applying.
_INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr"}
_INLINE |= {"checkpoint": "jaxpr", "remat": "jaxpr", "remat2": "jaxpr"}

# Parameter-only ops that only move elements: a factored leaf may pass through
# them (the moments are moved back by the inverse permutation).
_PERMUTING = {"reshape", "transpose", "squeeze", "expand_dims", "copy"}
_PERMUTING |= {"convert_element_type", "broadcast_in_dim"}


class _Ref:
    """A value of the flattened program (identity-hashed)."""

    __slots__ = ("aval",)

    def __init__(self, aval: Any):
        self.aval = aval


@dataclasses.dataclass(frozen=True, eq=False)
class _Lit:
    """A constant: a literal, or a constant captured by the traced function."""

    value: Any


@dataclasses.dataclass(frozen=True, eq=False)
class _Op:
    prim: Any
    subfuns: tuple
    params: dict
    ins: tuple
    outs: tuple

    def bind(self, *args: Any) -> list[Any]:
        out = self.prim.bind(*self.subfuns, *args, **self.params)
        return list(out) if self.prim.multiple_results else [out]

    @property
    def name(self) -> str:
        return self.prim.name


def _inline_body(eqn: Any) -> tuple[Any, Sequence[Any]] | None:
    key = _INLINE.get(eqn.primitive.name)
    body = eqn.params.get(key) if key else None
    if isinstance(body, jcore.ClosedJaxpr):
        return body.jaxpr, body.consts
    if isinstance(body, jcore.Jaxpr) and not body.constvars:
        return body, ()
    return None


def _flatten(jaxpr: Any, consts: Sequence[Any], ins: Sequence[Any], ops: list[_Op]) -> list[Any]:
    """Appends ``jaxpr``'s equations to ``ops`` (calls inlined); returns its outputs."""
    env: dict[Any, Any] = {v: _Lit(c) for v, c in zip(jaxpr.constvars, consts, strict=True)}
    env.update(zip(jaxpr.invars, ins, strict=True))

    def read(v):
        return _Lit(v.val) if isinstance(v, jcore.Literal) else env[v]

    for eqn in jaxpr.eqns:
        args = [read(v) for v in eqn.invars]
        inline = _inline_body(eqn)
        if inline is not None:
            outs = _flatten(inline[0], inline[1], args, ops)
        else:
            outs = [_Ref(v.aval) for v in eqn.outvars]
            params = eqn.primitive.get_bind_params(eqn.params)
            # jax < 0.7 returned (subfuns, params)
            subfuns, params = params if isinstance(params, tuple) else ((), params)
            ops.append(_Op(eqn.primitive, tuple(subfuns), params, tuple(args), tuple(outs)))
        for v, r in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, jcore.DropVar):
                env[v] = r
    return [read(v) for v in jaxpr.outvars]


@dataclasses.dataclass
class Program:
    """The per-example loss as a flat list of ops, classified."""

    ops: list[_Op]
    leaf_refs: list[_Ref]
    batch_refs: list[_Ref]
    out: Any
    # per ref: the parameter leaves it depends on, and whether it depends on the example
    leaves_of: dict[Any, frozenset]
    is_data: dict[Any, bool]
    # boundary op index -> positions of its parameter operands
    boundaries: dict[int, tuple[int, ...]]
    # factored leaf index -> (boundary op index, chain of permuting ops from the leaf)
    factored: dict[int, tuple[int, list[_Op]]]
    # per leaf: names of the boundary primitives it reaches
    reaches: list[set[str]]
    # leaves that reach the loss without meeting the example
    unbatched: set[int]

    def is_param(self, ref: Any) -> bool:
        return bool(self.leaves_of.get(ref)) and not self.is_data.get(ref, False)


def trace(loss_fn: Callable, treedef: Any, leaves: Sequence[Any], batch: Any) -> Program:
    """The per-example jaxpr of ``loss_fn``, flattened and classified."""
    batch_leaves, batch_def = jax.tree.flatten(batch)
    example = [jax.ShapeDtypeStruct(np.shape(x)[1:], jnp.result_type(x)) for x in batch_leaves]
    leaf_specs = [jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)) for x in leaves]

    def flat_loss(leaves, example):
        return loss_fn(jax.tree.unflatten(treedef, leaves), jax.tree.unflatten(batch_def, example))

    closed = jax.make_jaxpr(flat_loss)(leaf_specs, example)
    out_aval = closed.out_avals[0]
    if len(closed.out_avals) != 1 or out_aval.shape != ():
        raise ValueError(
            "loss_fn(params, example) must return a scalar for one example; got "
            f"{closed.out_avals}."
        )
    n_leaves = len(leaves)
    refs = [_Ref(v.aval) for v in closed.jaxpr.invars]
    ops: list[_Op] = []
    (out,) = _flatten(closed.jaxpr, closed.consts, refs, ops)
    program = Program(ops, refs[:n_leaves], refs[n_leaves:], out, {}, {}, {}, {}, [], set())
    _classify(program, n_leaves)
    return program


def _classify(p: Program, n_leaves: int) -> None:
    for i, r in enumerate(p.leaf_refs):
        p.leaves_of[r] = frozenset([i])
    for r in p.batch_refs:
        p.is_data[r] = True
    consumers: dict[Any, list[tuple[int, int]]] = {}
    for k, op in enumerate(p.ops):
        deps = frozenset().union(*(p.leaves_of.get(r, frozenset()) for r in op.ins))
        data = any(p.is_data.get(r, False) for r in op.ins)
        for r in op.outs:
            p.leaves_of[r], p.is_data[r] = deps, data
        for pos, r in enumerate(op.ins):
            if not isinstance(r, _Lit):
                consumers.setdefault(r, []).append((k, pos))
        if data:
            weights = tuple(
                pos
                for pos, r in enumerate(op.ins)
                if p.is_param(r) and jnp.issubdtype(r.aval.dtype, jnp.inexact)
            )
            if weights:
                p.boundaries[k] = weights
    p.reaches = [set() for _ in range(n_leaves)]
    for k, positions in p.boundaries.items():
        for pos in positions:
            for i in p.leaves_of[p.ops[k].ins[pos]]:
                p.reaches[i].add(p.ops[k].name)
    if p.is_param(p.out):
        p.unbatched = set(p.leaves_of[p.out])
    for i, r in enumerate(p.leaf_refs):
        found = None if i in p.unbatched else _factored_chain(p, r, consumers)
        if found is not None:
            p.factored[i] = found


def _factored_chain(p: Program, ref: Any, consumers: dict) -> tuple[int, list[_Op]] | None:
    """The boundary a leaf reaches by permuting ops only, if it is a factorable dot."""
    if not jnp.issubdtype(ref.aval.dtype, jnp.floating):
        return None
    chain: list[_Op] = []
    while True:
        uses = consumers.get(ref, [])
        if len(uses) != 1 or ref is p.out:
            return None
        k, pos = uses[0]
        op = p.ops[k]
        if k in p.boundaries:
            factorable = p.boundaries[k] == (pos,) and (
                _is_factorable_dot(op, pos) or _is_lookup(op, pos)
            )
            return (k, chain) if factorable else None
        if op.name not in _PERMUTING or len(op.ins) != 1 or len(op.outs) != 1:
            return None
        (out,) = op.outs
        if np.prod(out.aval.shape, dtype=int) != np.prod(ref.aval.shape, dtype=int):
            return None  # a broadcast that copies: not a permutation
        if not jnp.issubdtype(out.aval.dtype, jnp.floating):
            return None
        chain.append(op)
        ref = out


def _is_lookup(op: _Op, pos: int) -> bool:
    """``table[ids]``: a gather of whole rows of the parameter operand."""
    if op.name != "gather" or pos != 0 or len(op.ins) != 2:
        return False
    dims = op.params["dimension_numbers"]
    table, ids, out = op.ins[0].aval.shape, op.ins[1].aval.shape, op.outs[0].aval.shape
    return (
        tuple(dims.collapsed_slice_dims) == (0,)
        and tuple(dims.start_index_map) == (0,)
        and not getattr(dims, "operand_batching_dims", ())
        and tuple(op.params["slice_sizes"]) == (1, *table[1:])
        and ids[-1:] == (1,)
        and tuple(dims.offset_dims) == tuple(range(len(out) - len(table) + 1, len(out)))
    )


def _is_factorable_dot(op: _Op, pos: int) -> bool:
    """A ``dot_general`` whose data operand has only contracting and batch dims."""
    if op.name != "dot_general" or len(op.ins) != 2:
        return False
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    data_pos = 1 - pos
    kept = set(lc if data_pos == 0 else rc) | set(lb if data_pos == 0 else rb)
    shape = op.ins[data_pos].aval.shape
    # free dims of size 1 (``x[None] @ W``, as Flax models are often called) sum nothing
    return all(n == 1 for axis, n in enumerate(shape) if axis not in kept)


def paths(p: Program) -> list[str]:
    """How each leaf's moments are formed, as :func:`grad_moments_paths` reports it."""
    out = []
    for i in range(len(p.leaf_refs)):
        if i in p.unbatched:
            out.append("vmap: the parameter reaches the loss without meeting the example")
        elif i in p.factored:
            out.append("factored: " + p.ops[p.factored[i][0]].name)
        elif p.reaches[i]:
            out.append("per-example: " + ", ".join(sorted(p.reaches[i])))
        else:
            out.append("unused: the loss does not depend on it (gradient 0)")
    return out


# --- evaluation -------------------------------------------------------------------

_HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)


def _real(dtype: Any) -> Any:
    return jnp.finfo(dtype).dtype


def _read(env: dict, ref: Any) -> tuple[Any, bool]:
    return (ref.value, False) if isinstance(ref, _Lit) else env[ref]


def _apply(op: _Op, vals: Sequence[Any], batched: Sequence[bool]) -> list[Any]:
    if not any(batched):
        return op.bind(*vals)
    axes = [0 if b else None for b in batched]
    return jax.vmap(op.bind, in_axes=axes)(*vals)


def _forward(p: Program, leaves: Sequence[Any], batch: Sequence[Any], eps: dict, vary) -> tuple:
    """The summed loss of the batch, every boundary's output perturbed by ``eps``.

    Returns the loss and, per boundary, its inputs (values, batched flags).
    ``vary`` makes every input varying over the data axis inside ``shard_map``:
    a primitive bound directly (not through ``jnp``) gets no implicit cast.
    """
    env = {r: (v, False) for r, v in zip(p.leaf_refs, leaves, strict=True)}
    env.update({r: (v, True) for r, v in zip(p.batch_refs, batch, strict=True)})
    saved = {}
    for k, op in enumerate(p.ops):
        read = [_read(env, r) for r in op.ins]
        vals, batched = vary([v for v, _ in read]), [b for _, b in read]
        outs = _apply(op, vals, batched)
        if k in p.boundaries:
            saved[k] = (vals, batched)
            outs = [o if e is None else o + e for o, e in zip(outs, eps[k], strict=True)]
        for r, o in zip(op.outs, outs, strict=True):
            env[r] = (o, any(batched))
    loss, _ = _read(env, p.out)
    return jnp.sum(loss), saved


def _param_values(p: Program, leaves: Sequence[Any], refs: Sequence[Any], vary) -> list[Any]:
    """The values of parameter-only ``refs``, from the leaves (no example needed)."""
    env = {r: (v, False) for r, v in zip(p.leaf_refs, leaves, strict=True)}
    for op in p.ops:
        if any(p.is_data.get(r, False) for r in op.outs):
            continue
        outs = op.bind(*vary([_read(env, r)[0] for r in op.ins]))
        env.update((r, (o, False)) for r, o in zip(op.outs, outs, strict=True))
    return [_read(env, r)[0] for r in refs]


def _operand_cotangents(op: _Op, positions: tuple, vals: list, batched: list, deltas: list):
    """Per-example gradients of ``op``'s parameter operands, from its inputs and ``δₙ``."""
    zero_cts = [np.zeros(r.aval.shape, jax.dtypes.float0) for r in op.outs]

    def one(vals, deltas):
        def f(*ws):
            args = list(vals)
            for pos, w in zip(positions, ws, strict=True):
                args[pos] = w
            return op.bind(*args)

        _, vjp = jax.vjp(f, *(vals[pos] for pos in positions))
        return vjp([z if d is None else d for d, z in zip(deltas, zero_cts, strict=True)])

    axes = [0 if b else None for b in batched]
    return jax.vmap(one, in_axes=(axes, 0))(vals, deltas)


def _factored_moments(p: Program, i: int, saved: tuple, delta, acc, vary):
    """Mean and centred ``m2`` of a factored leaf, with no per-example gradient formed."""
    k, chain = p.factored[i]
    op, (pos,) = p.ops[k], p.boundaries[k]
    if op.name == "gather":
        moments = _lookup_moments(op, saved[0][1], delta, acc)
    else:
        moments = _dot_moments(op, pos, saved[0], delta, acc, vary)
    leaf = p.leaf_refs[i]
    moves = [op for op in chain if op.name != "convert_element_type"]
    if not moves:
        return moments

    def chain_fn(v):
        for op in moves:
            (v,) = op.bind(v)
        return v

    # the chain only moves elements: its transpose moves the moments back
    _, back = jax.vjp(chain_fn, vary(jnp.zeros(leaf.aval.shape, acc)))
    return tuple(back(m)[0] for m in moments)


def _dot_moments(op: _Op, pos: int, vals: list, delta: Any, acc: Any, vary) -> tuple[Any, Any]:
    r"""Dense: every per-example entry is one product ``x δ``, so sums factor.

    With ``T(a, d) = Σₙ aₙ dₙᵀ`` (the op's summed weight gradient) and the
    inputs and output gradients centred, ``x̃ = x - x̄``, ``δ̃ = δ - δ̄``:
    ``Gₙ - x̄δ̄ = xₙδ̃ₙ + x̃ₙδ̄`` has mean ``C = T(x̃, δ̃)/B``, so
    ``Σₙ (Gₙ - Ḡ)² = T(x², δ̃²) + 2T(x x̃, δ̃ δ̄) + (Σₙ x̃ₙ²) δ̄² - B C²``: only
    centred quantities are squared, so nothing cancels against ``Ḡ²`` (the
    plain ``T(x², δ²) - B Ḡ²`` has no correct digit in float32 where the mean
    is 1e3 times the spread). Three products of the weight gradient's size.
    """
    x = vals[1 - pos].astype(acc)
    d = delta.astype(acc)
    dims = op.params["dimension_numbers"]
    w0 = vary(jnp.zeros(op.ins[pos].aval.shape, acc))

    def dot(a, b):
        pair = (a, b) if pos == 1 else (b, a)
        return jax.lax.dot_general(*pair, dims, precision=_HIGHEST, preferred_element_type=acc)

    def summed(a, dd):  # T(a, dd): the weight gradient of the batch
        return jax.vjp(lambda w: jax.vmap(dot, in_axes=(0, None))(a, w), w0)[1](dd)[0]

    def single(a, dd):  # the same for one example
        return jax.vjp(lambda w: dot(a, w), w0)[1](dd)[0]

    size = x.shape[0]
    x_bar, d_bar = _batch_sum(x) / size, _batch_sum(d) / size
    x_dev, d_dev = x - x_bar, d - d_bar
    c = summed(x_dev, d_dev) / size
    mean = single(x_bar, d_bar) + c
    # both batch sums as one product over 2B rows: one weight-sized result, not two
    both = jnp.concatenate([x * x, 2 * x * x_dev]), jnp.concatenate([d_dev * d_dev, d_dev * d_bar])
    squares = summed(*both)
    squares = squares + single(_batch_sum(x_dev * x_dev), d_bar * d_bar)
    return mean, jnp.maximum(squares - size * c * c, 0)


def _batch_sum(a: Any) -> Any:
    """Sum over axis 0 as a matrix-vector product (XLA:CPU reduces a major axis slowly)."""
    flat = a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=int)))
    ones = jnp.ones(a.shape[0], a.dtype)
    return jnp.dot(ones, flat, precision=_HIGHEST).reshape(a.shape[1:])


def _lookup_moments(op: _Op, ids: Any, delta: Any, acc: Any) -> tuple[Any, Any]:
    """Embedding: the moments from the output gradients summed per (example, row).

    Example ``n``'s gradient of row ``v`` is the sum of its output gradients at
    the positions that looked ``v`` up (0 if none did); grouping the batch's
    (example, id) pairs by a sort forms those sums without a ``[B, rows,
    width]`` array, and their deviations from the mean exactly.
    """
    table = op.ins[0].aval.shape
    rows, width = table[0], int(np.prod(table[1:], dtype=int))
    size = ids.shape[0]
    ids = ids.reshape(-1).astype(jnp.int32)
    d = delta.astype(acc).reshape(ids.shape[0], width)
    if op.params["mode"] == jax.lax.GatherScatterMode.CLIP:
        ids = jnp.clip(ids, 0, rows - 1)
    else:  # out-of-range lookups get no gradient (FILL_OR_DROP; PROMISE_IN_BOUNDS is undefined)
        d = jnp.where(((ids >= 0) & (ids < rows))[:, None], d, 0)
        ids = jnp.clip(ids, 0, rows - 1)
    mean = jnp.zeros((rows, width), acc).at[ids].add(d) / size
    example = jnp.repeat(jnp.arange(size, dtype=jnp.int32), ids.shape[0] // size)
    order = jnp.lexsort((ids, example))  # by example, then id: no int overflow
    ids, example, d = ids[order], example[order], d[order]
    new = (ids[1:] != ids[:-1]) | (example[1:] != example[:-1])
    group = jnp.cumsum(jnp.concatenate([jnp.ones(1, jnp.int32), new.astype(jnp.int32)])) - 1
    sums = jax.ops.segment_sum(d, group, num_segments=ids.shape[0], indices_are_sorted=True)
    row_of_group = jnp.zeros(ids.shape[0], jnp.int32).at[group].set(ids)
    used = (
        jnp.arange(ids.shape[0], dtype=jnp.int32) <= group[-1]
    )  # the slots past the last group are padding
    deviations = jnp.where(used[:, None], sums - mean[row_of_group], 0)
    m2 = jnp.zeros((rows, width), acc).at[row_of_group].add(deviations * deviations)
    lookers = jnp.zeros(rows, acc).at[row_of_group].add(used.astype(acc))
    # the examples that never looked row v up have G = 0: deviation -mean
    m2 = m2 + (size - lookers)[:, None] * mean * mean
    return mean.reshape(table), m2.reshape(table)


def moments(
    p: Program,
    leaves: Sequence[Any],
    batch: Sequence[Any],
    *,
    size: int,
    acc_dtype: Callable[[Any], Any],
    mean_and_m2: Callable[[Any], tuple[Any, Any]],
    vary: Callable[[Any], Any],
) -> tuple[list[Any], list[Any]]:
    """Per leaf, the mean gradient and the sum of squared deviations from it.

    ``mean_and_m2`` reduces per-example gradients (batch on axis 0); ``vary``
    marks a value as varying over the data axis inside ``shard_map``.
    """
    eps = {
        k: [
            jnp.zeros((size, *r.aval.shape), r.aval.dtype)
            if jnp.issubdtype(r.aval.dtype, jnp.inexact)
            else None
            for r in p.ops[k].outs
        ]
        for k in p.boundaries
    }
    eps = vary(eps)
    _, vjp_fn, saved = jax.vjp(lambda e: _forward(p, leaves, batch, e, vary), eps, has_aux=True)
    loss_dtype = p.out.aval.dtype
    (deltas,) = vjp_fn(vary(jnp.ones((), loss_dtype)))
    means: list[Any] = [None] * len(leaves)
    m2s: list[Any] = [None] * len(leaves)
    for i, (k, _) in p.factored.items():
        acc = acc_dtype(p.leaf_refs[i].aval.dtype)
        means[i], m2s[i] = _factored_moments(p, i, saved[k], deltas[k][0], acc, vary)
    rest = [i for i in range(len(leaves)) if i not in p.factored and i not in p.unbatched]
    reached = [i for i in rest if p.reaches[i]]
    for i in set(rest) - set(reached):  # no gradient: the loss does not depend on it
        acc = acc_dtype(p.leaf_refs[i].aval.dtype)
        means[i] = vary(jnp.zeros(p.leaf_refs[i].aval.shape, acc))
        m2s[i] = vary(jnp.zeros(p.leaf_refs[i].aval.shape, _real(acc)))
    rest = reached
    if rest:
        per_example = _materialised_grads(p, leaves, rest, saved, deltas, vary)
        for i, g in zip(rest, per_example, strict=True):
            means[i], m2s[i] = mean_and_m2(g)
    return means, m2s


def _shared_dots(p: Program, boundaries: list[int], saved: dict) -> list[list[int]]:
    """Boundaries grouped where one weight meets the example in the same product.

    A weight shared across time steps (an unrolled RNN) meets a new input at
    every step; its per-example gradient is the sum over steps of one
    product each. Stacking the steps makes that one batched matrix product
    ``[B, steps, in]^T [B, steps, out]`` instead of one ``[B, in, out]`` array per
    step, summed.
    """
    groups: dict[Any, list[int]] = {}
    for k in boundaries:
        op, positions = p.ops[k], p.boundaries[k]
        key: Any = k
        if op.name == "dot_general" and len(positions) == 1:
            (pos,) = positions
            data = op.ins[1 - pos]
            key = (id(op.ins[pos]), pos, op.params["dimension_numbers"], data.aval.shape)
            key += (str(data.aval.dtype), tuple(saved[k][1]), str(op.outs[0].aval.dtype))
        groups.setdefault(key, []).append(k)
    return list(groups.values())


def _stacked_dot_cotangent(p: Program, ks: list[int], saved: dict, deltas: dict) -> Any:
    """Per-example gradient of a weight shared by the ``dot_general`` boundaries ``ks``."""
    op = p.ops[ks[0]]
    (pos,) = p.boundaries[ks[0]]
    w = saved[ks[0]][0][pos]
    xs = jnp.stack([saved[k][0][1 - pos] for k in ks], axis=1)
    ds = jnp.stack([deltas[k][0] for k in ks], axis=1)

    def one(xs, ds):
        def f(w):
            return jax.vmap(lambda x: op.bind(*((x, w) if pos == 1 else (w, x)))[0])(xs)

        return jax.vjp(f, w)[1](ds)[0]

    return jax.vmap(one)(xs, ds)


def _materialised_grads(p: Program, leaves, rest: list[int], saved: dict, deltas: dict, vary):
    """Per-example gradients ``[B, *leaf]`` of the leaves in ``rest``."""
    factored_ops = {k for k, _ in p.factored.values()}
    refs, cts = [], []
    for ks in _shared_dots(p, [k for k in p.boundaries if k not in factored_ops], saved):
        if len(ks) > 1:
            (pos,) = p.boundaries[ks[0]]
            cts.append(_stacked_dot_cotangent(p, ks, saved, deltas))
            refs.append(p.ops[ks[0]].ins[pos])
            continue
        (k,) = ks
        vals, batched = saved[k]
        positions = p.boundaries[k]
        cts.extend(_operand_cotangents(p.ops[k], positions, vals, batched, deltas[k]))
        refs.extend(p.ops[k].ins[pos] for pos in positions)

    def leaf_grads(cts_n):
        def f(chosen):
            full = list(leaves)
            for i, v in zip(rest, chosen, strict=True):
                full[i] = v
            return _param_values(p, full, refs, vary)

        _, vjp = jax.vjp(f, [leaves[i] for i in rest])
        return vjp(list(cts_n))[0]

    return jax.vmap(leaf_grads)(cts)
