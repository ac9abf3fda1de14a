"""optax_signvar: Adam taken apart into the sign and the variance adaptation.

The layers, in the order of the papers:

1. :mod:`optax_signvar.blocks`: the building blocks, small pure functions on
   pytrees (moment EMAs, bias correction, sign, variance-adaptation factors,
   max-tracking, dynamic bounds);
2. :class:`Dissection`: a point of the space (sign x variance adaptation x
   normalisation x max-tracking x bounds), and :func:`scale_by_dissection`, its
   one gradient transformation;
3. :func:`dissect`: the factory, any point as an optimizer;
4. the named optimizers (``adam``, ``amsgrad``, ``adabound``, ``amsbound``,
   ``adaboundw``, ``amsboundw``, ``m_sgd``, ``ssd``, ``m_ssd``, ``svag``,
   ``m_svag``, ``m_vassd``) and their unit-rate ``scale_by_*`` transformations;
5. :func:`diagnostics`, :func:`per_example_grad_moments`,
   :func:`gradient_noise_statistics`, :func:`save_state` / :func:`restore_state`.

The research tools (``ablate``, the papers' problems) live in
:mod:`optax_signvar.research`, which this import does not load.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from optax_signvar import blocks, layout
from optax_signvar._checks import set_traced_checks
from optax_signvar.alias import (
    adabound,
    adaboundw,
    adam,
    amsbound,
    amsboundw,
    amsgrad,
    m_sgd,
    m_ssd,
    m_svag,
    m_vassd,
    ssd,
    svag,
)
from optax_signvar.checkpoint import restore_state, save_state
from optax_signvar.dissection import Bounds, Dissection
from optax_signvar.factory import dissect
from optax_signvar.layout import Packed, pack, unpack
from optax_signvar.minibatch import grad_moments_paths, per_example_grad_moments
from optax_signvar.monitoring import diagnostics
from optax_signvar.noise_scale import gradient_noise_statistics
from optax_signvar.scale_by import (
    scale_by_adabound,
    scale_by_adam,
    scale_by_amsgrad,
    scale_by_debiased_momentum,
    scale_by_m_svag,
    scale_by_m_vassd,
    scale_by_sign,
    scale_by_sign_momentum,
    scale_by_svag,
)
from optax_signvar.transform import DissectedState, scale_by_dissection

__version__ = "0.1.0"

__all__ = [
    "Bounds",
    "DissectedState",
    "Packed",
    "Dissection",
    "adabound",
    "adaboundw",
    "adam",
    "amsbound",
    "amsboundw",
    "amsgrad",
    "blocks",
    "diagnostics",
    "dissect",
    "grad_moments_paths",
    "gradient_noise_statistics",
    "layout",
    "m_sgd",
    "m_ssd",
    "m_svag",
    "m_vassd",
    "pack",
    "per_example_grad_moments",
    "restore_state",
    "save_state",
    "scale_by_adabound",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_debiased_momentum",
    "scale_by_dissection",
    "scale_by_m_svag",
    "scale_by_m_vassd",
    "scale_by_sign",
    "scale_by_sign_momentum",
    "scale_by_svag",
    "set_traced_checks",
    "ssd",
    "svag",
    "unpack",
]

# Names that moved to optax_signvar.research in 0.2, still reachable here for one
# release (with a DeprecationWarning), loaded only when asked for.
_MOVED_TO_RESEARCH = {"ablate", "summarize", "problems"}


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_RESEARCH:
        warnings.warn(
            f"optax_signvar.{name} moved to optax_signvar.research.{name}; the old name will be "
            "removed in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("optax_signvar.research"), name)
    raise AttributeError(f"module 'optax_signvar' has no attribute {name!r}")
