"""The report: targets, models and one table per model, as markdown and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.speed.report import _f, _fmt_n, _g, _table, load_lines, run_head, write_md_json
from benchmarks.trees.analysis import TARGET_LAYOUTS, TARGETS
from benchmarks.trees.measure import SLOW_STEP_S
from benchmarks.trees.variants import LR, OURS

__all__ = ["render_markdown", "write_report"]

METHOD = """\
Rows: `sgd (floor)` is a stateless `params - lr * grads` (the cost of a train step with no
optimizer); `optax.adam`, `optax.flatten(optax.adam)`; ours (`adam`, `m_svag`, `m_vassd`) with
`layout="tree"` and `layout="packed"`; and `[packed params]`: the parameters live in
`optax_signvar.pack(params)` (small leaves in a few flat buffers, leaves of 2^16+ elements as
they are), the loss reads `optax_signvar.unpack(packed)`, and the optimizer (ours with
`layout="tree"`, optax.adam, the SGD floor) is built on the packed tree.

- **full step**: `loss, grads = value_and_grad(loss_fn)(params, batch)`, `opt.update`,
  `optax.apply_updates`, jitted with params and state donated. **optimizer alone**: the same
  on fixed gradients, without the loss. Times are medians over interleaved rounds (every row
  of a model timed back to back each round, each round on new buffers) of per-round medians
  of the steps given in the head; a row slower than 1/4 s over those steps is timed on
  fewer (at least 1) per round (the JSON's `timed_steps`); a row whose first step takes
  over 1 s is timed by that one step, and if it is a packed-params row, the model's later
  packed-params rows are skipped (their full step; they share `unpack`, what makes it
  slow): both flagged in the last column.
- **cost** = step ms minus the floor's step ms (median of per-round differences);
  **cost/optax.adam** = median of per-round ratios of the costs; **/tree** = step time over the
  same optimizer's `layout="tree"` row (packed params: over the same optimizer on the tree).
- **compile**: `jax.jit(step).lower(...)` + `.compile()` of the full step after
  `jax.clear_caches()`, median of fresh compiles (interleaved; a row whose first compile
  took over 10 s is compiled once); **/optax.adam** the median per-repeat ratio. `--quick`
  compiles with XLA's backend optimizations off (fast compiles; its figures mean nothing).
- **losses**: the MLPs run their real forward pass (residual tanh layers
  `x + tanh(x W + b) / sqrt(L)`, MSE on a batch of 16); the architecture-shaped trees run a
  synthetic loss, `sum over leaves of mean(tanh(p) * c_leaf)`, which touches every leaf
  elementwise at a cost proportional to its bytes, not the real convolutions or attention.
- **narrowing**: `width` multiplies the dimensions listed per model (kernel sizes and the 3
  image channels stay); the leaf count is the real architecture's, the parameter count is
  the narrowed one (the full-width count beside it)."""


def _head(res: dict[str, Any]) -> list[str]:
    meta = res["meta"]
    head = [
        *run_head(meta, "Optimizer step on real model trees"),
        f"- float32, learning rate {LR}; {meta['rounds']} rounds x median of {meta['steps']} "
        "steps; compile repeats "
        + ", ".join(f"{k} {v}" for k, v in meta["compile_repeats"].items()),
    ]
    head += load_lines(meta)
    if meta["packed_missing"]:
        head.append(f"- **packed rows not measured**: {meta['packed_missing']}")
    return head


def _target_cell(t: dict[str, Any] | None) -> str:
    if t is None:
        return "-"
    if t["met"] is None:
        return "not measured"
    return f"{t['value']:.2f} " + ("met" if t["met"] else "**MISSED**")


def _targets_section(res: dict[str, Any]) -> list[str]:
    lines = ["## Targets", ""]
    if not res["targets"]:
        return lines + ["No target's model and packed rows were measured in this run.", ""]
    by = {(t["target"], t["variant"]): t for t in res["targets"]}
    rows = []
    for key, _model, _figure, threshold, what in TARGETS:
        for layout in TARGET_LAYOUTS:
            cells = []
            for family in OURS:
                cells.append(_target_cell(by.get((key, f"{family} [{layout}]"))))
            if any(c != "-" for c in cells):
                rows.append([what, layout, f"<= {threshold}", *cells])
    header = ["target", "ours as", "threshold", *OURS]
    return lines + _table(header, rows) + [""]


def _models_section(res: dict[str, Any]) -> list[str]:
    rows = [
        [
            m["title"],
            str(m["n_leaves"]),
            _fmt_n(m["n_params"]),
            _fmt_n(m["full_params"]),
            f"{m['width']:.4g}",
            m["narrowed"],
            f"{m['packed_leaves']} / {m['packed_leaves_full']}",
            m["loss"],
        ]
        for m in res["models"].values()
    ]
    header = ["model", "leaves", "params", "full width", "width", "narrowed", "packed", "loss"]
    note = (
        '`packed`: leaves `pack` and `layout="packed"` put in flat buffers (fewer than '
        "2^16 elements), in this run / at full width: narrowing packs more of them."
    )
    return ["## Models", "", *_table(header, rows), "", note, ""]


_STATUS = {
    "ok": "",
    "slow": f"one step (over {SLOW_STEP_S:g} s: not timed in rounds)",
    "skipped": f"full step skipped (an earlier packed-params row was over {SLOW_STEP_S:g} s)",
}


def _model_section(m: dict[str, Any]) -> list[str]:
    lines = [
        f"## {m['title']}: {m['n_leaves']} leaves, {_fmt_n(m['n_params'])} params",
        "",
    ]
    body = []
    for r in m["rows"]:
        body.append(
            [
                r["variant"],
                _g(r["step_ms"]),
                _g(r["step_cost_ms"]),
                _f(r["step_cost_vs_adam"]),
                _f(r["step_vs_tree"]),
                _g(r["opt_ms"]),
                _g(r["opt_cost_ms"]),
                _f(r["opt_cost_vs_adam"]),
                _g(r["compile_s"]),
                _f(r["compile_vs_adam"]),
            ]
            + [_STATUS[r["status"]] + ("" if r["donated"] else " NOT DONATED")]
        )
    header = ["row", "step ms", "cost ms", "cost/optax.adam", "/tree"]
    header += ["opt ms", "opt cost ms", "opt cost/optax.adam", "compile s", "/optax.adam", ""]
    return lines + _table(header, body) + [""]


def render_markdown(res: dict[str, Any]) -> str:
    lines = [*_head(res), "", METHOD, "", *_targets_section(res), *_models_section(res)]
    for m in res["models"].values():
        lines += _model_section(m)
    return "\n".join(lines)


def write_report(res: dict[str, Any], out: Path, name: str) -> None:
    """Writes ``out/<name>.md`` and ``.json`` (see :func:`write_md_json`)."""
    write_md_json(res, render_markdown(res), out, name)
