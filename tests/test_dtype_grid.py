"""The state's dtypes over an explicit grid, as optax's ``test_explicit_dtype``.

Every named optimizer (``tests/registry.py``) x params dtype (bfloat16, float16,
float32, complex64) x ``mu_dtype`` (None, bfloat16, float32) x ``nu_dtype``
(None, bfloat16, float32), where the optimizer takes the argument (its
signature says; ``ssd`` keeps no moment and takes neither, ``m_sgd`` and
``m_ssd`` keep no second moment and take no ``nu_dtype``). The buffers are:

* ``mu``: ``mu_dtype``, or the params' dtype;
* ``nu`` and ``nu_max``: ``nu_dtype``, or float32 for 16-bit and complex64
  params (``|g|**2`` is real), the params' dtype otherwise;

after ``init`` and after three jitted steps, whose updates are in the params'
dtype and finite. Two kinds of combination must raise ``ValueError``, and the
grid asserts that they do: complex params with M-VASSD's optimal (erf) factor,
defined for real numbers only (at ``init``), and complex params with a real
``mu_dtype``, since a complex gradient cannot be averaged into a real first
moment (both at ``init``, naming the leaf).

Each optimizer's working combinations run in one jitted program, each as a
``lax.scan`` of its step (one compile per optimizer rather than per
combination: the grid has 425 cases, ~30 s on this machine's 2 shared cores).
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_signvar as osv
from tests.registry import NAMES, OPTIMIZERS, make

PARAM_DTYPES = ("bfloat16", "float16", "float32", "complex64")
STATE_DTYPES = (None, "bfloat16", "float32")
# The optimal factor of a sign, erf(1 / (sqrt(2) eta)), is defined for real numbers only.
REFUSES_COMPLEX = frozenset({"m_vassd"})
STEPS = 3


def _takes(name: str, argument: str) -> bool:
    return argument in inspect.signature(OPTIMIZERS[name].factory).parameters


def _grid() -> list[tuple[str, str, str | None, str | None]]:
    cases = []
    for name in NAMES:
        mus = STATE_DTYPES if _takes(name, "mu_dtype") else (None,)
        nus = STATE_DTYPES if _takes(name, "nu_dtype") else (None,)
        for params in PARAM_DTYPES:
            cases += [(name, params, mu, nu) for mu in mus for nu in nus]
    return cases


GRID = _grid()


def _refusal(name: str, params: str, mu: str | None) -> str | None:
    """Why the combination must raise ValueError (a regex of the message), or None."""
    if params != "complex64":
        return None
    if name in REFUSES_COMPLEX:
        return r"(?s)erf.*complex"  # at init, naming the factor
    if mu is not None:
        return r"(?s)\['w'\].*real mu_dtype.*complex"  # at init, naming the leaf
    return None


def _key(params: str, mu: str | None, nu: str | None) -> str:
    return f"{params}/{mu}/{nu}"


def _case_id(case) -> str:
    name, params, mu, nu = case
    return f"{name}-{params}-mu_{mu}-nu_{nu}"


def _optimizer(name: str, mu: str | None, nu: str | None):
    kwargs = {}
    if _takes(name, "mu_dtype"):
        kwargs["mu_dtype"] = mu
    if _takes(name, "nu_dtype"):
        kwargs["nu_dtype"] = nu
    return make(name, **kwargs)


def _params(dtype: str) -> dict:
    # ones: the decoupled weight decay of AdaBoundW reads the params (one leaf: the
    # compile is most of this module's time, and shapes are tests/test_fuzz.py's business)
    return {"w": jnp.ones((2, 3), dtype)}


def _gradients(dtype: str) -> list[dict]:
    w = np.array([[0.5, -1.0, 2.0], [0.0, -0.25, 3.0]])
    if dtype == "complex64":
        w = w + 1j * np.array([[1.0, 0.5, -2.0], [0.0, 0.75, 0.0]])
    return [{"w": jnp.asarray(s * w, dtype)} for s in (1.0, -0.5, 2.0)[:STEPS]]


def _moments(state) -> osv.DissectedState:
    """The one DissectedState of a named optimizer's chain."""
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, osv.DissectedState))
        if isinstance(s, osv.DissectedState)
    ]
    assert len(found) == 1, state
    return found[0]


def _expected(params: str, mu: str | None, nu: str | None) -> tuple[jnp.dtype, jnp.dtype]:
    second_default = "float32" if params in ("bfloat16", "float16", "complex64") else params
    return jnp.dtype(mu or params), jnp.dtype(nu or second_default)


@functools.cache
def _stepped(name: str) -> dict:
    """Every working combination of ``name``: its state after ``init`` and its updates
    and state after ``STEPS`` jitted steps, keyed by :func:`_key`."""
    cases = {
        _key(params, mu, nu): (_optimizer(name, mu, nu), params)
        for (n, params, mu, nu) in GRID
        if n == name and _refusal(n, params, mu) is None
    }
    inputs = {
        key: (opt.init(_params(params)), _params(params), _gradients(params))
        for key, (opt, params) in cases.items()
    }

    @jax.jit
    def run(inputs):
        out = {}
        for key, (state, params, grads) in inputs.items():
            opt = cases[key][0]

            def step(state, g, opt=opt, params=params):
                updates, state = opt.update(g, state, params)
                return state, updates

            # a scan compiles the step once rather than STEPS times
            state, updates = jax.lax.scan(
                step, state, jax.tree.map(lambda *x: jnp.stack(x), *grads)
            )
            out[key] = (jax.tree.map(lambda u: u[-1], updates), state)
        return out

    stepped = run(inputs)
    return {key: (inputs[key][0], *stepped[key]) for key in cases}


def _assert_buffers(state, params: str, mu: str | None, nu: str | None, name: str, when: str):
    moments = _moments(state)
    mu_dtype, nu_dtype = _expected(params, mu, nu)
    assert moments.count.dtype == jnp.int32
    # the buffers a named optimizer keeps are those whose dtype it takes
    assert (moments.mu is not None) == _takes(name, "mu_dtype"), when
    assert (moments.nu is not None) == _takes(name, "nu_dtype"), when
    for field, want in (("mu", mu_dtype), ("nu", nu_dtype), ("nu_max", nu_dtype)):
        buffer = getattr(moments, field)
        if buffer is None:
            continue
        got = {k: v.dtype for k, v in buffer.items()}
        assert got == {k: want for k in buffer}, f"{field} {when}: {got}, expected {want}"


def _finite(tree) -> bool:
    def leaf(x):
        a = np.asarray(x)
        return np.all(np.isfinite(a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)))

    return all(bool(leaf(x)) for x in jax.tree.leaves(tree))


def test_the_grid_covers_every_named_optimizer_and_dtype():
    assert {c[0] for c in GRID} == set(NAMES)
    for name in NAMES:
        per_params = 3 ** (_takes(name, "mu_dtype") + _takes(name, "nu_dtype"))
        assert sum(c[0] == name for c in GRID) == per_params * len(PARAM_DTYPES)
    assert REFUSES_COMPLEX <= set(NAMES)


@pytest.mark.parametrize("case", GRID, ids=_case_id)
def test_explicit_dtype(case):
    name, params, mu, nu = case
    refusal = _refusal(name, params, mu)
    if refusal is not None:
        # complex params with M-VASSD's erf factor, or with a real first moment
        opt = _optimizer(name, mu, nu)
        p = _params(params)
        with pytest.raises(ValueError, match=refusal):
            opt.init(p)
        return
    initial, updates, state = _stepped(name)[_key(params, mu, nu)]
    _assert_buffers(initial, params, mu, nu, name, "after init")
    _assert_buffers(state, params, mu, nu, name, f"after {STEPS} steps")
    assert jax.tree.structure(state) == jax.tree.structure(initial)
    assert {k: v.dtype for k, v in updates.items()} == {"w": jnp.dtype(params)}
    assert _finite(updates), updates
    assert _finite(state), state
    assert int(_moments(state).count) == STEPS
