"""optax_signvar: Adam taken apart into the sign and the variance adaptation.

Named optimizers (``adam``, ``amsgrad``, ``adabound``, ``amsbound``,
``adaboundw``, ``amsboundw``, ``m_sgd``, ``ssd``, ``m_ssd``, ``svag``,
``m_svag``, ``m_vassd``), the ``scale_by_*`` gradient transformations they are
chained from, and the building blocks in :mod:`optax_signvar.blocks`.
"""

from optax_signvar import blocks
from optax_signvar.adaptive import (
    AdamState,
    MaxTrackingState,
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
from optax_signvar.dissecting import (
    MomentumState,
    VarianceAdaptationState,
    scale_by_debiased_momentum,
    scale_by_m_svag,
    scale_by_m_vassd,
    scale_by_sign,
    scale_by_sign_momentum,
    scale_by_svag,
)

__version__ = "0.1.0"

__all__ = [
    "AdamState",
    "MaxTrackingState",
    "MomentumState",
    "VarianceAdaptationState",
    "adabound",
    "adaboundw",
    "adam",
    "amsbound",
    "amsboundw",
    "amsgrad",
    "blocks",
    "m_sgd",
    "m_ssd",
    "m_svag",
    "m_vassd",
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
