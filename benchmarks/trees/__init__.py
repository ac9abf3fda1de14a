"""Optimizer cost on real model trees: full train step, optimizer alone, compile time.

Per-leaf overhead (one kernel and one buffer per leaf and per pass) is what a packed layout
saves, and it depends on how many leaves a model has and how big they are; so the trees
here have the leaf shapes of real architectures (``shapes``): ResNet-18 (62 leaves),
ResNet-50 (161), ViT-B/16 (152), GPT-2 small (148), an MLP of 200 leaves (~1M params) and
one of 1,000 leaves (~0.8M params) of residual tanh layers, and 40 large leaves (512 x 256).
The architectures are narrowed (``width``) to a few million parameters so the run fits a
2-core CPU; the leaf count stays the real one, and the report says what was narrowed.

Rows per model (``variants``): the floor, a stateless SGD step ``params - lr * grads``;
``optax.adam``; ``optax.flatten(optax.adam)``; ours (``adam``, ``m_svag``, ``m_vassd``) with
``layout="tree"`` and ``layout="packed"``; and "packed params", where the parameters are
``optax_signvar.pack(params)`` and the loss reads ``optax_signvar.unpack(packed)`` (the SGD
floor, optax.adam and ours, built on the packed tree). Where the installed package has no
packed API yet, those rows are left out and the report says why.

Measurements per row, every one jitted with params and optimizer state donated: the full
train step (``value_and_grad`` of the loss, ``opt.update``, ``optax.apply_updates``), the
optimizer alone on fixed gradients, and the compile time (trace + lower + XLA) of the full
step. The MLPs' loss is their real forward pass; the architecture trees' is synthetic,
``sum over leaves of mean(tanh(p) * c_leaf)`` (``models``). The machine is assumed noisy:
every round times all rows of a model back to back, each on new buffers, and figures are
medians over rounds (ratios: medians of per-round ratios). Optimizer cost is a row's step
time minus the floor's; the report compares ours with optax.adam's cost and checks the
issue's targets (``analysis.TARGETS``).

Usage::

    python -m benchmarks.trees             # full run, ~17 minutes on 2 shared CPU cores
    python -m benchmarks.trees --quick     # smoke run: ~1-2 minutes (tiny widths, 1 round,
                                           # ResNet-18, 200-leaf MLP, 40 large leaves, adam)
    python -m benchmarks.trees --models mlp1000 large40 --optimizers adam \\
        --rounds 5 --steps 10 --compile-repeats 3 --out DIR --no-progress

Writes ``<out>/trees-<machine>.md`` and ``.json`` (``<out>`` defaults to
``benchmarks/results/``, ``<machine>`` as in :mod:`benchmarks.speed`); ``--quick`` writes
``trees-<machine>-quick.*``, which git ignores there. The markdown is printed, then the
paths written.

Modules: ``shapes`` (leaf shapes per architecture), ``models`` (parameters, losses,
batches), ``variants`` (the rows; the packed API goes through it), ``measure`` (compiles and
interleaved timing, on :mod:`benchmarks.speed.harness`'s runners), ``analysis`` (costs,
ratios, targets), ``report`` (markdown and JSON), ``config`` (the command line) and ``run``
(``main``).
"""

from benchmarks.trees.run import main

__all__ = ["main"]
