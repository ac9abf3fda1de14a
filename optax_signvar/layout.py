r"""Packed layouts: many small leaves as a few flat buffers, large leaves as they are.

An optimizer step on a tree of many small leaves (biases, norm scales: real
models have hundreds) pays per leaf, not per byte: XLA compiles the elementwise
update of each leaf into its own kernels, and each kernel costs a fixed launch and
scheduling overhead that dwarfs the few kilobytes it moves
(``benchmarks/results/per_leaf_cost.md`` measures it). Packing the small leaves
of one dtype and one sharding into a flat buffer makes the update a handful of
kernels whatever the number of leaves; leaves of :data:`PACK_MAX_SIZE` elements
or more stay as they are, where copying them would cost more than it saves.

Two uses:

* ``layout="packed"`` on every optimizer of the package
  (:func:`optax_signvar.dissect`, the named optimizers, ``scale_by_*``): the
  optimizer state keeps the moments in the packed layout and packs each gradient
  on the way in; the updates come out as a tree like the gradient. Equal, bit for
  bit, to ``layout="tree"`` (the update is elementwise).
* :func:`pack` / :func:`unpack` for the parameters themselves (the "flat
  parameter" of PyTorch FSDP): train on ``packed = pack(params)`` with a loss
  that reads ``unpack(packed)``; the gradient is then packed by the backward pass
  and any optimizer, optax's included, steps a few buffers.

Packing never crosses a sharding: leaves are grouped by dtype and by how they are
sharded, and a sharded leaf is packed shard by shard (its sharded dimensions
become the leading dimensions of the buffer, sharded as the leaf was), so the
packed step moves no data between devices that the unpacked step does not. The
shardings are read from the arrays: concrete arrays, or traced ones under
``jax.set_mesh`` with explicit axes. Under ``jax.jit`` with automatic axes a
traced leaf does not say how it is sharded, and is packed as if replicated: call
``init`` on the concrete, sharded parameters in that case.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["PACK_MAX_SIZE", "Layout", "Packed", "pack", "unpack"]

Layout = Literal["tree", "packed"]
LAYOUTS = ("tree", "packed")

#: Leaves with fewer elements than this are packed; larger ones are kept as they
#: are (measured crossover: ``benchmarks/results/per_leaf_cost.md``).
PACK_MAX_SIZE = 1 << 16

Tree = Any


def _is_none(x: Any) -> bool:
    return x is None


@dataclasses.dataclass(frozen=True)
class _Block:
    """How one leaf maps onto its group's buffer (hashable: part of a treedef).

    A sharded leaf is split shard by shard: each sharded dimension of size
    ``n`` over mesh axes of sizes ``k1, k2, ...`` becomes ``(k1, k2, ..., n /
    prod(k))``; the ``k`` dimensions move to the front (the buffer's leading,
    sharded dimensions) and the rest is flattened into the buffer's last one.
    """

    shape: tuple[int, ...]
    split: tuple[int, ...]
    split_spec: tuple[Any, ...]
    perm: tuple[int, ...]
    lead: tuple[int, ...]
    offset: int
    size: int  # elements per shard

    def local_shape(self) -> tuple[int, ...]:
        return tuple(self.split[p] for p in self.perm[len(self.lead) :])


@dataclasses.dataclass(frozen=True)
class _Group:
    """One flat buffer: the leaves of one dtype and one sharding."""

    dtype: np.dtype
    lead: tuple[int, ...]
    lead_axes: tuple[str, ...]
    mesh: Any  # a Mesh or AbstractMesh, or None off any mesh
    explicit: bool  # the mesh's axes are explicit: reshapes name their out_sharding
    length: int

    def spec(self) -> PartitionSpec:
        return PartitionSpec(*self.lead_axes, None)

    def sharding(self) -> NamedSharding | None:
        if self.mesh is None or self.explicit or not isinstance(self.mesh, jax.sharding.Mesh):
            return None
        return NamedSharding(self.mesh, self.spec())


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where every leaf of a tree lives in a :class:`Packed`.

    ``slots[i]`` is ``None`` for a ``None`` leaf, ``("large", j)`` for the j-th
    kept leaf, or ``(group, block)`` for a packed one.
    """

    treedef: Any
    slots: tuple[Any, ...]
    groups: tuple[_Group, ...]
    names: tuple[str, ...]  # the leaves' paths, for errors


@jax.tree_util.register_pytree_with_keys_class
class Packed:
    """A tree in the packed layout: flat ``buffers`` and the ``large`` leaves.

    A pytree whose children are the buffers (one per dtype and sharding) and the
    large leaves, and whose static data is the :class:`Plan` that maps them back
    onto the original tree (:func:`unpack`). Elementwise maps over two packed
    trees of one plan (``jax.tree.map``, ``optax.apply_updates``) act leaf by
    leaf of the original tree.

    Attributes:
      buffers: one array per group of small leaves.
      large: the leaves kept as they are, in the tree's order.
      plan: the layout (static).
    """

    __slots__ = ("buffers", "large", "plan")

    def __init__(self, buffers: Any, large: Any, plan: Plan):
        self.buffers = buffers
        self.large = large
        self.plan = plan

    def tree_flatten_with_keys(self):
        keys = jax.tree_util.GetAttrKey
        return ((keys("buffers"), self.buffers), (keys("large"), self.large)), self.plan

    def tree_flatten(self):
        return (self.buffers, self.large), self.plan

    @classmethod
    def tree_unflatten(cls, plan: Plan, children: Any) -> Packed:
        buffers, large = children
        return cls(buffers, large, plan)

    def __repr__(self) -> str:
        n = len(self.plan.slots)
        return f"Packed({n} leaves: buffers={self.buffers!r}, large={self.large!r})"


def _placeholder_check(tree: Tree) -> None:
    """``optax.tree_map_params`` initialises with a placeholder for the params."""
    if type(tree).__name__ == "_ParamsPlaceholder":
        raise ValueError(
            "layout='packed' keeps the optimizer state in flat buffers that do not mirror the "
            "parameters, so optax.tree_map_params (or anything that maps the state as copies "
            "of the params tree) cannot apply; use layout='tree' (the default) there. The "
            "packed buffers are sharded like the leaves they hold: their shardings need no map."
        )


def _mesh_spec(x: Any) -> tuple[Any, tuple, bool]:
    """(mesh, spec, explicit) of a leaf, or (None, (), False) where it is not sharded."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = tuple(getattr(sharding, "spec", ()) or ())
    mesh = getattr(sharding, "mesh", None)
    if mesh is not None and not mesh.empty and any(s is not None for s in spec):
        return mesh, spec, True
    concrete = getattr(x, "sharding", None) if isinstance(x, jax.Array) else None
    if isinstance(concrete, NamedSharding) and any(s is not None for s in concrete.spec):
        return concrete.mesh, tuple(concrete.spec), False
    if isinstance(concrete, NamedSharding):
        return concrete.mesh, (), False
    return (mesh if mesh is not None and not mesh.empty else None), (), mesh is not None


def _axes(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _block(shape: tuple[int, ...], spec: tuple, mesh: Any, offset: int) -> _Block | None:
    """The shard-by-shard split of a leaf (None when a dimension does not divide)."""
    split: list[int] = []
    split_spec: list[Any] = []
    lead_pos: list[int] = []
    rest_pos: list[int] = []
    spec = spec + (None,) * (len(shape) - len(spec))
    for n, entry in zip(shape, spec, strict=True):
        axes = _axes(entry)
        k = math.prod(mesh.shape[a] for a in axes) if axes else 1
        if n % k:
            return None
        for a in axes:
            lead_pos.append(len(split))
            split.append(mesh.shape[a])
            split_spec.append(a)
        rest_pos.append(len(split))
        split.append(n // k)
        split_spec.append(None)
    perm = tuple(lead_pos + rest_pos)
    lead = tuple(split[p] for p in lead_pos)
    size = math.prod(split[p] for p in rest_pos)
    return _Block(tuple(shape), tuple(split), tuple(split_spec), perm, lead, offset, size)


def _place(x: Any, max_leaf_size: int, groups: dict[tuple, list]) -> Any:
    """The slot of one leaf, its group created or grown; ``"large"`` to keep it."""
    shape, dtype = tuple(jnp.shape(x)), jnp.dtype(jnp.result_type(x))
    # 0-d leaves stay as they are: XLA simplifies scalar arithmetic (AdaBound's
    # clip, say) differently from the same arithmetic on a buffer's element,
    # which would change the last bit
    if not shape or math.prod(shape) >= max_leaf_size:
        return "large"
    mesh, spec, explicit = _mesh_spec(x)
    key_axes = tuple(a for e in spec for a in _axes(e))
    key = (dtype, mesh, key_axes, explicit)
    block = _block(shape, spec, mesh, groups[key][1] if key in groups else 0)
    if block is None:
        return "large"
    if key not in groups:
        groups[key] = [(dtype, block.lead, key_axes, mesh, explicit), 0]
    groups[key][1] += block.size
    return (list(groups).index(key), block)


def plan_for(tree: Tree, max_leaf_size: int = PACK_MAX_SIZE) -> Plan:
    """The packed layout of ``tree``: its small leaves grouped by dtype and sharding."""
    _placeholder_check(tree)
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none)
    groups: dict[tuple, list] = {}  # key -> [group fields, length]
    slots: list[Any] = []
    n_large = 0
    for _, x in flat:
        slot = None if x is None else _place(x, max_leaf_size, groups)
        if slot == "large":
            slot = ("large", n_large)
            n_large += 1
        slots.append(slot)
    built = tuple(_Group(*fields, length=length) for fields, length in groups.values())
    names = tuple(jax.tree_util.keystr(p) for p, _ in flat)
    return Plan(treedef, tuple(slots), built, names)


def _reshape(x: jax.Array, shape: tuple[int, ...], spec: Any, explicit: bool) -> jax.Array:
    if explicit:
        return lax.reshape(x, shape, out_sharding=PartitionSpec(*spec))
    return x.reshape(shape)


def _to_block(x: jax.Array, block: _Block, group: _Group) -> jax.Array:
    if not block.lead:
        return x.reshape(-1)
    x = _reshape(x, block.split, block.split_spec, group.explicit)
    x = jnp.transpose(x, block.perm)
    return _reshape(x, (*block.lead, block.size), (*group.lead_axes, None), group.explicit)


def _from_block(y: jax.Array, block: _Block, group: _Group) -> jax.Array:
    if not block.lead:
        return y.reshape(block.shape)
    local = block.local_shape()
    spec = (*group.lead_axes, *(None,) * len(local))
    y = _reshape(y, (*block.lead, *local), spec, group.explicit)
    y = jnp.transpose(y, tuple(int(i) for i in np.argsort(block.perm)))
    return _reshape(y, block.shape, _merged_spec(block), group.explicit)


def _merged_spec(block: _Block) -> tuple:
    """The leaf's own spec, from the split's (a dimension's axes, then None)."""
    spec: list[Any] = []
    axes: list[str] = []
    for entry in block.split_spec:
        if entry is None:
            spec.append(None if not axes else (axes[0] if len(axes) == 1 else tuple(axes)))
            axes = []
        else:
            axes.append(entry)
    return tuple(spec)


def _check_leaf(plan: Plan, i: int, x: Any, want: _Block | None, group: _Group | None) -> None:
    shape = tuple(jnp.shape(x))
    if want is not None and shape != want.shape:
        raise ValueError(
            f"layout='packed': the leaf at {plan.names[i]} is {list(shape)}, the packed state "
            f"holds {list(want.shape)} there (it was initialised from params of another shape)."
        )
    if group is not None and jnp.result_type(x) != group.dtype:
        raise ValueError(
            f"layout='packed': the leaf at {plan.names[i]} is {jnp.result_type(x)}, the packed "
            f"state holds {group.dtype} there: leaves are packed in the dtype of the parameters "
            "the state was initialised from; cast the gradient, or use layout='tree'."
        )


def pack_with(tree: Tree, plan: Plan, *, dtypes: bool = True) -> Packed:
    """``tree`` in the layout ``plan`` describes (its structure and shapes checked,
    and with ``dtypes`` its dtypes: a group holds one)."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_none)
    # a wrapper that flattens away (Flax nnx's Variables: init sees them, update gets
    # the bare arrays) changes the treedef, not the leaves
    if treedef != plan.treedef and len(leaves) != len(plan.slots):
        raise ValueError(
            "layout='packed': the tree does not match the tree the optimizer state was "
            f"initialised with.\n  given: {treedef}\n  state: {plan.treedef}"
        )
    parts: list[list[jax.Array]] = [[] for _ in plan.groups]
    large = []
    for i, (x, slot) in enumerate(zip(leaves, plan.slots, strict=True)):
        if (x is None) != (slot is None):
            raise ValueError(
                f"layout='packed': the leaf at {plan.names[i]} is "
                f"{'None' if x is None else 'an array'}, the packed state holds "
                f"{'None' if slot is None else 'an array'} there."
            )
        if slot is None:
            continue
        if slot[0] == "large":
            large.append(x)
            continue
        group = plan.groups[slot[0]]
        _check_leaf(plan, i, x, slot[1], group if dtypes else None)
        parts[slot[0]].append(_to_block(jnp.asarray(x), slot[1], group))
    buffers = tuple(_concatenate(p, g) for p, g in zip(parts, plan.groups, strict=True))
    return Packed(buffers, tuple(large), plan)


def _concatenate(parts: list[jax.Array], group: _Group) -> jax.Array:
    buffer = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
    sharding = group.sharding()
    return buffer if sharding is None else jax.lax.with_sharding_constraint(buffer, sharding)


def pack(tree: Tree, *, max_leaf_size: int = PACK_MAX_SIZE) -> Packed:
    """Packs the small leaves of ``tree`` into flat buffers, per dtype and sharding.

    The "flat parameter" of PyTorch FSDP for JAX: train on the packed
    parameters and let the model read :func:`unpack` of them. The gradient of a
    loss of ``unpack(packed)`` is packed like ``packed`` (the backward pass of
    the slices writes straight into the buffers), so an optimizer, ours or
    optax's, updates a few buffers instead of every leaf.

    Args:
      tree: a pytree of arrays (``None`` leaves are kept).
      max_leaf_size: leaves with this many elements or more are kept as they
        are.

    Returns:
      A :class:`Packed` pytree.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax, optax_signvar as osv
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
      >>> packed = osv.pack(params)
      >>> [x.shape for x in jax.tree.leaves(packed)]  # one buffer
      [(8,)]
      >>> loss = lambda p: jnp.sum(osv.unpack(p)["w"] ** 2)
      >>> opt = optax.sgd(0.1)
      >>> updates, _ = opt.update(jax.grad(loss)(packed), opt.init(packed))
      >>> packed = optax.apply_updates(packed, updates)
      >>> print(osv.unpack(packed)["w"][0])
      [0.8 0.8]
    """
    return pack_with(tree, plan_for(tree, max_leaf_size))


def unpack(packed: Packed) -> Tree:
    """The tree :func:`pack` packed, leaf by leaf (slices and reshapes: differentiable).

    Args:
      packed: a :class:`Packed`.

    Returns:
      A pytree of the structure and shapes of the tree that was packed.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax_signvar as osv
      >>> osv.unpack(osv.pack({"a": jnp.arange(3.0), "b": None}))
      {'a': Array([0., 1., 2.], dtype=float32), 'b': None}
    """
    if not isinstance(packed, Packed):
        raise TypeError(f"unpack takes a Packed (from optax_signvar.pack), got {type(packed)}.")
    return _unpack(packed)


# The derivative of the slices, as JAX forms it, pads each leaf's cotangent to the
# whole buffer and sums the pads: a buffer-sized add per leaf (a train step on 1,000
# packed leaves took a second). The cotangent is the cotangent tree packed: one
# concatenate.
@jax.custom_vjp
def _unpack(packed: Packed) -> Tree:
    return unpack_as(packed, packed.plan.treedef)


def _unpack_fwd(packed: Packed) -> tuple[Tree, Packed]:
    return _unpack(packed), Packed((), (), packed.plan)


def _unpack_bwd(residual: Packed, cotangent: Tree) -> tuple[Packed]:
    return (pack_with(cotangent, residual.plan, dtypes=False),)


_unpack.defvjp(_unpack_fwd, _unpack_bwd)


def unpack_as(packed: Packed, treedef: Any, offsets: tuple[Any, ...] | None = None) -> Tree:
    """:func:`unpack` into ``treedef``, a structure with the packed tree's leaves.

    With ``offsets`` (from :func:`pack_for_update`) each leaf is a dynamic slice at
    an offset XLA cannot fold into the program, so
    same-shaped leaves share one compiled kernel downstream (the parameter
    update): compiling a 1,000-leaf step takes seconds instead of a minute. Not
    for a differentiated unpack: the transpose of a dynamic slice is an update of
    a whole zero buffer, per leaf.
    """
    plan = packed.plan
    leaves = []
    for i, slot in enumerate(plan.slots):
        if slot is None:
            leaves.append(None)
        elif slot[0] == "large":
            leaves.append(packed.large[slot[1]])
        else:
            group, block = plan.groups[slot[0]], slot[1]
            buffer = packed.buffers[slot[0]]
            if offsets is None:
                piece = lax.slice_in_dim(buffer, block.offset, block.offset + block.size, axis=-1)
            else:
                piece = lax.dynamic_slice_in_dim(buffer, offsets[i], block.size, axis=-1)
            leaves.append(_from_block(piece, block, group))
    return jax.tree.unflatten(treedef, leaves)


def plan_of(tree: Tree) -> Plan | None:
    """The plan of the first :class:`Packed` in ``tree`` (None when there is none)."""
    for x in jax.tree.leaves(tree, is_leaf=lambda y: isinstance(y, Packed) or y is None):
        if isinstance(x, Packed):
            return x.plan
    return None


def unpacked(tree: Tree) -> Tree:
    """``tree`` with every :class:`Packed` in it unpacked (the tree layout's view)."""
    return jax.tree.map(
        lambda x: unpack(_bare(x)) if isinstance(x, Packed) else x,
        tree,
        is_leaf=lambda y: isinstance(y, Packed),
    )


def _bare(packed: Packed) -> Packed:
    """``packed`` with plain arrays for children (Flax nnx wraps each in a Variable)."""

    def array(x: Any) -> Any:
        leaves = jax.tree.leaves(x)
        return jnp.asarray(leaves[0]) if len(leaves) == 1 else x

    buffers = tuple(array(b) for b in packed.buffers)
    return Packed(buffers, tuple(array(x) for x in packed.large), packed.plan)


def pack_for_update(tree: Tree, plan: Plan, count: jax.Array, **kwargs: Any) -> tuple[Packed, Any]:
    """``tree`` packed for an optimizer's update, and its leaves' offsets as values.

    Both come out of a conditional on ``count >= 0`` (always true: a step count
    saturates at the int32 maximum), which XLA keeps. So the packed tree is
    written to memory before the update reads it (fused into the update, the
    concatenate's branches change which product LLVM contracts into an FMA, and
    the update would differ from the tree layout's in the last bit; an
    ``optimization_barrier`` is expanded before fusion on CPU), and the offsets
    are runtime values to :func:`unpack_as`: a static slice puts its offset into
    the program, making every leaf's kernel distinct, and XLA:CPU compiles a
    distinct kernel in ~30 ms, an identical one once.
    """
    packed = pack_with(tree, plan, **kwargs)
    wanted = [slot[1].offset for slot in plan.slots if slot is not None and slot[0] != "large"]
    if not wanted:
        return packed, None
    offsets = tuple(jnp.int32(o) for o in wanted)

    # only the buffers go through: a large leaf would be copied for nothing
    def taken() -> tuple[Any, tuple]:
        return packed.buffers, offsets

    def never() -> tuple[Any, tuple]:
        zeros = tuple(jnp.zeros_like(b) for b in packed.buffers)
        return zeros, tuple(jnp.int32(0) for _ in wanted)

    buffers, values = lax.cond(count >= 0, taken, never)
    packed = Packed(buffers, packed.large, plan)
    values = iter(values)
    by_slot = tuple(
        next(values) if slot is not None and slot[0] != "large" else None for slot in plan.slots
    )
    return packed, by_slot
