"""The command line and ``main``: measures each model, profiles the MLP, writes the report."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.moments import measure as E
from benchmarks.moments import methods as M
from benchmarks.moments.models import MODELS, Model, build
from benchmarks.moments.report import write_report
from benchmarks.speed.machine import environment, machine_slug

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"
# The targets: method="auto" on these models, time and memory against the gradient.
TARGET_MODELS = ("mlp", "cnn")
TARGET_RATIO = 2.0
# --quick's defaults: a smoke run is mostly compiles (seconds each on a shared 2-core CPU).
QUICK_MODELS = ("mlp", "cnn", "lstm_scan", "transformer")
QUICK_METHODS = ("auto", "vmap")


@dataclass
class Config:
    models: list[str]
    methods: list[str]
    rounds: int
    steps: int
    per_kind: bool
    profile: bool
    out: Path
    quick: bool


def parse_args(argv: Sequence[str] | None) -> Config:
    import benchmarks.moments

    description = (benchmarks.moments.__doc__ or "").split("\n\n")[0]
    ap = argparse.ArgumentParser(prog="python -m benchmarks.moments", description=description)
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: tiny sizes, 1 round, models {' '.join(QUICK_MODELS)} and methods "
        f"{' '.join(QUICK_METHODS)} unless given, no per-kind timing, the profile without "
        "its child process",
    )
    ap.add_argument("--models", nargs="+", help=f"a subset of {' '.join(MODELS)}")
    ap.add_argument("--methods", nargs="+", help=f"a subset of {' '.join(M.METHODS)}")
    ap.add_argument("--repeats", "--rounds", dest="rounds", type=int, help="rounds (default 5)")
    ap.add_argument("--steps", type=int, help="most timed calls per row and round (default 20)")
    ap.add_argument(
        "--per-kind",
        action=argparse.BooleanOptionalAction,
        help="time method='auto' per layer kind (default: on, off with --quick; the shares "
        "are always reported)",
    )
    ap.add_argument("--no-profile", action="store_true", help="no profile of the vmap path")
    ap.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for moments-<machine>.md and .json (default benchmarks/results; "
        "--quick writes moments-<machine>-quick.*, git-ignored there)",
    )
    a = ap.parse_args(argv)

    def names(given: list[str] | None, known: Sequence[str], default: Sequence[str]) -> list[str]:
        out = [n for arg in given or [] for n in arg.split(",") if n] or list(default)
        unknown = [n for n in out if n not in known]
        if unknown:
            ap.error(f"unknown names {unknown}; choose from {list(known)}")
        return out

    return Config(
        models=names(a.models, list(MODELS), QUICK_MODELS if a.quick else list(MODELS)),
        methods=names(a.methods, M.METHODS, QUICK_METHODS if a.quick else M.METHODS),
        rounds=a.rounds or (1 if a.quick else 5),
        steps=a.steps or (2 if a.quick else 20),
        per_kind=not a.quick if a.per_kind is None else a.per_kind,
        profile=not a.no_profile,
        out=a.out,
        quick=a.quick,
    )


def _error(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(e), e)).strip()[-600:]


def _rows(cfg: Config, model: Model, methods: Sequence[str]) -> tuple[dict, dict[str, str]]:
    """The compiled rows (the baseline and each method that compiles) and the errors."""
    rows = {"grad": E.make_row("grad", M.baseline(model.loss_fn), model.params, model.batch)}
    errors = {}
    for m in methods:
        try:
            rows[m] = E.make_row(m, M.moments_fn(m, model.loss_fn), model.params, model.batch)
        except Exception as e:  # noqa: BLE001 - a failing method is a result to report
            errors[m] = _error(e)
    for r in rows.values():
        E.calibrate(r, cfg.steps)
    E.interleave(list(rows.values()), cfg.rounds)
    return rows, errors


def _per_kind(cfg: Config, model: Model, kinds: Sequence[str]) -> dict[str, Any]:
    """Per layer kind: auto against the gradient with only that kind's leaves as params."""
    out = {}
    for kind in kinds:
        loss_fn, sub = E.restricted(model, kind)
        try:
            rows = {
                "grad": E.make_row("grad", M.baseline(loss_fn), sub, model.batch),
                "auto": E.make_row("auto", M.moments_fn("auto", loss_fn), sub, model.batch),
            }
        except Exception as e:  # noqa: BLE001
            out[kind] = {"error": _error(e)}
            continue
        for r in rows.values():
            E.calibrate(r, cfg.steps)
        E.interleave(list(rows.values()), cfg.rounds)
        out[kind] = {
            "params": sum(int(x.size) for x in sub),
            "grad_ms": 1e3 * E.statistics.median(rows["grad"].times),
            "auto": E.summary(rows["auto"], rows["grad"]),
        }
    return out


def measure_model(cfg: Config, name: str, missing: str | None) -> dict[str, Any]:
    model = build(name, cfg.quick)
    methods = [m for m in cfg.methods if missing is None or m not in ("auto",)]
    t0 = time.perf_counter()
    rows, errors = _rows(cfg, model, methods)
    paths, paths_error = None, None
    if missing is None:
        try:
            paths = M.paths(model.loss_fn, model.params, model.batch)
        except Exception as e:  # noqa: BLE001
            paths_error = _error(e)
    leaves = E.leaf_table(model, paths)
    kinds = list(dict.fromkeys(leaf["kind"] for leaf in leaves))
    per_kind = {}
    if cfg.per_kind and missing is None and "auto" in rows and len(kinds) > 1:
        per_kind = _per_kind(cfg, model, kinds)
    return {
        "title": model.title,
        "batch": model.batch_size,
        "n_params": model.n_params,
        "n_leaves": len(leaves),
        "grad_ms": 1e3 * E.statistics.median(rows["grad"].times),
        "grad_memory": rows["grad"].memory,
        "methods": {m: E.summary(r, rows["grad"]) for m, r in rows.items() if m != "grad"},
        "errors": errors,
        "agreement": E.agreement(rows),
        "paths_error": paths_error,
        "leaves": leaves,
        "kinds": E.kind_shares(leaves),
        "per_kind": per_kind,
        "wall_s": time.perf_counter() - t0,
    }


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def targets(models: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name in TARGET_MODELS:
        m = models.get(name)
        for figure in ("ratio", "memory_ratio"):
            r = (m or {}).get("methods", {}).get("auto")
            value = None if r is None else r[figure]
            out.append(
                {
                    "model": name,
                    "figure": "time" if figure == "ratio" else "memory",
                    "threshold": TARGET_RATIO,
                    "value": value,
                    "met": None if value is None else value <= TARGET_RATIO,
                }
            )
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark with command-line ``argv``; returns the results (also as JSON)."""
    cfg = parse_args(argv)
    E.set_quick(cfg.quick)
    t_start = time.perf_counter()
    load_start = _load()
    missing = M.api_missing()
    models = {}
    for name in cfg.models:
        print(f"[moments] {name} ...", flush=True)
        models[name] = measure_model(cfg, name, missing)
    profile = None
    if cfg.profile and "mlp" in cfg.models:
        from benchmarks.moments.profile import profile as run_profile

        print("[moments] profile of the vmap path ...", flush=True)
        profile = run_profile(cfg.quick, cfg.rounds, cfg.steps, child=not cfg.quick)
    machine = "moments-" + machine_slug() + ("-quick" if cfg.quick else "")
    res: dict[str, Any] = {
        "meta": {
            "machine": machine,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            **environment(),
            "quick": cfg.quick,
            "models": cfg.models,
            "methods": cfg.methods,
            "rounds": cfg.rounds,
            "steps": cfg.steps,
            "api_missing": missing,
            "command": " ".join(
                ["python -m benchmarks.moments", *(sys.argv[1:] if argv is None else argv)]
            ),
        },
        "models": models,
        "targets": targets(models),
        "profile": profile,
    }
    res["meta"]["wall_s"] = time.perf_counter() - t_start
    res["meta"]["load_avg"] = None if load_start is None else [load_start, _load()]
    write_report(res, cfg.out, machine)
    return res
