"""Old spellings of renamed arguments and moved names keep working for one release.

Each gives the same optimizer as its new spelling and warns with a
``DeprecationWarning`` that says what to write instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_signvar as osv
from optax_signvar import blocks, research

GRADS = [jnp.array([0.5, -2.0, 0.0]), jnp.array([0.3, -1.0, 0.1]), jnp.array([-0.2, -3.0, 0.0])]

# (old call, new call, the new name the warning must mention)
OPTIMIZERS = {
    "dissect beta": (
        lambda: osv.dissect(0.1, variance_adaptation="optimal", beta=0.8),
        lambda: osv.dissect(0.1, variance_adaptation="optimal", b1=0.8),
        "b1",
    ),
    "dissect beta2": (
        lambda: osv.dissect(0.1, normalization="rms", beta=0.8, beta2=0.99),
        lambda: osv.dissect(0.1, normalization="rms", b1=0.8, b2=0.99),
        "b2",
    ),
    "scale_by_dissection beta": (
        lambda: osv.scale_by_dissection(osv.Dissection(direction="sign"), beta=0.5),
        lambda: osv.scale_by_dissection(osv.Dissection(direction="sign"), b1=0.5),
        "b1",
    ),
    "m_vassd factor=erf": (
        lambda: osv.m_vassd(0.1, factor="erf"),
        lambda: osv.m_vassd(0.1, variance_adaptation="optimal"),
        "variance_adaptation",
    ),
    "m_vassd factor=adam": (
        lambda: osv.m_vassd(0.1, factor="adam"),
        lambda: osv.m_vassd(0.1, variance_adaptation="adam"),
        "variance_adaptation",
    ),
    "m_vassd positional erf": (
        lambda: osv.m_vassd(0.1, 0.9, "erf"),
        lambda: osv.m_vassd(0.1, 0.9, "optimal"),
        "optimal",
    ),
    "scale_by_m_vassd factor": (
        lambda: osv.scale_by_m_vassd(factor="adam"),
        lambda: osv.scale_by_m_vassd(variance_adaptation="adam"),
        "variance_adaptation",
    ),
    "scale_by_adabound amsbound": (
        lambda: osv.scale_by_adabound(1e-2, amsbound=True),
        lambda: osv.scale_by_adabound(1e-2, max_tracking=True),
        "max_tracking",
    ),
}


def _updates(opt):
    state, out = opt.init(jnp.zeros(3)), []
    for g in GRADS:
        u, state = opt.update(g, state, jnp.zeros(3))
        out.append(u)
    return out


@pytest.mark.parametrize("case", sorted(OPTIMIZERS))
def test_old_spelling_warns_and_builds_the_same_optimizer(case):
    old, new, name = OPTIMIZERS[case]
    with pytest.warns(DeprecationWarning) as record:
        old_opt = old()
    assert any(name in str(w.message) for w in record), [str(w.message) for w in record]
    for a, b in zip(_updates(old_opt), _updates(new()), strict=True):
        np.testing.assert_array_equal(a, b)


def test_old_and_new_spelling_together_is_an_error():
    with pytest.raises(TypeError, match="both"):
        osv.dissect(0.1, beta=0.9, b1=0.9)


def test_sign_variance_factor_form():
    d, s = jnp.array([1.0, 0.5]), jnp.array([1.0, 2.0])
    with pytest.warns(DeprecationWarning, match="variance_adaptation"):
        old = blocks.sign_variance_factor(d, s, form="erf")
    np.testing.assert_array_equal(old, blocks.sign_variance_factor(d, s, "optimal"))
    with pytest.warns(DeprecationWarning, match="optimal"):
        positional = blocks.sign_variance_factor(d, s, "erf")
    np.testing.assert_array_equal(positional, old)


def test_diagnostics_beta():
    opt = osv.adam(0.1, b1=0.8, b2=0.99)
    state = opt.init(jnp.zeros(3))
    for g in GRADS:
        _, state = opt.update(g, state)
    with pytest.warns(DeprecationWarning) as record:
        old = osv.diagnostics(state, beta=0.8, beta2=0.99)
    assert {"'b1'", "'b2'"} <= {str(w.message).split("now ")[1][:4] for w in record}
    new = osv.diagnostics(state, b1=0.8, b2=0.99)
    assert jax.tree.map(float, old) == jax.tree.map(float, new)
    # beside the optimizer (whose record holds b1=0.8, b2=0.99) the old spelling still overrides
    with pytest.warns(DeprecationWarning, match="'b1'"):
        with_opt = osv.diagnostics(state, opt, beta=0.8)
    assert jax.tree.map(float, with_opt) == jax.tree.map(float, osv.diagnostics(state, opt))
    assert jax.tree.map(float, with_opt) == jax.tree.map(float, new)


@pytest.mark.parametrize("name", ["ablate", "summarize", "problems"])
def test_research_names_moved(name):
    with pytest.warns(DeprecationWarning, match=f"optax_signvar.research.{name}"):
        moved = getattr(osv, name)
    assert moved is getattr(research, name)


def test_import_loads_no_research_module():
    import subprocess
    import sys

    code = (
        "import sys, optax_signvar as osv; osv.adam(0.1); "
        "print(sorted(m for m in sys.modules if m.startswith('optax_signvar')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)
    assert not [m for m in loaded if "research" in m or "demo" in m], loaded


def test_optax_schedules_work_under_strict_promotion():
    # optax's schedules mix Python floats with the int32 count; the optimizers
    # evaluate them under standard promotion (conftest.py makes this test strict)
    schedule = optax.cosine_decay_schedule(0.1, decay_steps=10)
    opt = osv.adabound(schedule, final_lr=optax.linear_schedule(0.1, 0.01, 10))
    u = _updates(opt)
    assert all(np.all(np.isfinite(x)) for x in u)
