"""Research tools: compare points of the optimizer space on the papers' problems.

Not imported by ``import optax_signvar`` (the optimizers need none of it):
``from optax_signvar import research`` or ``from optax_signvar.research import
ablate, problems``.

* :func:`ablate` and :func:`summarize`: train several points of
  :func:`optax_signvar.dissect` (or any optax transformation) on one problem
  with shared seeds, as one jitted program per point, and tabulate the curves.
* :func:`sweep`: a grid of numeric hyperparameters times seeds of one
  optimizer as one jitted, vmapped program, resumable from checkpoints.
* :mod:`optax_signvar.research.problems`: the papers' test problems (stochastic
  quadratics, AMSGrad's online counterexample, Wilson et al.'s construction).
"""

from optax_signvar.research import problems
from optax_signvar.research.ablation import ablate, summarize
from optax_signvar.research.sweeps import SweepResult, sweep

__all__ = ["SweepResult", "ablate", "problems", "summarize", "sweep"]
