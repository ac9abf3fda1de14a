"""Measured deviation of every optimizer from the float64 numpy oracle.

Runs the stream of ``tests/test_oracle.py`` (300 steps, several leaves, a
never-updated and a zero-variance coordinate) through each optimizer in float64
and in float32 and prints the largest relative deviation of the updates from
the oracle's:

* float64: ``max |u - ref| / |ref|`` over all elements with ``ref != 0``;
* float32: the same, with ``|ref|`` floored at 1e-3 of the step's largest
  update (a float32 EMA that has nearly cancelled has no relative precision
  left, whatever the implementation), and, in brackets, without the floor.

Usage::

    python -m tests.oracle_errors
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tests.test_oracle import CASES, F32_FLOOR, max_relative_deviation, run_pair


def main() -> None:
    print(f"{'optimizer':<16} {'float64':>9} {'float32':>9} {'(no floor)':>11}")
    for name in sorted(CASES):
        with jax.enable_x64(True):
            d64 = max_relative_deviation(*run_pair(name, jnp.float64))
        pair32 = run_pair(name, jnp.float32)
        d32 = max_relative_deviation(*pair32, F32_FLOOR)
        raw32 = max_relative_deviation(*pair32)
        print(f"{name:<16} {d64:>9.1e} {d32:>9.1e} {f'({raw32:.1e})':>11}")


if __name__ == "__main__":
    main()
