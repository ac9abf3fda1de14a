"""The report: the results as markdown (the tables the package docstring explains) and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.speed.config import LR
from benchmarks.speed.harness import median

MiB = 2**20

# Step-time rows by (size, layout), in the order they were measured.
Groups = dict[tuple[int, str], list[dict[str, Any]]]


def _fmt_n(n: int) -> str:
    for div, unit in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _g(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _mib(stats: dict[str, Any] | None, key: str) -> str:
    if not stats or key not in stats:
        return "-"
    return f"{stats[key] / MiB:.1f}" + ("~" if key == "peak" and stats["peak_estimated"] else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _head(res: dict[str, Any]) -> list[str]:
    meta, copy = res["meta"], res["copy"]
    return [
        f"# optax_signvar step speed: `{meta['machine']}`",
        "",
        f"- date: {meta['date']}; wall time {meta['wall_s']:.0f} s"
        + (" (--quick)" if meta["quick"] else ""),
        f"- jax {meta['jax']}, optax {meta['optax']}, torch {meta['torch'] or 'not used'}, "
        f"numpy {meta['numpy']}, python {meta['python']}",
        f"- backend {meta['backend']}, device kind `{meta['device_kind']}`, "
        f"CPU `{meta['cpu_model']}`, {meta['cores']} cores",
        f"- float32; {meta['rounds']} rounds x median of {meta['steps']} steps "
        f"after {meta['warmup']} warm-up steps; learning rate {LR}",
        f"- copy bandwidth: {copy['gbps']:.1f} GB/s ({copy['kind']} copy of "
        f"{_fmt_n(copy['n'])} float32, {copy['ms']:.3g} ms; in place "
        f"{copy['in_place']['gbps']:.1f}, into a new buffer "
        f"{copy['fresh']['gbps']:.1f} GB/s)",
    ]


def _speed_section(groups: Groups) -> list[str]:
    lines = ["## Step time against optax", ""]
    for (_size, layout), rows in groups.items():
        r0 = rows[0]
        lines.append(
            f"### {_fmt_n(r0['n_params'])} params, {layout} ({r0['n_leaves']} "
            f"lea{'ves' if r0['n_leaves'] > 1 else 'f'})"
        )
        lines.append("")
        body = [
            [
                r["optimizer"],
                r["counterpart"],
                _g(r["ours_ms"]),
                _g(r["optax_ms"]),
                _f(r["ratio"]),
                _g(r["gbps"]),
                _f(r["time_per_floor"]),
                _f(r["optax_time_per_floor"]),
            ]
            + ([] if r["donated"] else ["NOT DONATED"])
            for r in rows
        ]
        header = ["optimizer", "optax counterpart", "ours ms", "optax ms", "ours/optax"]
        lines += _table(header + ["GB/s", "/floor", "optax /floor"], body)
        lines.append("")
    return lines


def _floor_section(groups: Groups) -> list[str]:
    floor_rows = []
    for (_size, layout), rows in groups.items():
        by_k: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            by_k.setdefault(r["state_buffers"], []).append(r)
        for k in sorted(by_k):
            ms = median([r["floor_ms"] for r in by_k[k]])
            nbytes = by_k[k][0]["bytes_per_step"]
            n = by_k[k][0]["n_params"]
            floor_rows.append([_fmt_n(n), layout, str(k), _g(ms), _g(nbytes / ms / 1e6)])
    return ["## Floor kernel", "", *_table(["params", "layout", "bufs", "ms", "GB/s"], floor_rows)]


def _memory_section(mem: dict[str, Any]) -> list[str]:
    lines = [
        "## Memory",
        "",
        f"XLA memory analysis of the donated step at {_fmt_n(mem['n_params'])} params, "
        f"{mem['layout']} layout (MiB; ~ = estimated).",
        "",
    ]
    mem_rows = []
    for name, m in mem["optimizers"].items():
        o, t = m["compiled_ours"], m["compiled_optax"]
        mem_rows.append(
            [name, _g(m["state_per_param"]), _g(m["optax_state_per_param"])]
            + [_mib(o, k) for k in ("argument", "output", "alias", "temp", "peak")]
            + [_mib(t, "temp"), _mib(t, "peak")]
        )
    header = ["optimizer", "state/param", "optax state/param", "arg", "out", "alias", "temp"]
    return lines + _table(header + ["peak", "optax temp", "optax peak"], mem_rows)


def _compile_section(comp: dict[str, Any]) -> list[str]:
    lines = [
        f"## Compile time, {comp['tree']}",
        "",
        f"lower + compile of the donated step on {comp['n_leaves']} leaves "
        f"({_fmt_n(comp['n_params'])} params), median of {comp['repeats']} fresh compiles; "
        f"optax.adam: {comp['optax_adam_s']:.3g} s ({comp['optax_adam_lower_s']:.3g} s trace + "
        f"lower, {comp['optax_adam_xla_s']:.3g} s XLA, {comp['optax_adam_ops_per_leaf']:.0f} "
        "StableHLO ops per leaf). Both parts grow with the ops per leaf (the lowered module's "
        "op count over the number of leaves, step-count and scalar ops included), so an update "
        "with more arithmetic per element compiles longer on many-leaf trees.",
        "",
    ]
    header = ["optimizer", "s", "trace+lower s", "XLA s", "ops/leaf", "/optax.adam"]
    header += ["counterpart", "counterpart ops/leaf", "/counterpart"]
    rows = [
        [
            k,
            _g(v["s"]),
            _g(v["lower_s"]),
            _g(v["xla_s"]),
            f"{v['ops_per_leaf']:.0f}",
            _f(v["ratio"]),
            v["counterpart"],
            f"{v['counterpart_ops_per_leaf']:.0f}",
            _f(v["counterpart_ratio"]),
        ]
        for k, v in comp["optimizers"].items()
    ]
    return lines + _table(header, rows)


def _torch_section(tr: dict[str, Any]) -> list[str]:
    lines = [
        "## What a user would pick instead (PyTorch)",
        "",
        f"`opt.step()` on one flat parameter of {_fmt_n(tr['n'])} float32 on {tr['device']}, "
        f"{tr['threads']} torch threads; torch Adam is `{tr['adam_impl']}`"
        + ("" if tr["adabound_installed"] else "; adabound package not installed")
        + ".",
        "",
    ]
    rows = [
        [r["optimizer"], _g(r["ours_ms"]), r["alternative"], _g(r["torch_ms"]), _f(r["ratio"])]
        for r in tr["rows"]
    ]
    return lines + _table(["ours", "ours ms", "alternative", "torch ms", "ours/torch"], rows)


def render_markdown(res: dict[str, Any]) -> str:
    groups: Groups = {}
    for row in res["speed"]:
        groups.setdefault((row["size"], row["layout"]), []).append(row)
    lines = [*_head(res), "", *_speed_section(groups), *_floor_section(groups)]
    lines += ["", *_memory_section(res["memory"])]
    for key in ("compile", "compile_large"):
        if key in res:
            lines += ["", *_compile_section(res[key])]
    if res.get("torch"):
        lines += ["", *_torch_section(res["torch"])]
    elif res["meta"]["torch_note"]:
        lines += ["", f"PyTorch comparison skipped: {res['meta']['torch_note']}."]
    return "\n".join(lines) + "\n"


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return asdict(x) if hasattr(x, "__dataclass_fields__") else str(x)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_report(res: dict[str, Any], out: Path, name: str) -> None:
    """Writes ``out/<name>.md`` and ``.json`` (adding their paths to ``res["files"]``), then
    prints the markdown and the paths written."""
    md = render_markdown(res)
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / f"{name}.md", out / f"{name}.json"
    md_path.write_text(md)
    res["files"] = {"markdown": str(md_path), "json": str(json_path)}
    json_path.write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
    print(md)
    for path in (md_path, json_path):
        print(f"wrote {_shown(path)}")


def write_md_json(res: dict[str, Any], md: str, out: Path, name: str) -> None:
    """Writes ``md`` to ``out/<name>.md`` and ``res`` to ``.json`` (their paths added to
    ``res["files"]``), then prints the markdown and the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / f"{name}.md", out / f"{name}.json"
    md_path.write_text(md + "\n")
    res["files"] = {"markdown": str(md_path), "json": str(json_path)}
    json_path.write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
    print(md)
    for path in (md_path, json_path):
        print(f"wrote {_shown(path)}")


def run_head(meta: dict[str, Any], title: str) -> list[str]:
    """The first lines of a run's report: title, date and wall time, versions, machine."""
    return [
        f"# {title}: `{meta['machine']}`",
        "",
        f"- date: {meta['date']}; wall time {meta['wall_s']:.0f} s"
        + (" (--quick)" if meta["quick"] else ""),
        f"- jax {meta['jax']}, optax {meta['optax']}, numpy {meta['numpy']}, "
        f"python {meta['python']}",
        f"- backend {meta['backend']}, device kind `{meta['device_kind']}`, "
        f"CPU `{meta['cpu_model']}`, {meta['cores']} cores",
    ]


def load_lines(meta: dict[str, Any]) -> list[str]:
    """The run's load average line, where it was recorded."""
    if not meta.get("load_avg"):
        return []
    start, end = meta["load_avg"]
    return [
        f"- load average (1 min) {start:.1f} at the start, {end:.1f} at the end, on "
        f"{meta['cores']} cores: other work shares the machine when it exceeds the "
        "benchmark's own ~1"
    ]
