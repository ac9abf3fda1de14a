"""What the papers' MNIST experiments share: the protocol run in this process, the report, the
figure and the claim checks (``adam-logreg``, ``adam-mlp``, ``amsgrad-mnist``,
``adabound-mnist``; their setups: :mod:`benchmarks.paper.mnist`).

Each experiment is one or more :class:`benchmarks.paper.experiments.Experiment`, whose rate
search and seeds (:mod:`benchmarks.paper.protocol`) run here as
:func:`benchmarks.gpu_queue.run_experiments` does on a GPU: every stage a vmapped
:func:`optax_signvar.research.sweep`, stored as JSON under ``<out>/paper/<name>/`` (committed
with the results), a run longer than 8 minutes in checkpointed segments
(``~/.cache/optax_signvar/gpu_queue``). A command that is stopped continues where the stored
stages end; a finished experiment is only reported again. ``--smoke`` stores its stages in a
temporary folder.

The JSON (``<out>/<name>.json``) holds, beside the command and machine: ``"budget"``
(``"paper"`` when every run went the paper's epochs, else ``"reduced"``), ``"setup"``
(batch, epochs, steps, seeds, the selection metric), ``"methods"`` (per method the selected
rate and, over the seeds, final test accuracy, final and mean training loss as ``{"mean",
"std"}``, and every tuning run), ``"comparisons"`` (per pair the paper compares: which is
better by more than two standard errors, or ``"undecided"``), ``"claims"`` (the paper's
claims checked on these numbers), and the curves.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import gpu_queue
from benchmarks.paper import report
from benchmarks.paper.experiments import Experiment

# (claim, [(a, b), ...], metric, what a passing verdict needs): "better" a beats b by more
# than two standard errors on every pair; "not worse" b never beats a so.
Claim = tuple[str, Sequence[tuple[str, str]], str, str]


def verdict(doc: dict, a: str, b: str, metric: str) -> str:
    """``"better"``, ``"worse"``, ``"undecided"`` (within two standard errors) or
    ``"absent"`` (not both run): ``a`` against ``b`` on ``metric``."""
    for row in doc["comparisons"]:
        if row["pair"] == [a, b]:
            better = row[metric]["better"]
            return "better" if better == a else "worse" if better == b else "undecided"
    return "absent"


def check_claims(doc: dict, claims: Sequence[Claim]) -> list[dict]:
    """Each claim's verdicts; ``"holds"`` is ``None`` where a method was not run (smoke)."""
    found = []
    for text, pairs, metric, needs in claims:
        verdicts = {f"{a} vs {b}": verdict(doc, a, b, metric) for a, b in pairs}
        ok = None
        if "absent" not in verdicts.values():
            ok = all(
                v == "better" if needs == "better" else v != "worse" for v in verdicts.values()
            )
        names = {m for pair in pairs for m in pair}
        # one seed has no spread: a verdict is then the ordering of single runs
        single = any(doc.get("methods", {}).get(m, {}).get("seeds", 2) < 2 for m in names)
        found.append(
            {"claim": text, "metric": metric, "needs": needs, "verdicts": verdicts, "holds": ok}
            | {"evidence": "single runs (one seed)" if single else "two standard errors"}
        )
    return found


def run(
    ctx: Any,
    exps: Sequence[Experiment],
    claims: Callable[[str], Sequence[Claim]],
) -> dict:
    """Runs the protocols of ``exps`` to the end, prints and plots them, returns the results
    (one experiment: its report; several: each under ``"parts"``, their methods merged as
    ``"<part>: <method>"``). ``claims(part)`` are the claims checked on that part."""
    if ctx.smoke:
        stages = Path(tempfile.mkdtemp(prefix=f"{ctx.name}-"))
        work = stages / "work"
    else:
        stages = Path(ctx.args.out)
        work = gpu_queue.DEFAULT_WORK.expanduser()
    gpu_queue.run_experiments(exps, stages, work, progress=not ctx.args.no_progress)
    docs = {}
    for exp in exps:
        doc = report.build(exp, stages)
        if doc is None:  # the protocol always finishes in run_experiments
            raise RuntimeError(f"{exp.name}: the protocol did not finish")
        setup = doc.pop("budget")
        ledger = [e for e in gpu_queue.read_ledger(stages) if e["experiment"] == exp.name]
        doc = {
            "budget": "paper" if setup["epochs"] >= setup["paper_epochs"] else "reduced",
            "setup": setup,
            # what training took (compiles included), whichever call of the command trained
            "train_seconds": round(sum(e["wall_s"] for e in ledger), 1),
            **doc,
            "claims": check_claims(doc, claims(exp.name)),
        }
        docs[exp.name] = doc
        _print(doc)
    _figure(ctx, docs)
    if len(docs) == 1:
        return next(iter(docs.values()))
    return {
        "budget": "paper" if all(d["budget"] == "paper" for d in docs.values()) else "reduced",
        "train_seconds": round(sum(d["train_seconds"] for d in docs.values()), 1),
        "parts": docs,
        "methods": {f"{p}: {m}": e for p, d in docs.items() for m, e in d["methods"].items()},
        "claims": [c | {"part": p} for p, d in docs.items() for c in d["claims"]],
    }


def _print(doc: dict) -> None:
    setup = doc["setup"]
    print(
        f"{doc['title']}\n{setup['epochs']} epochs ({setup['steps']} steps of batch "
        f"{setup['batch_size']}), {setup['seeds']} seeds, rate selected by "
        f"{setup['selected_by']}; budget: {doc['budget']}"
    )
    print(f"{'method':26s} {'rate':>9s} {'train loss':>19s} {'mean train loss':>19s} test acc")
    for name, m in doc["methods"].items():
        tl, ml, acc = m["train_loss"], m["mean_train_loss"], m["test_accuracy"]
        edge = " (search stopped after its last round)" if m["selection"]["on_edge"] else ""
        print(
            f"{name:26s} {m['rate']:9.3g} {tl['mean']:9.4g} ± {tl['std']:7.2g} "
            f"{ml['mean']:9.4g} ± {ml['std']:7.2g} {100 * acc['mean']:6.2f} ± "
            f"{100 * acc['std']:.2f} %{edge}"
        )
    for c in doc["claims"]:
        said = {True: "holds", False: "DOES NOT HOLD", None: "not checked"}[c["holds"]]
        print(f"  {said}: {c['claim']} ({c['verdicts']}; {c['evidence']})")


def _figure(ctx: Any, docs: dict[str, dict]) -> None:
    fig, axes = ctx.figure(len(docs), 2, figsize=(12, 4.2 * len(docs)), squeeze=False)
    for row, doc in zip(axes, docs.values(), strict=True):
        for name, curves in doc["curves"].items():
            x = np.asarray(curves["epochs"])
            style = "--" if "optax" in name else "-"
            for ax, key in zip(row, ("train_loss", "test_accuracy"), strict=True):
                mean = np.asarray(curves[key]["mean"], float)
                std = np.asarray(curves[key]["std"], float)
                (line,) = ax.plot(x, mean, style, label=name)
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        setup = doc["setup"]
        row[0].set_title(doc["title"], fontsize=9)
        row[0].set_ylabel("training loss (mean of the epoch's mini-batches)")
        row[0].set_yscale("log")
        row[1].set_ylabel("test accuracy")
        row[1].set_title(
            f"{setup['seeds']} seeds, mean ± sd; rate by {setup['selected_by']}; "
            f"budget: {doc['budget']} ({setup['epochs']} of {setup['paper_epochs']} epochs)",
            fontsize=9,
        )
        lo = min(np.nanmin(c["test_accuracy"]["mean"]) for c in doc["curves"].values())
        row[1].set_ylim(max(lo, 0.8) if lo > 0.5 else lo, None)
        for ax in row:
            ax.set_xlabel("epoch")
        row[1].legend(fontsize=7)
    devices = sorted({d for doc in docs.values() for d in doc["devices"]})
    if devices == ["cpu"]:
        from benchmarks.speed import cpu_cores, cpu_model

        devices = [f"{cpu_model()} ({cpu_cores()} cores), CPU only"]
    fig.suptitle(f"{ctx.name}: trained on {', '.join(devices)}", fontsize=10)
