"""Step time, bandwidth, memory and compile time of every named optimizer against optax.

Every named optimizer and its nearest optax counterpart are timed in the same process, each
as one jitted step ``update + optax.apply_updates`` compiled with
``donate_argnums=(0, 1)`` (params and state donated, as a training loop would), on float32
parameters laid out as one flat array and as a realistic tree (a few large leaves holding
most parameters plus ~46 small ones). The machine is assumed noisy: in each of R rounds the
floor kernel, ours and optax's are timed back to back (median of S steps each), and every
figure below is the median over the rounds of these per-round medians (ratios are the
median of the per-round ratios, not a ratio of medians). Every round starts each runner on
newly allocated buffers, so a slow allocation (no huge pages, say) spoils one round, not all.
Default sizes: 1M and 10M parameters, plus 100M when ``jax.default_backend() == "gpu"``; 20
steps, 9 rounds.

Usage::

    python -m benchmarks.speed                        # full run, ~7 minutes on 2 CPU cores
    python -m benchmarks.speed --quick                # smoke run, < ~40 s on 2 CPU cores
    python -m benchmarks.speed --sizes 1e6,1e7 --repeats 5 --steps 20 \\
        --optimizers adam,m_svag --out DIR --no-torch --no-progress

Writes ``<out>/<machine>.md`` and ``<out>/<machine>.json``, where ``<out>`` is ``--out``
(default ``benchmarks/results/``, where full runs' results are committed) and ``<machine>``
is ``<cpu model>_<cores>cpu_<device kind>``. ``--quick`` names them ``<machine>-quick.*``
instead, in the same ``<out>``; git ignores these names under ``benchmarks/results/``, so a
smoke run leaves the checkout clean. The markdown is printed, then the paths of the two files
written (``wrote <path>``).

Columns of the step-time tables:

* ``ours ms`` / ``optax ms``: median step time of ours / of the optax counterpart.
* ``ours/optax``: median over rounds of the per-round ratio; < 1 means ours is faster.
* ``GB/s``: bytes a step must move at least (params read and written, grads read, each
  state buffer read and written: ``2 P + G + 2 S``) over our median step time.
* ``/floor``: our step time over that of the floor kernel, a trivial donated step that
  moves exactly the same bytes (``p + c g`` and ``s c1 + c2 g`` on the same number of state
  buffers); 1.0 is as fast as memory traffic allows, the excess is arithmetic and extra
  passes. ``optax /floor`` is the same for the counterpart (same buffer count).

Floor table: the floor kernel per state-buffer count (``bufs``), its step time and GB/s.
``copy GB/s`` is a donated ``x + c`` on one array of the largest size (read + write).

Memory table: ``state/param`` is the optimizer state's bytes (leaves with ``ndim > 0``,
i.e. not the step count) over the parameters' bytes, ours and optax's. ``arg``, ``out``,
``alias``, ``temp`` and ``peak`` MiB come from XLA's ``memory_analysis()`` of the compiled
donated step at the largest size (tree layout): ``alias`` is the output memory that reuses
donated inputs, ``temp`` the scratch XLA needs on top (0 means the step ran in place), and
``peak`` XLA's peak (or ``arg + out - alias + temp`` where XLA reports none).

Compile tables: wall time of ``jax.jit(step).lower(...).compile()`` on a tree of many small
mixed-shape leaves (200; 20 with ``--quick``) and on one of a few large leaves (20 of 2^18
elements; 2 with ``--quick``), median of fresh compiles with
``jax.clear_caches()`` before each (9; 1 with ``--quick``), split into trace + lower and
XLA's compile, against ``optax.adam`` and against the optimizer's own counterpart compiled
the same way (ratios: median over the repeats of the per-repeat ratio). ``ops/leaf``
is the number of StableHLO ops of the lowered step over the number of leaves: both parts of
the compile time grow with it.

Torch table ("what a user would pick instead"): ``torch.optim.Adam`` (fused, or foreach
where fused is unsupported, as named in the row), with ``amsgrad=True``, and the AdaBound
authors' ``adabound`` package (``amsbound=True`` too), timing ``opt.step()`` with ``p.grad``
set on one flat parameter, torch threads at their default, interleaved per round with our
flat donated step of the same size; ``ours/torch`` < 1 means ours is faster.

Modules: ``config`` (the optimizer pairs, the run's settings, the command line),
``machine`` (CPU and device names), ``harness`` (parameter trees, the donated-step runners,
interleaved timing rounds, medians, the progress bar), the measurements ``step`` (copy
bandwidth, step time against optax and the floor kernel), ``memory``, ``compile_time`` and
``torch_ref``, ``report`` (markdown and JSON) and ``run`` (``main``, which runs them in order).
"""

from benchmarks.speed.machine import cpu_cores, cpu_model, machine_slug
from benchmarks.speed.run import main

__all__ = ["cpu_cores", "cpu_model", "machine_slug", "main"]
