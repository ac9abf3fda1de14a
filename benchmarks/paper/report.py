"""A finished paper-budget experiment as ``<out>/<name>-paper.{json,png}``.

The JSON holds the budget, the substitution (if any), the paper's claim, published baselines
(P1: DeepOBS'), per method ``{"test_accuracy": {"mean", "std"}, "rate", "seeds", ...}``
(accuracies as fractions, over the seeds at the selected rate), the tuning runs, the curves,
the devices that trained it, and per pair of methods the paper compares, which is better at
the end (a difference counts when it exceeds twice its standard error over seeds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.paper import protocol
from benchmarks.paper.experiments import Experiment
from optax_signvar.research.sweeps import SweepResult

# (better-if-first, second) pairs whose order each paper discusses
PAIRS = {
    "sign": [("M-SSD", "M-SGD"), ("Adam", "M-SVAG")],
    "variance adaptation": [("M-SVAG", "M-SGD"), ("Adam", "M-SSD")],
    "bounds": [
        ("AdaBound", "Adam"),
        ("AdaBound", "SGDM"),
        ("AMSBound", "AMSGrad"),
        ("AMSBound", "SGDM"),
    ],
}


def merge_results(paths: Sequence[Path]) -> tuple[SweepResult, list[dict[str, Any]]]:
    """The runs of several sweeps of one stage (same steps) as one result, and their metas."""
    parts = [SweepResult.from_json(p) for p in paths]
    metas = [json.loads(Path(p).read_text()).get("meta", {}) for p in paths]
    first = parts[0]
    merged = SweepResult(
        names=first.names,
        hyperparams=[h for r in parts for h in r.hyperparams],
        seeds=[s for r in parts for s in r.seeds],
        steps=first.steps,
        train_loss=np.concatenate([r.train_loss for r in parts]),
        test={k: np.concatenate([r.test[k] for r in parts]) for k in first.test},
        train_eval={k: np.concatenate([r.train_eval[k] for r in parts]) for k in first.train_eval},
        complete=all(r.complete for r in parts),
    )
    return merged, metas


def _band(values: np.ndarray) -> dict[str, Any]:
    return {"mean": values.mean(0).tolist(), "std": values.std(0).tolist()}


def _final(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values[:, -1].mean()), "std": float(values[:, -1].std())}


def _method_entry(runs: dict[str, Any]) -> dict[str, Any]:
    n = len(runs["seeds"])
    entry = {
        "test_accuracy": _final(runs["test"]["accuracy"]),
        "test_loss": _final(runs["test"]["loss"]),
        "train_loss": _final(runs["train_loss"]),
        # the mean over all evaluations: lower is faster progress over the whole run
        "mean_train_loss": _final(runs["train_loss"].mean(1, keepdims=True)),
        "rate": runs["hyperparams"]["learning_rate"],
        "hyperparams": runs["hyperparams"],
        "seeds": n,
        "selection": runs["selection"],
        "tuning": runs["tuning"],
    }
    if runs["train_eval"]:
        entry["train_eval_loss"] = _final(runs["train_eval"]["loss"])
    return entry


METRICS = (("test_accuracy", 1.0), ("train_loss", -1.0), ("mean_train_loss", -1.0))


def compare(
    methods: dict[str, dict[str, Any]], pairs: Sequence[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """Per pair of ``pairs`` (default: :data:`PAIRS`) present: which is better in final test
    accuracy, final train loss and mean train loss over the run, or ``"undecided"`` within two
    standard errors."""
    found = []
    groups = {"paper": list(pairs)} if pairs else PAIRS
    for aspect, group in groups.items():
        for a, b in group:
            if a not in methods or b not in methods:
                continue
            row = {"aspect": aspect, "pair": [a, b]}
            for metric, sign in METRICS:
                if metric not in methods[a] or metric not in methods[b]:
                    continue
                ma, mb = methods[a][metric], methods[b][metric]
                diff = sign * (ma["mean"] - mb["mean"])
                se = math.sqrt(
                    ma["std"] ** 2 / methods[a]["seeds"] + mb["std"] ** 2 / methods[b]["seeds"]
                )
                verdict = a if diff > 2 * se else b if diff < -2 * se else "undecided"
                row[metric] = {"better": verdict, "difference": diff, "standard_error": se}
            found.append(row)
    return found


def write_if_complete(exp: Experiment, out: Path) -> Path | None:
    """Writes the report when every method finished its protocol; returns the JSON path."""
    doc = build(exp, out)
    if doc is None:
        return None
    path = Path(out) / f"{exp.name}-paper.json"
    path.write_text(json.dumps(doc, indent=1))
    _figure(exp, doc, path.with_suffix(".png"))
    return path


def build(exp: Experiment, out: Path) -> dict[str, Any] | None:
    """The report of ``exp`` from its stored stages, or ``None`` while a protocol is not done."""
    all_runs, devices = {}, set()
    for method in exp.methods:
        done = protocol.load_stages(out, exp, method)
        runs = protocol.seed_runs(exp, done)
        if runs is None:
            return None
        all_runs[method] = runs
        folder = protocol.method_dir(out, exp, method)
        for stage in done:
            meta = json.loads((folder / f"{stage}.json").read_text()).get("meta", {})
            devices.add(meta.get("device", "unknown"))
    methods = {m: _method_entry(r) for m, r in all_runs.items()}
    doc = {
        "experiment": exp.name,
        "title": exp.title,
        "budget": {
            "batch_size": exp.batch_size,
            "epochs": exp.epochs,
            "steps": exp.steps,
            "train_examples": exp.num_train,
            "eval_every": exp.eval_every,
            "train_eval_size": exp.train_eval_size,
            "rate_x0.1_at_fractions": list(exp.decay_at),
            "rate_decay": exp.rate_decay,
            "paper_epochs": exp.paper_epochs or exp.epochs,
            "selected_by": exp.select_by,
            "seeds": exp.seeds,
        },
        "substitution": exp.substitution,
        "paper": exp.paper,
        "baselines": dict(exp.baselines),
        "devices": sorted(devices),
        "methods": methods,
        "comparisons": compare(methods, exp.pairs),
        "curves": {
            m: {
                "steps": r["steps"].tolist(),
                "epochs": (r["steps"] / exp.steps_per_epoch).tolist(),
                "train_loss": _band(r["train_loss"]),
                "test_accuracy": _band(r["test"]["accuracy"]),
            }
            for m, r in all_runs.items()
        },
    }
    return doc


def _figure(exp: Experiment, doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, curves in doc["curves"].items():
        steps = np.asarray(curves["steps"])
        for ax, key in zip(axes, ("train_loss", "test_accuracy"), strict=True):
            mean, std = np.asarray(curves[key]["mean"]), np.asarray(curves[key]["std"])
            (line,) = ax.plot(steps, mean, label=method)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes[0].set_ylabel("training loss (mini-batches)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("test accuracy")
    for ax in axes:
        ax.set_xlabel("step")
    axes[1].legend(fontsize=8)
    devices = ", ".join(doc["devices"])
    fig.suptitle(
        f"{exp.title}\n{exp.epochs} epochs of batch {exp.batch_size}; "
        f"mean ± sd over seeds; {devices}",
        fontsize=9,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
