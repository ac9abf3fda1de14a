"""Dissecting Adam, problem P1 (Fig. 5): Fashion-MNIST with DeepOBS' 2c2d network.

Reproduced: M-SGD, M-SSD, M-SVAG and Adam (``osv.m_sgd``, ``osv.m_ssd``, ``osv.m_svag``,
``osv.adam``; beta = 0.9 for all, Adam's b2 = 0.999, its defaults), each with a constant
rate tuned on a log grid (one seed, picked by final test accuracy), then rerun on 3 seeds at
the picked rate; curves of train loss and test accuracy (mean +- 1 sd). The paper's reading
of P1: the sign-based methods (M-SSD, Adam) make faster progress on the training loss than
the raw-gradient ones (M-SGD, M-SVAG), and variance adaptation never hurts. Both are checked
on our numbers and printed (speed = the average mini-batch loss over the run).

Also M-VASSD (``osv.m_vassd``, the sign method with the explicit variance adaptation) and
sec. 4.1 / supplement D's alternative: M-SVAG and M-VASSD fed the variance of the mini-batch
gradient, computed within each mini-batch from per-example gradients
(``optax_signvar.minibatch.per_example_grad_moments``, passed as ``update(...,
grad_variance=...)`` to ``osv.dissect(..., variance="minibatch")``), in place of the moving
averages ("M-SVAG (minibatch var)", "M-VASSD (minibatch var)"), tuned and seeded the same
way, on the same mini-batches. The paper: both estimators give "similar performance"; checked
as a claim (no gap beyond the seeds' sd), and the wall time of one step of every method is
measured and printed. ``--methods`` runs a subset (quote the names with spaces).

Substituted: nothing in the problem (the data, from the Debian package
``dataset-fashion-mnist``, and the network are the paper's); only the budget.

Budget. The paper trains for many epochs on all 60,000 images with a rate grid spanning
several decades. The default here: 20,000 training images, 500 steps of batch 32 (0.8 epochs
of that subset), a 3-point half-decade grid around each method's usual rate, 3 seeds, 6
evaluations of 2,000 test images per run: 25 minutes for the seven methods on 2 (loaded)
CPU cores, the first four alone ~10; a mini-batch-variance step costs ~1.5x a moving-average
one with ``per_example_grad_moments``' per-operation rules, which factor 2c2d's dense layers
(``benchmarks/results/reproduce/minibatch-variance.md``). That
is the early phase of training only: orderings may change later. Paper-like scale is one
command away (hours on a CPU; DeepOBS' budget for this problem is 100 epochs of batch 128)::

    python -m benchmarks.reproduce p1 --steps 46900 --batch-size 128 --train-size 0 \\
        --test-size 0 --grid 0.01,0.03,0.1,0.3,1,3,10 --records 50 --seeds 10
"""

from __future__ import annotations

import dataclasses

from benchmarks.reproduce import images, nets

# where each method's grid is centred, as in the committed results; some tuned rates sit on
# the grid's edge (the run prints which, and the JSON's best_rate_on_grid_edge lists them)
CENTERS = {"M-SGD": 0.1, "M-SSD": 1e-3, "M-SVAG": 0.1, "Adam": 1e-3}
# M-VASSD is a sign method (M-SSD's center); each mini-batch variant has its method's center
CENTERS |= {"M-VASSD": 1e-3}
CENTERS |= {m + images.MINIBATCH_SUFFIX: CENTERS[m] for m in ("M-SVAG", "M-VASSD")}
DEFAULT = dataclasses.replace(images.CPU_DEFAULT, steps=500)
SMOKE = images.SMOKE
CLAIMS = [
    images.Claim(
        "sign-based methods are faster in train loss",
        tuple(images.SIGN_PAIRS),
        ("mean_loss",),
        "helps",
    ),
    images.Claim(
        "variance adaptation never hurts",
        tuple(images.VARIANCE_PAIRS),
        ("mean_loss", "train_loss", "test_acc"),
        "never hurts",
    ),
    images.Claim(
        "mini-batch and moving-average variance estimates perform alike",
        tuple(images.ESTIMATE_PAIRS),
        ("mean_loss", "train_loss", "test_acc"),
        "alike",
    ),
]


def add_arguments(parser) -> None:
    images.add_arguments(parser, DEFAULT)
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated subset of " + ", ".join(CENTERS) + " (default: all; --smoke: "
        "M-SGD, M-SSD)",
    )


def methods_of(ctx) -> dict[str, float]:
    """The methods of the run (``--methods`` or all) with their centers."""
    given = getattr(ctx.args, "methods", None)
    if given is None:
        return dict(CENTERS)
    names = [m.strip() for m in given.split(",") if m.strip()]
    unknown = [m for m in names if m not in CENTERS]
    if unknown or not names:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(CENTERS)}")
    return {m: CENTERS[m] for m in names}


def run(ctx) -> dict:
    return images.run_dissecting(
        ctx,
        dataset="fashion_mnist",
        net=nets.net_2c2d(),
        title="Dissecting Adam P1: Fashion-MNIST, 2c2d",
        default=DEFAULT,
        smoke=SMOKE,
        centers=methods_of(ctx),
        claims=CLAIMS,
        # CI time: the smoke run keeps one sign pair (p2 and p3 run the other methods)
        smoke_methods=None if getattr(ctx.args, "methods", None) else ["M-SGD", "M-SSD"],
        time_steps=True,
    )
