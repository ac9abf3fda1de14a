"""A run's settings and the command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.trees.models import SPEC_BY_NAME
from benchmarks.trees.variants import OURS

# Where full runs' results are committed; git ignores the ``*-quick.*`` files --quick adds.
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"


# --quick's defaults: a smoke run is mostly compiles, and the 1,000-leaf MLP alone compiles
# for minutes.
QUICK_MODELS = ("resnet18", "mlp200", "large40")
QUICK_OPTIMIZERS = ("adam",)


@dataclass
class Config:
    models: list[str]
    optimizers: list[str]
    rounds: int
    steps: int
    compile_repeats: int | None  # None: the default, per model
    out: Path
    quick: bool
    progress: bool

    def compile_repeats_for(self, model: str) -> int:
        """Fresh compiles of each full step: 1 (the runner's own) but on the 1,000-leaf MLP,
        the compile-time target's model, unless ``--compile-repeats`` says otherwise."""
        if self.compile_repeats is not None:
            return self.compile_repeats
        return 3 if model == "mlp1000" and not self.quick else 1


def _parser() -> argparse.ArgumentParser:
    import benchmarks.trees  # its docstring documents the command

    description = (benchmarks.trees.__doc__ or "").split("\n\n")[0]
    ap = argparse.ArgumentParser(prog="python -m benchmarks.trees", description=description)
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: tiny widths, 1 round, models {' '.join(QUICK_MODELS)} and "
        f"optimizer {' '.join(QUICK_OPTIMIZERS)} unless given",
    )
    ap.add_argument("--models", nargs="+", help=f"a subset of {' '.join(SPEC_BY_NAME)}")
    ap.add_argument("--optimizers", nargs="+", help=f"a subset of ours: {' '.join(OURS)}")
    ap.add_argument("--rounds", type=int, help="rounds of interleaved timing (default 5)")
    ap.add_argument("--steps", type=int, help="timed steps per round (default 10)")
    ap.add_argument(
        "--compile-repeats",
        type=int,
        help="fresh compiles per full step (default 3 on mlp1000, 1 elsewhere)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for trees-<machine>.md and .json (default benchmarks/results; "
        "--quick writes trees-<machine>-quick.*, git-ignored there)",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _names(
    ap: argparse.ArgumentParser,
    given: list[str] | None,
    known: Sequence[str],
    default: Sequence[str],
) -> list[str]:
    """``--models a,b`` and ``--models a b`` both work; none given: ``default``."""
    names = [n for arg in given or [] for n in arg.split(",") if n] or list(default)
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown names {unknown}; choose from {list(known)}")
    return names


def parse_args(argv: Sequence[str] | None) -> Config:
    ap = _parser()
    a = ap.parse_args(argv)
    return Config(
        models=_names(ap, a.models, list(SPEC_BY_NAME), QUICK_MODELS if a.quick else SPEC_BY_NAME),
        optimizers=_names(ap, a.optimizers, OURS, QUICK_OPTIMIZERS if a.quick else OURS),
        rounds=a.rounds or (1 if a.quick else 5),
        steps=a.steps or (2 if a.quick else 10),
        compile_repeats=a.compile_repeats,
        out=a.out,
        quick=a.quick,
        progress=not a.no_progress,
    )
