"""AdaBound §5 (Luo et al., 2019): a one-hidden-layer network on MNIST at the paper's budget,
100 epochs of batch 128 without rate decay; SGDM, AdaGrad, Adam, AMSGrad, AdaBound and
AMSBound, each rate found by the protocol's search starting from the paper's grids (final test
accuracy), 3 seeds. Claims (Fig. 2): AdaBound/AMSBound make fast progress early, like the
adaptive methods, and end with a test accuracy at least as high as SGDM's (and above
Adam's/AMSGrad's). Setup and choices: :mod:`benchmarks.paper.mnist`. Cost: about 20 minutes
on the project's 2-core CPU.
"""

from __future__ import annotations

from benchmarks.paper import mnist
from benchmarks.reproduce import budgets


def claims(part: str) -> list[budgets.Claim]:
    vs_sgdm = [("AdaBound", "SGDM"), ("AMSBound", "SGDM")]
    vs_adam = [("AdaBound", "Adam"), ("AMSBound", "AMSGrad")]
    return [
        ("AdaBound/AMSBound end at least as high as SGDM", vs_sgdm, "test_accuracy", "not worse"),
        ("AdaBound/AMSBound end above Adam/AMSGrad", vs_adam, "test_accuracy", "better"),
        ("AdaBound/AMSBound progress faster than SGDM", vs_sgdm, "mean_train_loss", "better"),
    ]


def run(ctx):
    return budgets.run(ctx, [mnist.adabound_mnist(smoke=ctx.smoke)], claims)
