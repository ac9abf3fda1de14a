"""The hyperparameters each of the package's transformations was built with.

An optax transformation is a pair of functions; it keeps no record of the
decays it closes over. :func:`optax_signvar.diagnostics` needs them (the
debiasing of :math:`m_t` and :math:`v_t` depends on :math:`\\beta_1`,
:math:`\\beta_2`, AdaBound's bounds also on the rate and :math:`\\epsilon`),
and restating them by hand is how the wrong numbers came in: Adam's
:math:`\\beta_2` is 0.999, Dissecting Adam's methods have one decay. So
:func:`~optax_signvar.scale_by_dissection` (hence every ``scale_by_*``) and
:func:`~optax_signvar.dissect` (hence every named optimizer) record a
:class:`Hyperparameters` for the transformation they return, and
``diagnostics(state, optimizer)`` reads it with :func:`lookup`.

Where the record lives: a module-level :class:`weakref.WeakKeyDictionary` keyed
by the transformation's ``update`` function.

* Not on the transformation: ``optax.GradientTransformationExtraArgs`` is a
  ``NamedTuple``, which takes neither attributes nor weak references.
* Keyed by ``update`` rather than ``init``: ``update`` is what defines the
  step, and a re-wrap that keeps it (``optax.GradientTransformation(tx.init,
  tx.update)``, ``optax.with_extra_args_support``) keeps the record too.
* A dictionary rather than an attribute on the function: ``functools.wraps``
  copies a function's ``__dict__`` onto its wrapper, so an attribute would
  follow any wrapper, including one that changes what the update does; the
  dictionary matches the very function only. It also keeps the record off the
  public objects (nothing to pickle, copy or read by accident).
* Weak keys: an entry goes with its transformation, e.g. the one
  ``optax.inject_hyperparams`` rebuilds at every step.

``optax.chain`` makes a new ``update`` function, so ``dissect`` records on the
chain it returns as well as :func:`~optax_signvar.scale_by_dissection` on the
inner transformation. A wrapper built around either (``optax.chain(clip,
osv.adam(...))``, ``optax.MultiSteps``) has no record: pass the package's
transformation itself.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import optax

from optax_signvar.dissection import Bounds, Dissection

__all__ = ["Hyperparameters", "lookup", "record"]

T = TypeVar("T", bound=optax.GradientTransformation)

_RECORDS: weakref.WeakKeyDictionary[Callable[..., Any], Hyperparameters] = (
    weakref.WeakKeyDictionary()
)


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    """What a transformation of the package was built with, as its update uses it.

    Attributes:
      dissection: the point of the space (its ``bounds`` are AdaBound's).
      b1: decay of the first moment.
      b2: decay of the second moment, resolved as the update uses it: ``b2``
        (default 0.999) with ``normalization="rms"``, otherwise ``b1``
        (Dissecting Adam's one decay for both moments).
      eps: added to :math:`\\sqrt{v}` with ``normalization="rms"``.
      learning_rate: the rate (float or schedule); ``None`` for a unit-rate
        transformation built without one (only AdaBound's bounds need it).
    """

    dissection: Dissection
    b1: Any
    b2: Any
    eps: Any
    learning_rate: Any = None

    @property
    def bounds(self) -> Bounds | None:
        """AdaBound's :class:`~optax_signvar.Bounds` (``final_lr``, ``gamma``), or ``None``."""
        return self.dissection.bounds

    @property
    def one_decay(self) -> bool:
        """Whether ``b2`` is ``b1`` by construction (no RMS normalisation)."""
        return self.dissection.normalization != "rms"


def record(transformation: T, hyperparameters: Hyperparameters) -> T:
    """Records ``hyperparameters`` for ``transformation`` (keyed by its ``update``); returns it."""
    _RECORDS[transformation.update] = hyperparameters
    return transformation


def lookup(transformation: Any) -> Hyperparameters | None:
    """The record of ``transformation``, or ``None`` if it is not one of the package's."""
    update = getattr(transformation, "update", None)
    if update is None:
        return None
    try:
        return _RECORDS.get(update)
    except TypeError:  # not weak-referenceable, so never recorded
        return None
