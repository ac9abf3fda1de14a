"""Strict configuration for every test, as optimistix runs its suite.

* ``jax_numpy_dtype_promotion="strict"``: no implicit promotion between
  dtypes (a float32 scalar times a bfloat16 leaf is an error, not a silent
  widening). The package must run under it; tests that exercise code outside
  the package which relies on standard promotion say so with
  ``@pytest.mark.standard_promotion``.
* Warnings are errors (``filterwarnings = ["error", ...]`` in pyproject.toml),
  with the few third-party warnings we cannot fix listed there by message; a
  test that expects a warning asserts it with ``pytest.warns``.
"""

from __future__ import annotations

import jax
import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "standard_promotion: run under jax's standard dtype promotion instead of strict "
        "(code outside the package that mixes dtypes implicitly)",
    )
    jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(autouse=True)
def _dtype_promotion(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("standard_promotion") is None:
        yield
        return
    with jax.numpy_dtype_promotion("standard"):
        yield
