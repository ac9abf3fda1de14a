"""The examples: the package's optimizers training a small MLP on sklearn's digits.

Each example is a module run with ``python -m`` (they need the ``examples``
extras, ``pip install -e ".[examples]"``: scikit-learn, tqdm, matplotlib)::

    # compare M-SGD, M-SSD, M-SVAG, Adam and AdaBound: a table, optionally curves
    python -m optax_signvar.demo
    python -m optax_signvar.demo --epochs 50 --optimizers m_sgd,adam --plot curves.png
    # M-SVAG and M-VASSD with the moving-average vs the mini-batch gradient variance
    python -m optax_signvar.demo --optimizers m_svag --minibatch-variance

    # log optax_signvar.diagnostics every step while training with M-SVAG
    python -m optax_signvar.demo.diagnostics --steps 2000 --no-progress

    # data-parallel M-SVAG fed the global mini-batch variance, on 8 simulated CPU devices
    python -m optax_signvar.demo.data_parallel --devices 8 --steps 200
    # ... or on 2 processes joined by jax.distributed (one per host of a cluster)
    python -m optax_signvar.demo.data_parallel --devices 2 --coordinator 127.0.0.1:12345 \\
        --num-processes 2 --process-id 0  # and --process-id 1

The modules:

* :mod:`optax_signvar.demo.digits`: the shared data (the digits, split 75/25 and
  standardised) and model (a 64-64-10 tanh MLP, its loss and accuracy);
* :mod:`optax_signvar.demo.compare`: the optimizer comparison that
  ``python -m optax_signvar.demo`` runs;
* :mod:`optax_signvar.demo.diagnostics`: logging the diagnostics of M-SVAG's state;
* :mod:`optax_signvar.demo.data_parallel`: data-parallel training over a device mesh.

The data and model, and the comparison's settings and entry point, are
importable from here (``from optax_signvar import demo; demo.load_data()``).
Importing this package loads neither scikit-learn, tqdm nor matplotlib: each is
imported when first needed.
"""

from __future__ import annotations

from optax_signvar.demo.compare import (
    LEARNING_RATES,
    OPTIMIZERS,
    main,
    make_epoch,
    parse_args,
    plot,
    train,
)
from optax_signvar.demo.digits import _require as _require  # the tests' and older code's
from optax_signvar.demo.digits import accuracy, init_mlp, load_data, loss_fn, mlp

__all__ = [
    "LEARNING_RATES",
    "OPTIMIZERS",
    "accuracy",
    "init_mlp",
    "load_data",
    "loss_fn",
    "main",
    "make_epoch",
    "mlp",
    "parse_args",
    "plot",
    "train",
]
