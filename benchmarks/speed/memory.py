"""Memory: the optimizer state's size per parameter, and XLA's analysis of a compiled step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from benchmarks.speed.config import Factory, Pair
from benchmarks.speed.harness import buffer_leaves, make_params, tree_bytes


def memory_stats(compiled: Any) -> dict[str, Any] | None:
    """Argument, output, alias, temp and peak bytes of a compiled step, as XLA reports them."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        return None
    if m is None:
        return None
    out: dict[str, Any] = {}
    for key in ("argument", "output", "alias", "temp", "generated_code"):
        v = getattr(m, f"{key}_size_in_bytes", None)
        if v is not None:
            out[key] = int(v)
    peak = getattr(m, "peak_memory_in_bytes", None)
    if peak:
        out["peak"], out["peak_estimated"] = int(peak), False
    elif all(k in out for k in ("argument", "output", "alias", "temp")):
        out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
        out["peak_estimated"] = True
    return out or None


def state_per_param(factory: Factory, params: Any) -> float:
    # eval_shape: the ratio needs shapes only, so nothing of the largest size is allocated.
    state = jax.eval_shape(factory().init, params)
    return tree_bytes(buffer_leaves(state)) / tree_bytes(params)


def memory_summary(
    pairs: Sequence[Pair], sizes: Sequence[int], speed: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """State per parameter of every pair, and the compiled steps' memory (from the ``speed``
    rows) at the largest size, tree layout."""
    largest = max(sizes)
    mem_params = jax.eval_shape(lambda: make_params(largest, "tree", jax.random.key(0)))
    compiled = {
        r["optimizer"]: r["memory"] for r in speed if r["size"] == largest and r["layout"] == "tree"
    }
    return {
        "n_params": sum(int(x.size) for x in jax.tree.leaves(mem_params)),
        "layout": "tree",
        "optimizers": {
            p.name: {
                "counterpart": p.counterpart,
                "state_per_param": state_per_param(p.ours, mem_params),
                "optax_state_per_param": state_per_param(p.theirs, mem_params),
                "compiled_ours": compiled[p.name]["ours"],
                "compiled_optax": compiled[p.name]["optax"],
            }
            for p in pairs
        },
    }
