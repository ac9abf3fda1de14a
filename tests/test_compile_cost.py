"""Many-leaf models: the compiled step has no more kernels per leaf than optax's.

XLA:CPU's compile time grows about with the square of the number of kernels
(buffer assignment compares them pairwise): 5,000 leaves of 16 floats take
1-3.5 minutes to compile for ``optax.adam`` and this package's optimizers
alike on a 2-core CPU. Wall-clock is too noisy to assert here; the kernel count
of the optimized program is deterministic and is what the compile time follows,
so a regression (a per-step scalar recomputed in every leaf's kernel, a second
kernel per leaf) fails this test.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax
import pytest

import optax_signvar as osv

LEAVES = 40
TWINS = {
    "adam": (osv.adam, optax.adam),
    "m_svag": (osv.m_svag, optax.adam),
    "m_vassd": (osv.m_vassd, optax.adam),
    "adabound": (osv.adabound, optax.adam),
    "amsgrad": (osv.amsgrad, optax.amsgrad),
    "m_ssd": (osv.m_ssd, optax.signum),
}


def kernels(opt) -> int:
    """Fusions in the entry computation of the compiled ``update(g, s, p)``."""
    params = {f"w{i}": jnp.full((16,), 0.5 + i) for i in range(LEAVES)}
    state = opt.init(params)
    with jax.numpy_dtype_promotion("standard"):  # optax's own transformations
        compiled = jax.jit(opt.update).lower(params, state, params).compile().as_text()
    entry = compiled[compiled.index("\nENTRY") :]
    return len(re.findall(r"= \S+ fusion\(", entry))


@pytest.mark.parametrize("name", sorted(TWINS))
def test_no_more_kernels_per_leaf_than_optax(name):
    ours, theirs = TWINS[name]
    mine, optax_count = kernels(ours(1e-3)), kernels(theirs(1e-3))
    # the per-step scalars (bias corrections, rho_t, bounds) may take a few kernels
    # of their own, shared by every leaf; nothing per leaf beyond optax's
    assert mine <= optax_count + 6, (mine, optax_count)
    assert mine // LEAVES <= optax_count // LEAVES
