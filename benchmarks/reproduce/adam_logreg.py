"""Adam §6.1 (Kingma & Ba, 2015): L2-regularised logistic regression on MNIST at the paper's
budget, 45 epochs of batch 128 with the rate α/√t; Adam vs SGD with Nesterov momentum vs
AdaGrad, each rate found by the protocol's search (final training cost), 3 seeds. Claim:
Adam converges as fast as SGD-Nesterov, and both faster than AdaGrad (training cost).

Setup and choices: :mod:`benchmarks.paper.mnist`; how it runs and what the JSON holds:
:mod:`benchmarks.reproduce.budgets`. The paper's IMDB bag-of-words part needs data this
project cannot obtain (no network access beyond the package indexes): not reproduced.
Cost: about 5 minutes on the project's 2-core CPU.
"""

from __future__ import annotations

from benchmarks.paper import mnist
from benchmarks.reproduce import budgets


def claims(part: str) -> list[budgets.Claim]:
    return [
        ("Adam faster than AdaGrad", [("Adam", "AdaGrad")], "mean_train_loss", "better"),
        (
            "Adam as fast as SGD-Nesterov",
            [("Adam", "SGD-Nesterov")],
            "mean_train_loss",
            "not worse",
        ),
        (
            "SGD-Nesterov faster than AdaGrad",
            [("SGD-Nesterov", "AdaGrad")],
            "mean_train_loss",
            "better",
        ),
    ]


def run(ctx):
    return budgets.run(ctx, [mnist.adam_logreg(smoke=ctx.smoke)], claims)
