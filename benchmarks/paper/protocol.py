"""Dissecting Adam §6.1's protocol as a sequence of sweeps, one stage after another.

"The global step size was tuned for each method individually by first finding the maximal
stable step size by trial and error, then searching downwards. We selected the one that
yielded maximal test accuracy within a fixed number of training steps ... Experiments with
the best step size have been replicated ten times with different random seeds."

Per method, with seed 0:

1. ``tune1`` trains the method's first rates (:attr:`Method.rates`, half a decade apart,
   times every value of its other tuned hyperparameters) for the whole budget.
2. A rate is *stable* when one of its runs ends with a finite training loss below chance's
   (``log(classes)``) and a finite test accuracy. While the largest rate tried is stable,
   the next round tries the two rates above it (the largest stable rate is not found yet);
   while the best run (by final test accuracy, stable runs only; by final training loss
   where the experiment's paper plots training cost, :attr:`Experiment.select_by`) has the
   smallest rate tried, the next round tries the two rates below it (the search downwards
   has not passed the best yet). At most :data:`MAX_ROUNDS` rounds; a selection still on the
   edge of what was tried is flagged in the results.
3. ``seeds`` trains the selected hyperparameters with seeds ``1 .. n-1``; the tuning run is
   seed 0, so the results hold ``n`` seeds (10 unless the experiment says otherwise).

Every stage is a :func:`optax_signvar.research.sweep` whose result is stored as JSON in
``<out>/paper/<experiment>/<method>/<stage>.json``; the stage that comes next is a function
of the stored results only, so the protocol continues in any process, on any day.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.paper.experiments import Experiment, Method
from optax_signvar.research.sweeps import SweepResult

MAX_ROUNDS = 4
SPACING = math.sqrt(10.0)  # half a decade between two rates


@dataclasses.dataclass(frozen=True)
class Stage:
    """One sweep of the protocol: ``grid`` (hyperparameter -> values) x ``seeds``."""

    name: str
    grid: dict[str, list[float]]
    seeds: list[int]

    @property
    def runs(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) * len(self.seeds)


def slug(name: str) -> str:
    """A method's name as a folder name: ``"AdaBound (final_lr tuned)"`` ->
    ``"adabound-final-lr-tuned"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def method_dir(out: Path, exp: Experiment, method: str) -> Path:
    return Path(out) / "paper" / exp.name / slug(method)


def load_stages(out: Path, exp: Experiment, method: str) -> dict[str, SweepResult]:
    """The finished stages of ``method``: stage name -> its result."""
    folder = method_dir(out, exp, method)
    if not folder.is_dir():
        return {}
    names = [p.stem for p in folder.glob("*.json") if re.fullmatch(r"tune\d+|seeds", p.stem)]
    return {n: SweepResult.from_json(folder / f"{n}.json") for n in names}


def _round(rate: float) -> float:
    return float(f"{rate:.3g}")


def _points(exp: Experiment, tuned: Mapping[str, SweepResult]) -> list[dict[str, Any]]:
    """Every tuning run: its hyperparameters, final test accuracy, final training loss,
    stability and ``score``, what the selection maximises (:attr:`Experiment.select_by`)."""
    points = []
    for name in sorted(tuned, key=lambda n: int(n[4:])):
        res = tuned[name]
        for i, hp in enumerate(res.hyperparams):
            acc = float(res.test["accuracy"][i, -1])
            loss = float(res.train_loss[i, -1])
            stable = math.isfinite(acc) and math.isfinite(loss) and loss < exp.unstable_loss
            score = -loss if exp.select_by == "train_loss" else acc
            points.append(
                {"hyperparams": hp, "accuracy": acc, "train_loss": loss, "stable": stable}
                | {"score": score}
            )
    return points


def selection(exp: Experiment, tuned: Mapping[str, SweepResult]) -> dict[str, Any]:
    """What the tuning found so far: the best point, the rates tried, and where to go next
    (``"up"``, ``"down"``, ``"lower"`` when nothing was stable, or ``None``: done)."""
    points = _points(exp, tuned)
    rates = sorted({p["hyperparams"]["learning_rate"] for p in points})
    stable_rates = sorted({p["hyperparams"]["learning_rate"] for p in points if p["stable"]})
    stable = [p for p in points if p["stable"]]
    best = max(stable, key=lambda p: p["score"]) if stable else None
    if not stable:
        direction = "lower"
    elif stable_rates[-1] == rates[-1]:
        direction = "up"
    elif best is not None and best["hyperparams"]["learning_rate"] == rates[0]:
        direction = "down"
    else:
        direction = None
    rounds = len(tuned)
    return {
        "best": best,
        "rates": rates,
        "largest_stable_rate": stable_rates[-1] if stable_rates else None,
        "direction": direction if rounds < MAX_ROUNDS else None,
        "on_edge": direction is not None,
        "rounds": rounds,
        "tuning": points,
    }


def next_stage(exp: Experiment, method_name: str, done: Mapping[str, SweepResult]) -> Stage | None:
    """The stage to run next for ``method_name`` given the finished ones, or ``None``."""
    method = exp.methods[method_name]
    tuned = {k: v for k, v in done.items() if k.startswith("tune")}
    if not tuned:
        return _tuning(method, 1, list(method.rates))
    found = selection(exp, tuned)
    direction = found["direction"]
    if direction is not None:
        rates = found["rates"]
        if direction == "up":
            new = [rates[-1] * SPACING, rates[-1] * SPACING**2]
        else:
            new = [rates[0] / SPACING**2, rates[0] / SPACING]
        return _tuning(method, len(tuned) + 1, [_round(r) for r in new])
    if "seeds" in done or exp.seeds <= 1 or found["best"] is None:
        return None
    point = found["best"]["hyperparams"]
    return Stage("seeds", {k: [v] for k, v in point.items()}, list(range(1, exp.seeds)))


def _tuning(method: Method, round_: int, rates: list[float]) -> Stage:
    grid = {"learning_rate": rates, **{k: list(v) for k, v in method.grid.items()}}
    return Stage(f"tune{round_}", grid, [0])


def seed_runs(exp: Experiment, done: Mapping[str, SweepResult]) -> dict[str, Any] | None:
    """The selected point's runs, all seeds: ``{"hyperparams", "seeds", "steps",
    "train_loss", "test", "train_eval"}`` (arrays ``(seeds, evaluations)``), or ``None``
    while the protocol has not finished."""
    tuned = {k: v for k, v in done.items() if k.startswith("tune")}
    if not tuned:
        return None
    found = selection(exp, tuned)
    if found["best"] is None or found["direction"] is not None:
        return None
    point = found["best"]["hyperparams"]
    parts = [(res, i) for res in tuned.values() for i, hp in enumerate(res.hyperparams)]
    parts = [(res, i) for res, i in parts if res.hyperparams[i] == point][:1]
    if exp.seeds > 1:
        if "seeds" not in done:
            return None
        parts += [(done["seeds"], i) for i in range(len(done["seeds"].seeds))]

    def stack(get):
        return np.stack([get(res)[i] for res, i in parts])

    first = parts[0][0]
    return {
        "hyperparams": point,
        "seeds": [res.seeds[i] for res, i in parts],
        "steps": first.steps,
        "train_loss": stack(lambda r: r.train_loss),
        "test": {k: stack(lambda r, k=k: r.test[k]) for k in first.test},
        "train_eval": {k: stack(lambda r, k=k: r.train_eval[k]) for k in first.train_eval},
        "selection": {k: v for k, v in found.items() if k != "tuning"},
        "tuning": found["tuning"],
    }


def write_stage(
    out: Path,
    exp: Experiment,
    method: str,
    stage: Stage,
    result: SweepResult,
    meta: Mapping[str, Any],
) -> Path:
    """Stores a finished stage (the sweep's JSON plus ``meta``: device, seconds, ...)."""
    folder = method_dir(out, exp, method)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stage.name}.json"
    tmp = path.with_suffix(".tmp")
    result.to_json(tmp)
    doc = json.loads(tmp.read_text())
    doc["meta"] = dict(meta)
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path
