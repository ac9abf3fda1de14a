"""Mini-batch gradient moments (issue 17): time and memory of ``per_example_grad_moments``.

Per model (``models``: the issue's MLP 784-512-512-10 and CNN, a ResNet with GroupNorm, an
LSTM as an unrolled loop, with ``lax.scan`` and as Flax ``nn.RNN``, a transformer block; all
at batch 128, float32, the loss of one example): ``jax.jit`` of
``per_example_grad_moments(..., method=m)`` for ``m`` in ``"auto"`` and ``"vmap"`` (and the
vmap path with the old reductions, for the record) against ``jax.jit(jax.grad(mean loss))``:
interleaved median times and their per-round ratios, and the compiled executables' memory
(argument + output + temp bytes, ``memory_analysis()``). Per layer kind (dense, conv, norm,
embedding, recurrent, attention): the share of parameters on each path of
``grad_moments_paths`` and the time ratio of ``method="auto"`` with only that kind's leaves
as parameters. ``profile`` answers part 1, "why 200x": where the vmap path's time goes on
the MLP (components, a thunk-level trace, and the same without YNNPACK's reductions).

Usage::

    python -m benchmarks.moments                 # full run (~10-15 min on 2 shared cores)
    python -m benchmarks.moments --quick         # smoke run: tiny sizes, 1 round
    python -m benchmarks.moments --models mlp cnn --methods auto vmap --repeats 7 --out DIR
    python -m benchmarks.moments.profile         # the profile alone, as JSON

Writes ``<out>/moments-<machine>.md`` and ``.json`` (``<out>`` defaults to
``benchmarks/results/``; ``--quick`` writes ``moments-<machine>-quick.*``, which git
ignores there), with :func:`benchmarks.speed.machine.environment`'s head and the load
average. Timings are ratios in one process and never asserted in tests.
"""

from benchmarks.moments.run import main

__all__ = ["main"]
