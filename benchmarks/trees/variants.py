"""The rows of every model's table: the floor, optax's Adam, ours per layout, packed params.

Everything that needs the packed API (``layout="packed"``, ``optax_signvar.pack`` /
``unpack``) goes through :func:`packed_api_missing` and :func:`ours`, so the benchmark runs
without those rows where the installed ``optax_signvar`` does not have them yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optax

import optax_signvar as osv

LR = 1e-3
OURS = ("adam", "m_svag", "m_vassd")

Factory = Callable[[], optax.GradientTransformation]


@dataclass(frozen=True)
class Variant:
    """One row: an optimizer (``None``: the stateless SGD floor) on a parameter layout.

    ``packed_params``: the parameters live in ``osv.pack``'s flat buffers and the model sees
    ``osv.unpack``'s views; the optimizer is built on the packed tree.
    """

    name: str
    family: str  # "sgd", "optax.adam", "optax.flatten(optax.adam)" or one of OURS
    layout: str  # "tree", "packed" (our layout= keyword) or "-" (not ours)
    make: Factory | None
    packed_params: bool = False

    @property
    def ours(self) -> bool:
        return self.family in OURS


def packed_api_missing() -> str | None:
    """Why the packed rows cannot run (``None`` where they can)."""
    try:
        osv.pack, osv.unpack  # noqa: B018 (existence check)
        osv.adam(LR, layout="packed")
    except (AttributeError, TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def ours(name: str, layout: str | None) -> Factory:
    """Our optimizer ``name`` with ``layout=`` (``None``: the package's default)."""
    kwargs: dict[str, Any] = {} if layout is None else {"layout": layout}
    return lambda: getattr(osv, name)(LR, **kwargs)


def packed_leaf_count(shapes: dict[str, tuple[int, ...]]) -> int | None:
    """How many leaves ``pack`` puts in flat buffers (fewer elements than its threshold)."""
    limit = getattr(getattr(osv, "layout", None), "PACK_MAX_SIZE", None)
    if limit is None:
        return None
    return sum(math.prod(shape) < limit for shape in shapes.values())


def pack(tree: Any) -> Any:
    return osv.pack(tree)


def unpack(packed: Any) -> Any:
    return osv.unpack(packed)


def variants(with_packed: bool, names: Sequence[str] = OURS) -> list[Variant]:
    """Every row for our optimizers ``names``, the floor first; the packed ones only
    ``with_packed`` (the packed API is there; without it, the "tree" rows are our
    optimizers as they are, without ``layout=``)."""
    tree = "tree" if with_packed else None
    rows = [
        Variant("sgd (floor)", "sgd", "-", None),
        Variant("optax.adam", "optax.adam", "-", lambda: optax.adam(LR)),
        Variant(
            "optax.flatten(optax.adam)",
            "optax.flatten(optax.adam)",
            "-",
            lambda: optax.flatten(optax.adam(LR)),
        ),
    ]
    for name in names:
        rows.append(Variant(f"{name} [tree]", name, "tree", ours(name, tree)))
        if with_packed:
            rows.append(Variant(f"{name} [packed]", name, "packed", ours(name, "packed")))
    if not with_packed:
        return rows
    rows += [
        Variant("sgd [packed params]", "sgd", "-", None, packed_params=True),
        Variant("optax.adam [packed params]", "optax.adam", "-", rows[1].make, packed_params=True),
    ]
    for name in names:
        make = ours(name, tree)
        rows.append(Variant(f"{name} [packed params]", name, "tree", make, packed_params=True))
    return rows
