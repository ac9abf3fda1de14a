"""Reproductions of the papers' experiments: ``python -m benchmarks.reproduce <name>``.

One subcommand per experiment (see :data:`benchmarks.reproduce.cli.EXPERIMENTS`). Each
prints its numbers, writes ``<name>.json`` and ``<name>.png`` under
``benchmarks/results/reproduce/`` (``<name>-smoke.*`` with ``--smoke``) and shows progress.
"""
