"""optax_signvar: Adam taken apart into the sign and the variance adaptation.

Named optimizers (``adam``, ``amsgrad``, ``adabound``, ``amsbound``,
``adaboundw``, ``amsboundw``, ``m_sgd``, ``ssd``, ``m_ssd``, ``svag``,
``m_svag``, ``m_vassd``), each one point of the space that :func:`dissect`
spans; the ``scale_by_*`` gradient transformations they are chained from; the
building blocks in :mod:`optax_signvar.blocks`; :func:`ablate` to compare
points of the space on one problem; and the papers' test problems in
:mod:`optax_signvar.problems`.
"""

from optax_signvar import blocks, problems
from optax_signvar.ablation import ablate, summarize
from optax_signvar.adaptive import (
    scale_by_adabound,
    scale_by_adam,
    scale_by_amsgrad,
)
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
from optax_signvar.core import Bounds, DissectedState, Dissection, scale_by_dissection
from optax_signvar.dissecting import (
    scale_by_debiased_momentum,
    scale_by_m_svag,
    scale_by_m_vassd,
    scale_by_sign,
    scale_by_sign_momentum,
    scale_by_svag,
)
from optax_signvar.factory import dissect
from optax_signvar.minibatch import per_example_grad_moments
from optax_signvar.monitoring import diagnostics

__version__ = "0.1.0"

__all__ = [
    "Bounds",
    "DissectedState",
    "Dissection",
    "ablate",
    "dissect",
    "scale_by_dissection",
    "summarize",
    "adabound",
    "adaboundw",
    "adam",
    "amsbound",
    "amsboundw",
    "amsgrad",
    "blocks",
    "diagnostics",
    "m_sgd",
    "m_ssd",
    "m_svag",
    "m_vassd",
    "per_example_grad_moments",
    "problems",
    "restore_state",
    "save_state",
    "scale_by_adabound",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_debiased_momentum",
    "scale_by_m_svag",
    "scale_by_m_vassd",
    "scale_by_sign",
    "scale_by_sign_momentum",
    "scale_by_svag",
    "ssd",
    "svag",
]
