"""The command line: ``python -m benchmarks.reproduce <name> [--smoke] [--seeds N] [--budget B]``.

Every experiment is a module of this package with an optional
``add_arguments(parser)`` for its own options, and ``run(ctx) -> dict`` that computes,
prints, plots (``ctx.figure``) and returns its results; this module gives each the same
options and writes the JSON. ``all`` runs every experiment in turn.

``--budget paper`` (p1-p4, adabound) runs the papers' protocol at the papers' budgets instead
(:mod:`benchmarks.paper`, the same chunks as ``python -m benchmarks.gpu_queue``, here all of
them in one process, resuming from whatever the results folder already holds): hours on a GPU,
days on a CPU. ``--budget cpu``, the default, is the configuration described in each module.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.reproduce.output import DEFAULT_OUT, Context

# name -> what it reproduces, in the order of the issue (and of `all`); each is the module
# benchmarks.reproduce.<name with "-" as "_">, imported only when run.
EXPERIMENTS = {
    "factors": "Dissecting Adam Fig. 3: variance-adaptation factors vs relative std eta",
    "sqp": "Dissecting Adam Fig. 2: SGD vs SSD on stochastic quadratic problems",
    "reddi": "AMSGrad's online counterexample: Adam's vs AMSGrad's iterate and regret",
    "wilson": "Dissecting Adam sec. 5 / Wilson et al.: sign methods on the construction",
    "p1": "Dissecting Adam P1: Fashion-MNIST 2c2d",
    "p2": "Dissecting Adam P2 (CIFAR-10 substitute): MNIST 3c3d",
    "p3": "Dissecting Adam P3 (CIFAR-100 substitute): wide ResNet on Fashion-MNIST",
    "p4": "Dissecting Adam P4 (War and Peace substitute): char-LSTM on the KJV Bible",
    "adabound": "AdaBound/AMSBound vs Adam, AMSGrad, SGDM: ResNet on Fashion-MNIST",
    # the papers' own MNIST experiments, at their budgets on a CPU
    "adam-logreg": "Adam sec. 6.1: L2 logistic regression on MNIST, Adam vs SGD-Nesterov, AdaGrad",
    "adam-mlp": "Adam sec. 6.2: MNIST 1000-1000 ReLU network with dropout, five optimizers",
    "adam-bias": "Adam sec. 6.4: bias correction on/off, VAE on MNIST, beta1 x beta2 x rate",
    "amsgrad-mnist": "AMSGrad sec. 5: logistic regression and a 100-unit network on MNIST",
    "adabound-mnist": "AdaBound sec. 5: one-hidden-layer network on MNIST, six optimizers",
    "adabound-rates": "AdaBound sec. 3: the online example and Adam's extreme per-element rates",
}


# the experiments with a paper-budget configuration (benchmarks.paper.experiments)
PAPER_BUDGET = ("p1", "p2", "p3", "p4", "adabound")


def _module(name: str) -> Any:
    return importlib.import_module(f"benchmarks.reproduce.{name.replace('-', '_')}")


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--smoke", action="store_true", help="tiny configuration (about a minute on 2 CPU cores)"
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (default: the experiment's)"
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="directory for the JSON and PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--budget",
        choices=("cpu", "paper"),
        default="cpu",
        help="cpu: the minutes-long default; paper: the papers' protocol and budget "
        f"({', '.join(PAPER_BUDGET)}; a GPU job, see benchmarks.gpu_queue)",
    )


def parser(name: str | None = None) -> argparse.ArgumentParser:
    """The options of experiment ``name`` (its module's ``add_arguments`` included)."""
    listing = "\n".join(f"  {k:14s} {v}" for k, v in EXPERIMENTS.items())
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.reproduce",
        description="Reproduce the experiments of Dissecting Adam, AMSGrad and AdaBound.",
        epilog="experiments:\n" + listing + "\n  all            every experiment in turn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=[*EXPERIMENTS, "all"], metavar="EXPERIMENT")
    _common_arguments(p)
    if name in EXPERIMENTS:
        module = _module(name)
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
    return p


def run_paper_budget(name: str, args: argparse.Namespace) -> dict:
    """Every chunk of ``name``'s paper-budget protocol, then its report."""
    from benchmarks import gpu_queue

    if name not in PAPER_BUDGET:
        raise SystemExit(f"--budget paper exists for {', '.join(PAPER_BUDGET)}, not {name}.")
    gpu_queue.run_queue(
        [name],
        Path(args.out),
        gpu_queue.DEFAULT_WORK.expanduser(),
        time_limit=None,
        smoke=args.smoke,
        progress=not args.no_progress,
    )
    exp = gpu_queue.experiments.get(name, smoke_run=args.smoke)
    path = Path(args.out) / f"{exp.name}-paper.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_one(name: str, args: argparse.Namespace) -> dict:
    if args.budget == "paper":
        return run_paper_budget(name, args)
    module = _module(name)
    ctx = Context(name=name, args=args)
    print(f"== {name}: {EXPERIMENTS[name]}" + (" [smoke]" if args.smoke else ""), flush=True)
    start = time.perf_counter()
    results = module.run(ctx)
    return ctx.save(results, seconds=time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = next((a for a in argv if not a.startswith("-")), None)
    p = parser(name)
    args = p.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.name != "all":
        return {args.name: run_one(args.name, args)}
    # an experiment's own options keep their defaults under `all`
    common = [a for a in argv if a != "all"]
    return {n: run_one(n, parser(n).parse_args([n, *common])) for n in EXPERIMENTS}
