"""Adam §6.2 (Kingma & Ba, 2015): a network of two hidden layers of 1,000 ReLU units with
dropout on MNIST, batch 128; Adam vs AdaGrad, RMSProp, SGD with Nesterov momentum and
AdaDelta, each rate found by the protocol's search (final training cost), one seed as the
paper. Claim (Fig. 2b): Adam converges faster than the others.

The paper trains 200 epochs; a run-step of this network costs ~10 ms on the project's 2-core
CPU, and the search trains 15-30 runs, so the default is
:data:`benchmarks.paper.mnist.ADAM_MLP_EPOCHS` epochs (about 20 minutes; what fitted beside the
other experiments in the session that made the committed results), reported as ``"budget":
"reduced"``. ``--epochs N`` runs the protocol at ``N`` epochs (stored apart from the default's
stages; an hour buys about 15). Setup and choices: :mod:`benchmarks.paper.mnist`.
"""

from __future__ import annotations

from benchmarks.paper import mnist
from benchmarks.reproduce import budgets


def add_arguments(parser) -> None:
    parser.add_argument(
        "--epochs",
        type=int,
        default=mnist.ADAM_MLP_EPOCHS,
        help=f"epochs of every run (paper: 200; default {mnist.ADAM_MLP_EPOCHS})",
    )


def claims(part: str) -> list[budgets.Claim]:
    others = ("AdaGrad", "RMSProp", "SGD-Nesterov", "AdaDelta")
    return [("Adam converges fastest", [("Adam", m) for m in others], "mean_train_loss", "better")]


def run(ctx):
    return budgets.run(ctx, [mnist.adam_mlp(ctx.args.epochs, smoke=ctx.smoke)], claims)
