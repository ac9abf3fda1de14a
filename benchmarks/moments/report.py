"""The report: targets, the ratios per model and method, the shares per layer kind, and the
profile of the vmap path; as markdown and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.moments.methods import LABELS
from benchmarks.speed.report import _f, _fmt_n, _g, _table, load_lines, run_head, write_md_json

__all__ = ["render_markdown", "write_report"]

MiB = 2**20
CATEGORIES = ("factored", "per-example", "vmap", "unused")

METHOD = """\
- **time**: `jax.jit` of `per_example_grad_moments(loss_fn, params, batch, method=m)` (the
  mean gradient and the variance of the mini-batch gradient), against `jax.jit` of
  `jax.grad` of the mean loss, `mean(vmap(loss_fn, (None, 0))(params, batch))`; `loss_fn` is
  the loss of one example. Every function is compiled ahead of time
  (`jax.jit(f).lower(params, batch).compile()`), nothing donated. Each round times every row
  of a model back to back (one untimed call, then the median of up to `steps` calls, fewer
  for slow rows: about 0.4 s per row and round); **x grad** is the median over rounds of the
  per-round ratio to the gradient's time in the same round. `vmap (old reductions)` is the
  vmap path with `_mean_and_m2`'s reductions as of git 5257cba (`mean(0)`, centred
  `sum(0)`), copied into `benchmarks/moments/methods.py`.
- **memory**: from the compiled executable's `memory_analysis()`: argument + output + temp
  bytes (nothing is aliased), against the same sum for the gradient; the targets use this
  figure. `temp` is XLA's buffer assignment for temporaries (buffers whose live ranges do
  not overlap share space). The executable's `peak_memory_in_bytes` (in the JSON as
  `xla_peak`) is not used: on XLA:CPU it is argument + output to within a few bytes, temporaries
  left out.
- **agreement**: the largest over leaves of `max|a - b| / max|b|` between `method="auto"`
  (or the old reductions) and `method="vmap"`, for the mean and the variance, float32.
- **paths**: `grad_moments_paths(loss_fn, params, batch)`: `factored` (Sum g and Sum g^2
  from the layer's inputs and output cotangents, no per-example gradient formed),
  `per-example` (per-example gradients formed from the layer's saved inputs and per-example
  cotangents), `vmap` (the fallback), `unused` (the loss does not depend on the leaf);
  shares are of the kind's parameters. **auto alone**:
  `method="auto"` against the gradient with only that kind's leaves as the parameters (the
  others closed over as constants), so the forward and backward passes are the whole
  model's: it isolates what each kind adds, not its share of a full run."""


def _head(res: dict[str, Any]) -> list[str]:
    meta = res["meta"]
    head = [
        *run_head(meta, "Mini-batch gradient moments"),
        f"- float32; {meta['rounds']} rounds, up to {meta['steps']} timed calls per row and round",
        f"- command: `{meta['command']}`",
    ]
    head += load_lines(meta)
    if meta["api_missing"]:
        head.append(f'- **method="auto" not measured**: {meta["api_missing"]}')
    return head


def _targets(res: dict[str, Any]) -> list[str]:
    rows = []
    for t in res["targets"]:
        if t["value"] is None:
            cell = "not measured"
        else:
            cell = f"{t['value']:.2f} " + ("met" if t["met"] else "**MISSED**")
        rows.append([t["model"], t["figure"], f"<= {t['threshold']:g}", cell])
    header = ['method="auto" on', "x grad", "threshold", "value"]
    return ["## Targets (issue 17)", "", *_table(header, rows), ""]


def _methods(res: dict[str, Any]) -> list[str]:
    names = res["meta"]["methods"]
    header = ["model", "params", "B", "grad ms", "grad MiB"]
    for m in names:
        header += [f"{LABELS[m]} ms", "x grad", "memory x grad"]
    header += ["auto vs vmap (mean, var)"]
    rows = []
    for name, m in res["models"].items():
        row = [
            name,
            _fmt_n(m["n_params"]),
            str(m["batch"]),
            _g(m["grad_ms"]),
            f"{m['grad_memory']['total'] / MiB:.1f}",
        ]
        for method in names:
            r = m["methods"].get(method)
            if r is None:
                row += ["error" if method in m["errors"] else "-", "-", "-"]
            else:
                row += [_g(r["ms"]), _f(r["ratio"]), _f(r["memory_ratio"])]
        a = m["agreement"].get("auto")
        row.append("-" if a is None else f"{a['mean']:.1e}, {a['variance']:.1e}")
        rows.append(row)
    lines = ["## Time and memory against the gradient of the mean loss", ""]
    lines += _table(header, rows) + [""]
    lines += ["| model | what |", "|---|---|"]
    lines += [f"| {name} | {m['title']} |" for name, m in res["models"].items()]
    lines.append("")
    for name, m in res["models"].items():
        new, old = m["methods"].get("vmap"), m["methods"].get("vmap_old")
        if new and old and new["ms"] > 1.5 * old["ms"]:
            lines.append(
                f'- **{name}: `method="vmap"` is {new["ms"] / old["ms"]:.1f}x slower than the '
                f"vmap path with the old reductions** ({_g(new['ms'])} against "
                f"{_g(old['ms'])} ms)."
            )
        for method, err in m["errors"].items():
            lines.append(f"- **{name}, {LABELS[method]} failed**: `{err}`")
        if m["paths_error"]:
            lines.append(f"- **{name}, grad_moments_paths failed**: `{m['paths_error']}`")
    return lines + [""]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if 0 < x < 0.01 or 0.99 < x < 1 else f"{100 * x:.0f}%"


def _kinds(res: dict[str, Any]) -> list[str]:
    header = ["model", "kind", "params", *CATEGORIES, "auto alone x grad", "memory x grad"]
    header.append("paths")
    rows = []
    for name, m in res["models"].items():
        for kind, k in m["kinds"].items():
            shares = k["shares"]
            pk = m["per_kind"].get(kind, {})
            auto = pk.get("auto")
            rows.append(
                [
                    name,
                    kind,
                    _fmt_n(k["params"]),
                    *[_pct(shares[c]) if c in shares else "-" for c in CATEGORIES],
                    "error" if "error" in pk else (_f(auto["ratio"]) if auto else "-"),
                    _f(auto["memory_ratio"]) if auto else "-",
                    "; ".join(f"`{p}`" for p in k["paths"]) or "-",
                ]
            )
    lines = ["## Parameters on each path, per layer kind", ""]
    lines += _table(header, rows) + [""]
    lines.append(
        "`auto alone` is blank where the model has one kind (its row above is the model's) "
        "or where the kind's timing was not run."
    )
    return lines + [""]


# --------------------------------------------------------------------------- #
# Part 1: the profile.
# --------------------------------------------------------------------------- #


def _profile(p: dict[str, Any] | None) -> list[str]:
    if p is None:
        return []
    lines = [
        "## Why the vmap path took 200x: profile on the MLP",
        "",
        f"{p['model']}, batch {p['batch']}. Components timed interleaved in one process "
        "(same rounds as above), `x grad` against the gradient of the mean loss in the same "
        "rounds; the right-hand columns are the same components in a child process with "
        "`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce` (XLA:CPU's YNNPACK "
        "fusions for reductions off; its YNNPACK dots stay).",
        "",
    ]
    rows_a = p["components"]["rows"]
    child = p.get("no_ynn_reduce") or {}
    rows_b = child.get("rows", {})
    header = ["component", "ms", "x grad", "ms, no YNN reduce", "x grad", "what"]
    body = []
    for name, what in p["what"].items():
        a, b = rows_a.get(name), rows_b.get(name)
        body.append(
            [
                name,
                _g(a["ms"]) if a else "-",
                _f(a["ratio"], 1) if a else "-",
                _g(b["ms"]) if b else "-",
                _f(b["ratio"], 1) if b else "-",
                what,
            ]
        )
    lines += _table(header, body) + [""]
    if "error" in child:
        lines += [f"The child without YNNPACK reductions failed: `{child['error'][-300:]}`", ""]
    for name, t in p["thunks"].items():
        lines += _thunks(name, t)
    lines += _finding(p)
    return lines


def _thunks(name: str, t: dict[str, Any]) -> list[str]:
    if "error" in t:
        return [f"Thunk profile of `{name}` not taken: {t['error']}", ""]
    lines = [
        f"**Thunks of `{name}`** (`jax.profiler.trace` of {t['calls']} calls, read with "
        "jaxlib's `ProfileData`; per call, summed over the threads that ran them: "
        f"{t['thread_ms_per_call']:.0f} ms in thunks, {t['wall_ms_per_call']:.0f} ms wall):",
        "",
    ]
    lines += _table(
        ["source", "thread ms per call"], [[k, f"{v:.1f}"] for k, v in t["by_source"].items()]
    )
    lines += [""]
    lines += _table(
        ["largest thunks", "thread ms per call", "shape", "from op", "YNNPACK"],
        [
            [r["thunk"], f"{r['ms_per_call']:.1f}", r["shape"], r["op_name"] or "-", str(r["ynn"])]
            for r in t["top"]
        ],
    )
    return lines + [""]


def _ms(r: dict[str, Any]) -> str:
    return f"{_g(r['ms'])} ms"


def _finding(p: dict[str, Any]) -> list[str]:
    a = p["components"]["rows"]
    b = (p.get("no_ynn_reduce") or {}).get("rows", {})
    need = ("reductions_old", "reductions_matvec", "per_example_grads", "outer_product")
    if not all(k in a for k in need):
        return []
    lines = ["**Finding.**", ""]
    lines.append(
        f"- The reductions over the leading (batch) axis of `_mean_and_m2` take "
        f"{_ms(a['reductions_old'])} on one (B, in, out) array of the first layer's "
        f"size; as matrix-vector products {_ms(a['reductions_matvec'])}"
        + (
            f"; with XLA's own reduction (YNNPACK's off) {_ms(b['reductions_old'])}."
            if "reductions_old" in b
            else "."
        )
        + " XLA:CPU in this jaxlib hands reductions to YNNPACK fusions"
        " (`__ynn_fusion`, `reduce_sum`), which are slow on a major-axis reduction of a"
        " large array; the thunk table shows where the old path's time went."
    )
    extra = ""
    if "outer_product_summed" in a and "fresh_buffer" in a:
        extra = (
            f"; the same outer product summed in the same jit (fused, nothing written) "
            f"{_ms(a['outer_product_summed'])}, and merely writing a new buffer of "
            f"that size (`jnp.full`) {_ms(a['fresh_buffer'])}"
        )
    lines.append(
        f"- The per-example gradients alone take {_ms(a['per_example_grads'])} "
        f"({_g(a['per_example_grads']['ratio'], 2)}x the gradient); one outer product of the first "
        f"layer's size, returned, {_ms(a['outer_product'])}{extra}. Their cost is "
        "writing B x in x out floats to new memory, not the arithmetic: the thunk table of "
        "`per_example_grads` shows each weight's per-example gradients written twice (a "
        "multiply-transpose fusion into a temporary, then a copy into the output)."
    )
    if "vmap_old" in a and "vmap" in a:
        lines.append(
            f"- The whole vmap path: {_ms(a['vmap_old'])} "
            f"({_g(a['vmap_old']['ratio'], 2)}x) with the old reductions, "
            f"{_ms(a['vmap'])} ({_g(a['vmap']['ratio'], 2)}x) as installed"
            + (
                f"; with YNNPACK reductions off, old reductions {_ms(b['vmap_old'])}."
                if "vmap_old" in b
                else "."
            )
        )
    return lines + [""]


def render_markdown(res: dict[str, Any]) -> str:
    lines = [*_head(res), "", METHOD, "", *_targets(res), *_methods(res), *_kinds(res)]
    lines += _profile(res.get("profile"))
    return "\n".join(lines)


def write_report(res: dict[str, Any], out: Path, name: str) -> None:
    """Writes ``out/<name>.md`` and ``.json`` (see :func:`write_md_json`)."""
    write_md_json(res, render_markdown(res), out, name)
