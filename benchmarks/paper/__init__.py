"""The papers' experiments at the papers' budgets, as sweeps a GPU queue can run in chunks.

* :mod:`benchmarks.paper.experiments`: P1-P4 of Dissecting Adam and AdaBound's comparison as
  the papers (and DeepOBS) configure them: data, network, batch size, epochs, rate schedule,
  the methods and the first rates their search tries.
* :mod:`benchmarks.paper.protocol`: Dissecting Adam §6.1's tuning, one sweep after another:
  find the largest stable rate, search downwards, select by final test accuracy, then ten
  seeds at the selected rate.
* :mod:`benchmarks.paper.report`: ``benchmarks/results/reproduce/<name>-paper.{json,png}``.
* ``python -m benchmarks.gpu_queue``: runs the next chunks of all of it within a time limit.
"""
