"""What a run measures: the optimizer pairs, the run's settings and the command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import optax

import optax_signvar as osv

LR = 1e-3
WEIGHT_DECAY = 1e-4

# Where full runs' results are committed; git ignores the ``*-quick.*`` files --quick adds.
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"

Factory = Callable[[], optax.GradientTransformation]


@dataclass(frozen=True)
class Pair:
    """One of our optimizers and the optax optimizer a user would otherwise reach for."""

    name: str
    ours: Factory
    counterpart: str
    theirs: Factory


PAIRS: tuple[Pair, ...] = (
    Pair("adam", lambda: osv.adam(LR), "optax.adam", lambda: optax.adam(LR)),
    Pair("amsgrad", lambda: osv.amsgrad(LR), "optax.amsgrad", lambda: optax.amsgrad(LR)),
    Pair("adabound", lambda: osv.adabound(LR), "optax.adam", lambda: optax.adam(LR)),
    Pair("amsbound", lambda: osv.amsbound(LR), "optax.amsgrad", lambda: optax.amsgrad(LR)),
    Pair(
        "adaboundw",
        lambda: osv.adaboundw(LR, weight_decay=WEIGHT_DECAY),
        "optax.adam",
        lambda: optax.adam(LR),
    ),
    Pair(
        "amsboundw",
        lambda: osv.amsboundw(LR, weight_decay=WEIGHT_DECAY),
        "optax.amsgrad",
        lambda: optax.amsgrad(LR),
    ),
    Pair(
        "m_sgd",
        lambda: osv.m_sgd(LR),
        "optax.sgd(momentum=0.9)",
        lambda: optax.sgd(LR, momentum=0.9),
    ),
    Pair("ssd", lambda: osv.ssd(LR), "optax.sign_sgd", lambda: optax.sign_sgd(LR)),
    Pair("m_ssd", lambda: osv.m_ssd(LR), "optax.signum", lambda: optax.signum(LR)),
    Pair("svag", lambda: osv.svag(LR), "optax.adam", lambda: optax.adam(LR)),
    Pair("m_svag", lambda: osv.m_svag(LR), "optax.adam", lambda: optax.adam(LR)),
    Pair("m_vassd", lambda: osv.m_vassd(LR), "optax.adam", lambda: optax.adam(LR)),
)
PAIR_BY_NAME = {p.name: p for p in PAIRS}

# Our optimizer -> the torch alternative a PyTorch user would pick instead.
TORCH_ALTERNATIVES = ("adam", "amsgrad", "adabound", "amsbound")


@dataclass
class Config:
    sizes: list[int]
    steps: int
    rounds: int
    warmup: int
    compile_leaves: int
    compile_large_leaves: int
    compile_repeats: int
    torch: bool
    optimizers: list[str]
    out: Path
    quick: bool
    progress: bool


def default_sizes() -> list[int]:
    if jax.default_backend() == "gpu":
        return [10**6, 10**7, 10**8]
    return [10**6, 10**7]


def _parser() -> argparse.ArgumentParser:
    import benchmarks.speed  # its docstring documents the command

    description = (benchmarks.speed.__doc__ or "").split("\n\n")[0]
    ap = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=description)
    ap.add_argument("--quick", action="store_true", help="small sizes, few steps (smoke run)")
    ap.add_argument("--sizes", help="comma-separated parameter counts, e.g. 1e6,1e7")
    ap.add_argument("--repeats", type=int, help="rounds of interleaved timing (default 9)")
    ap.add_argument("--steps", type=int, help="timed steps per round (default 20)")
    ap.add_argument("--optimizers", help=f"comma-separated subset of {','.join(PAIR_BY_NAME)}")
    ap.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for <machine>.md and .json (default benchmarks/results; "
        "--quick writes <machine>-quick.*, git-ignored there)",
    )
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def parse_args(argv: Sequence[str] | None) -> Config:
    ap = _parser()
    a = ap.parse_args(argv)
    names = a.optimizers.split(",") if a.optimizers else list(PAIR_BY_NAME)
    unknown = [n for n in names if n not in PAIR_BY_NAME]
    if unknown:
        ap.error(f"unknown optimizers {unknown}; choose from {list(PAIR_BY_NAME)}")
    if a.sizes:
        sizes = [int(float(s)) for s in a.sizes.split(",")]
    else:
        sizes = [10**5] if a.quick else default_sizes()
    return Config(
        sizes=sizes,
        steps=a.steps or (5 if a.quick else 20),
        rounds=a.repeats or (3 if a.quick else 9),
        warmup=2 if a.quick else 3,
        compile_leaves=20 if a.quick else 200,
        compile_large_leaves=2 if a.quick else 20,
        compile_repeats=1 if a.quick else 9,
        torch=not a.no_torch,
        optimizers=names,
        out=a.out,
        quick=a.quick,
        progress=not a.no_progress,
    )
