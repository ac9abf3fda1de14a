"""AMSGrad §5 (Reddi et al., 2018): Adam vs AMSGrad on MNIST, logistic regression with the
rate α/√t and a network of one hidden layer of 100 ReLU units with a constant rate, β1 = 0.9,
β2 ∈ {0.99, 0.999}, batch 128, 11 epochs (5,148 steps: Fig. 2's 5,000 iterations as we read
it). AMSGrad in both forms: the package's (``osv.amsgrad``: the max of v_t, Algorithm 2 plus
Adam's bias corrections) and optax's (``optax.amsgrad``: the max of the debiased v̂_t; early
on, while 1 - β2^t is small, its max holds the large debiased values, its steps are smaller).
Each rate found by the protocol's search (final training loss), 3 seeds.

Claim: AMSGrad does at least as well as Adam. The project's summary of the paper notes that
an independent rerun disagreed with its plots: we report what we see. Setup:
:mod:`benchmarks.paper.mnist`.
Cost: about 10 minutes on the project's 2-core CPU.
"""

from __future__ import annotations

from benchmarks.paper import mnist
from benchmarks.reproduce import budgets


def claims(part: str) -> list[budgets.Claim]:
    found = []
    for b2 in mnist.AMSGRAD_B2:
        for form in ("AMSGrad", "AMSGrad, optax"):
            pair = [(f"{form} (b2={b2})", f"Adam (b2={b2})")]
            found.append(
                (f"{form} at least as good as Adam, b2={b2}", pair, "train_loss", "not worse")
            )
    return found


def run(ctx):
    exps = [mnist.amsgrad_logreg(smoke=ctx.smoke), mnist.amsgrad_mlp(smoke=ctx.smoke)]
    return budgets.run(ctx, exps, claims)
