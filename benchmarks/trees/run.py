"""``main``: builds each model, measures its rows, then writes and prints the report."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.speed.harness import progress_bar
from benchmarks.speed.machine import environment, machine_slug
from benchmarks.trees import shapes as S
from benchmarks.trees.analysis import derive, targets
from benchmarks.trees.config import Config, parse_args
from benchmarks.trees.measure import measure_model, task_count
from benchmarks.trees.models import SPEC_BY_NAME, build
from benchmarks.trees.report import write_report
from benchmarks.trees.variants import Variant, packed_api_missing, packed_leaf_count, variants


def _measure(cfg: Config, vs: Sequence[Variant]) -> dict[str, Any]:
    """Every model's description and rows (with their derived figures), in run order."""
    specs = [SPEC_BY_NAME[name] for name in cfg.models]
    total = sum(task_count(len(vs), cfg.compile_repeats_for(s.name), cfg.rounds) for s in specs)
    bar = progress_bar(total, cfg.progress)
    models = {}
    for spec in specs:
        model = build(spec, cfg.quick)
        rows = measure_model(model, vs, cfg, bar)
        derive(rows)
        models[spec.name] = {
            "title": spec.title,
            "n_leaves": model.n_leaves,
            "n_params": model.n_params,
            "full_params": S.n_params(spec.shapes(1.0)),
            "width": model.width,
            "packed_leaves": packed_leaf_count(model.shapes),
            "packed_leaves_full": packed_leaf_count(spec.shapes(1.0)),
            "narrowed": spec.note if model.width != 1.0 else "-",
            "loss": "real forward, MSE" if spec.loss == "mlp" else "synthetic",
            "rows": rows,
        }
    bar.close()
    return models


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _meta(cfg: Config, machine: str, packed_missing: str | None) -> dict[str, Any]:
    return {
        "machine": machine,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        **environment(),
        "quick": cfg.quick,
        "models": cfg.models,
        "optimizers": cfg.optimizers,
        "rounds": cfg.rounds,
        "steps": cfg.steps,
        "compile_repeats": {m: cfg.compile_repeats_for(m) for m in cfg.models},
        "packed_missing": packed_missing,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark with command-line ``argv``; returns the results (also as JSON)."""
    cfg = parse_args(argv)
    t_start = time.perf_counter()
    load_start = _load()
    missing = packed_api_missing()
    vs = variants(missing is None, cfg.optimizers)
    models = _measure(cfg, vs)
    machine = "trees-" + machine_slug() + ("-quick" if cfg.quick else "")
    res: dict[str, Any] = {
        "meta": _meta(cfg, machine, missing),
        "variants": [v.name for v in vs],
        "models": models,
        "targets": targets(models),
    }
    res["meta"]["wall_s"] = time.perf_counter() - t_start
    res["meta"]["load_avg"] = None if load_start is None else [load_start, _load()]
    write_report(res, cfg.out, machine)
    return res
