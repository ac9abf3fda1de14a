"""``main``: runs the measurements in order, then writes and prints the report."""

from __future__ import annotations

import datetime
import importlib.util
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.speed.compile_time import compile_entries, measure_compiles
from benchmarks.speed.config import PAIR_BY_NAME, TORCH_ALTERNATIVES, Config, Pair, parse_args
from benchmarks.speed.harness import progress_bar
from benchmarks.speed.machine import environment, machine_slug
from benchmarks.speed.memory import memory_summary
from benchmarks.speed.report import write_report
from benchmarks.speed.step import measure_copy, measure_layout
from benchmarks.speed.torch_ref import measure_torch


def _torch_note(cfg: Config) -> str | None:
    """Why the PyTorch comparison is skipped; None where it runs."""
    if not cfg.torch:
        return "--no-torch"
    if importlib.util.find_spec("torch") is None:
        return "torch not importable"
    return None


def _task_count(cfg: Config, pairs: Sequence[Pair]) -> int:
    """The progress bar's total: one task per copy, pair x size x layout, compile, torch row."""
    n_torch = sum(p.name in TORCH_ALTERNATIVES for p in pairs) if cfg.torch else 0
    n_compiles = 2 * cfg.compile_repeats * len(compile_entries(pairs))
    return 1 + len(cfg.sizes) * 2 * len(pairs) + n_compiles + n_torch


def _measure(cfg: Config, pairs: Sequence[Pair]) -> dict[str, Any]:
    """Every measurement, in the order they run: copy, step time, compile, torch."""
    bar = progress_bar(_task_count(cfg, pairs), cfg.progress)
    bar.set_description("copy bandwidth")
    copy = measure_copy(cfg)
    bar.update(1)
    speed = []
    for size in cfg.sizes:
        for layout in ("flat", "tree"):
            speed += measure_layout(cfg, pairs, size, layout, bar)
    compiles = measure_compiles(cfg, pairs, bar)
    torch_res = measure_torch(cfg, pairs, bar) if cfg.torch else None
    bar.close()
    return {"copy": copy, "speed": speed, **compiles, "torch": torch_res}


def _meta(cfg: Config, machine: str, torch_note: str | None, ran_torch: bool) -> dict[str, Any]:
    torch_version = None
    if ran_torch:
        import torch

        torch_version = torch.__version__
    return {
        "machine": machine,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **environment(),
        "torch": torch_version,
        "torch_note": torch_note,
        "quick": cfg.quick,
        "sizes": cfg.sizes,
        "steps": cfg.steps,
        "rounds": cfg.rounds,
        "warmup": cfg.warmup,
        "optimizers": cfg.optimizers,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark with command-line ``argv``; returns the results (also as JSON)."""
    cfg = parse_args(argv)
    t_start = time.perf_counter()
    pairs = [PAIR_BY_NAME[n] for n in cfg.optimizers]
    torch_note = _torch_note(cfg)
    cfg.torch = torch_note is None
    m = _measure(cfg, pairs)
    memory = memory_summary(pairs, cfg.sizes, m["speed"])
    machine = machine_slug() + ("-quick" if cfg.quick else "")
    res: dict[str, Any] = {
        "meta": _meta(cfg, machine, torch_note, m["torch"] is not None),
        "copy": m["copy"],
        "speed": m["speed"],
        "memory": memory,
        "compile": m["compile"],
        "compile_large": m["compile_large"],
        "torch": m["torch"],
    }
    res["meta"]["wall_s"] = time.perf_counter() - t_start
    write_report(res, cfg.out, machine)
    return res
