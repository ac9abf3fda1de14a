"""Derived figures: optimizer cost over the floor, ratios to optax.adam and to the tree
layout (medians of per-round ratios), and the issue's targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.speed.harness import median
from benchmarks.trees.variants import OURS

FLOOR, ADAM = "sgd (floor)", "optax.adam"

# (key, model, figure, threshold, what): the targets, each checked for our
# optimizers in layout="packed" and on packed parameters.
TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    ("cost_1000", "mlp1000", "step_cost_vs_adam", 0.25, "1,000-leaf MLP: full-step cost"),
    ("cost_200", "mlp200", "step_cost_vs_adam", 0.6, "200-leaf MLP: full-step cost"),
    ("large", "large40", "step_vs_tree", 1.05, "40 large leaves: full step / layout='tree'"),
    ("compile_1000", "mlp1000", "compile_vs_adam", 0.5, "1,000-leaf MLP: compile time"),
)
TARGET_LAYOUTS = ("packed", "packed params")


def _cost_ratio(xs: Sequence[float], floor: Sequence[float], ref: Sequence[float]) -> float:
    """Median over rounds of ``(x - floor) / (ref - floor)``."""
    return median([(x - f) / (r - f) for x, f, r in zip(xs, floor, ref, strict=True)])


def _ratio(xs: Sequence[float], ys: Sequence[float]) -> float:
    return median([x / y for x, y in zip(xs, ys, strict=True)])


def _compile_times(row: dict[str, Any]) -> list[float]:
    return [a + b for a, b in zip(row["compile_lower_s"], row["compile_xla_s"], strict=True)]


def _compile_ratio(xs: list[float], ys: list[float]) -> float:
    """Median of per-repeat ratios; of the medians where one was compiled only once (see
    ``measure.COMPILE_REPEAT_LIMIT_S``)."""
    if len(xs) == len(ys):
        return _ratio(xs, ys)
    return median(xs) / median(ys)


def _tree_counterpart(row: dict[str, Any]) -> str | None:
    """The row a packed one is compared with: the same optimizer on the unpacked tree."""
    if row["family"] in OURS and (row["layout"] == "packed" or row["packed_params"]):
        return f"{row['family']} [tree]"
    if row["packed_params"]:
        return FLOOR if row["family"] == "sgd" else row["family"]
    return None


def _step_figures(r: dict[str, Any], by: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The full step's derived figures (None where the row's full step was skipped)."""
    floor, adam, tree = by[FLOOR], by[ADAM], _tree_counterpart(r)
    if any(x["step_s"] is None for x in (r, floor, adam)):
        return dict.fromkeys(("step_cost_ms", "step_cost_vs_adam", "compile_vs_adam"))
    diffs = [x - f for x, f in zip(r["step_s"], floor["step_s"], strict=True)]
    return {
        "step_cost_ms": 1e3 * median(diffs),
        "step_cost_vs_adam": _cost_ratio(r["step_s"], floor["step_s"], adam["step_s"]),
        "compile_vs_adam": _compile_ratio(_compile_times(r), _compile_times(adam)),
        "step_vs_tree": _ratio(r["step_s"], by[tree]["step_s"])
        if tree and by[tree]["step_s"]
        else None,
    }


def derive(rows: list[dict[str, Any]]) -> None:
    """Adds the derived figures to every row of one model, in place."""
    by = {r["variant"]: r for r in rows}
    floor, adam = by[FLOOR], by[ADAM]
    for r in rows:
        tree = _tree_counterpart(r)
        r["vs_tree"] = tree
        r["step_vs_tree"] = None
        r.update(_step_figures(r, by))
        diffs = [x - f for x, f in zip(r["opt_s"], floor["opt_s"], strict=True)]
        r["opt_cost_ms"] = 1e3 * median(diffs)
        r["opt_cost_vs_adam"] = _cost_ratio(r["opt_s"], floor["opt_s"], adam["opt_s"])
        r["opt_vs_tree"] = _ratio(r["opt_s"], by[tree]["opt_s"]) if tree else None


def _row_for(rows: list[dict[str, Any]], family: str, layout: str) -> dict[str, Any] | None:
    name = f"{family} [{layout}]"
    return next((r for r in rows if r["variant"] == name), None)


def targets(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every target for every one of our optimizers and packed kind that was measured."""
    out = []
    for key, model, figure, threshold, what in TARGETS:
        if model not in models:
            continue
        for layout in TARGET_LAYOUTS:
            for family in OURS:
                row = _row_for(models[model]["rows"], family, layout)
                if row is None:
                    continue
                value = row[figure]  # None: the row's full step was skipped
                out.append(
                    {
                        "target": key,
                        "what": what,
                        "model": model,
                        "figure": figure,
                        "threshold": threshold,
                        "variant": row["variant"],
                        "value": value,
                        "met": None if value is None else bool(value <= threshold),
                    }
                )
    return out
