"""The papers' budgets in chunks: ``python -m benchmarks.gpu_queue [--smoke] [--out DIR]``.

Runs the next chunks of the paper-budget experiments (:mod:`benchmarks.paper`) that fit in
``--time-limit`` seconds, each a :func:`optax_signvar.research.sweep` expected to finish in
under 8 minutes on one H100, and writes their results in place: a finished stage of the
protocol to ``<out>/paper/<experiment>/<method>/<stage>.json``, a finished experiment to
``<out>/<experiment>-paper.{json,png}``. Commit what it wrote: the next session with a GPU
continues from there. Before each chunk it prints the chunk's expected time, after it what is
left.

**Chunks.** A stage whose runs fit in 8 minutes together is one chunk; otherwise its grid
points (or seeds) are split into groups that do, each group a chunk whose finished runs are
stored as ``<stage>.g<k>.json`` until the stage is whole. A single run longer than 8 minutes
(P3, P4) is cut into segments at evaluation steps (``sweep(..., until=...)``): those resume
from the sweep's checkpoint in ``--work`` (default ``~/.cache/optax_signvar/gpu_queue``),
which survives between commands on the same machine only; on a fresh machine the segment
starts again from step 0.

**Estimates** are ``compile + runs x steps x ms per run-step``: the median measured by earlier
chunks of the same experiment on the same kind of device (``<out>/paper/ledger.json``, one
entry per chunk), else the experiment's planning figure for an H100 (x500 on a CPU).

**On a GPU machine without the data sets**: ``python -m benchmarks.gpu_queue --pack-data
.data`` here (Fashion-MNIST and MNIST gzipped, the cleaned KJV: about 30 MB), carry ``.data``
along (it is git-ignored) and run there with ``OPTAX_SIGNVAR_DATA=.data``::

    OPTAX_SIGNVAR_DATA=.data python3 -m benchmarks.gpu_queue --time-limit 540

``--smoke`` runs the same path end to end on CPU in about a minute (P1's protocol on the
embedded digits, a small budget, into a temporary folder unless ``--out`` is given); CI runs
it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gzip
import itertools
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.paper import experiments, protocol, report
from benchmarks.paper.experiments import Experiment
from benchmarks.paper.protocol import Stage

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "reproduce"
DEFAULT_WORK = Path("~/.cache/optax_signvar/gpu_queue")
CHUNK_LIMIT_S = 480.0
# the order in which the experiments advance: the cheapest evidence first
ORDER = ("p1", "p2", "adabound", "p4", "p3")
CPU_FACTOR = 500.0
COMPILE_S = {"gpu": 60.0, "cpu": 30.0}


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One sweep call: a group of a stage's runs, possibly up to ``until`` only."""

    exp: Experiment
    method: str
    stage: Stage
    group: int
    groups: int
    grid: dict[str, list[float]]
    seeds: list[int]
    start: int
    until: int | None
    expected_s: float
    layout: list = dataclasses.field(default_factory=list)  # all groups of the stage

    @property
    def name(self) -> str:
        part = f".g{self.group}" if self.groups > 1 else ""
        return f"{self.exp.name}/{protocol.slug(self.method)}/{self.stage.name}{part}"

    @property
    def runs(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) * len(self.seeds)

    @property
    def stop(self) -> int:
        return self.exp.steps if self.until is None else self.until


# --------------------------------------------------------------------------- #
# Estimates.
# --------------------------------------------------------------------------- #


def device_kind() -> str:
    import jax

    return str(jax.devices()[0].device_kind)


def _ledger_path(out: Path) -> Path:
    return Path(out) / "paper" / "ledger.json"


def read_ledger(out: Path) -> list[dict[str, Any]]:
    path = _ledger_path(out)
    return json.loads(path.read_text()) if path.exists() else []


def _append_ledger(out: Path, entry: dict[str, Any]) -> None:
    path = _ledger_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [*read_ledger(out), entry]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1))
    tmp.replace(path)


def rates(exp: Experiment, kind: str, ledger: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """``(seconds per run-step, compile seconds)`` for ``exp`` on a device of ``kind``."""
    mine = [e for e in ledger if e["experiment"] == exp.name and e["device"] == kind]
    gpu = kind.lower() != "cpu"
    if mine:
        per = float(np.median([e["train_s"] / max(1, e["runs"] * e["steps"]) for e in mine]))
        return per, float(np.median([e["compile_s"] for e in mine]))
    if not gpu and exp.cpu_ms_per_run_step is not None:
        return exp.cpu_ms_per_run_step / 1000.0, COMPILE_S["cpu"]
    per = exp.h100_ms_per_run_step / 1000.0 * (1.0 if gpu else CPU_FACTOR)
    return per, COMPILE_S["gpu" if gpu else "cpu"]


# --------------------------------------------------------------------------- #
# Planning.
# --------------------------------------------------------------------------- #


def _split(stage: Stage, per_chunk: int) -> list[tuple[dict[str, list[float]], list[int]]]:
    """The stage's runs in groups of at most ``per_chunk`` (each group a product grid): the
    seeds of a one-point stage, else the rates of each combination of the other values."""
    if stage.runs <= per_chunk:
        return [(stage.grid, stage.seeds)]
    if stage.runs == len(stage.seeds):
        return [
            (stage.grid, stage.seeds[i : i + per_chunk])
            for i in range(0, len(stage.seeds), per_chunk)
        ]
    others = [k for k in stage.grid if k != "learning_rate"]
    step = max(1, per_chunk // len(stage.seeds))
    rates_ = stage.grid["learning_rate"]
    groups = []
    for combo in itertools.product(*(stage.grid[k] for k in others)):
        fixed = {k: [v] for k, v in zip(others, combo, strict=True)}
        for i in range(0, len(rates_), step):
            groups.append(({"learning_rate": rates_[i : i + step], **fixed}, stage.seeds))
    return groups


def _progress_file(work: Path, chunk_name: str) -> Path:
    return Path(work).expanduser() / chunk_name / "progress.json"


def method_chunks(
    exp: Experiment, method: str, out: Path, work: Path, kind: str, ledger: list[dict]
) -> list[Chunk]:
    """The chunks of ``method``'s next stage that are not done yet (empty: none is known)."""
    stage = protocol.next_stage(exp, method, protocol.load_stages(out, exp, method))
    if stage is None:
        return []
    per, compile_s = rates(exp, kind, ledger)
    run_s = per * exp.steps
    per_chunk = max(1, int((CHUNK_LIMIT_S - compile_s) // run_s)) if run_s > 0 else stage.runs
    folder = protocol.method_dir(out, exp, method)
    frozen = folder / f"{stage.name}.groups.json"
    # a stage keeps the grouping its first chunk ran with, whatever later estimates say
    groups = json.loads(frozen.read_text()) if frozen.exists() else _split(stage, per_chunk)
    chunks = []
    for g, (grid, seeds) in enumerate(groups):
        base = Chunk(exp, method, stage, g, len(groups), grid, seeds, 0, None, 0.0, groups)
        if len(groups) > 1 and (folder / f"{stage.name}.g{g}.json").exists():
            continue
        chunks.append(_segment(base, per, compile_s, work))
    return chunks


def _checkpointed_step(work: Path, chunk_name: str) -> int:
    """The step the chunk's sweep checkpoint holds (0 without one). Read from the checkpoint
    itself, not only from the progress file a finished segment writes, so that a command
    killed mid-segment (the device's time limit) also continues from its last evaluation."""
    progress = _progress_file(work, chunk_name)
    state = progress.parent / "state"
    if state.exists():
        import jax.numpy as jnp

        from optax_signvar.checkpoint import restore_state

        try:
            restored = restore_state(state, {"step": jnp.zeros((), jnp.int32)}, partial=True)
            return int(restored["step"])
        except (ValueError, FileNotFoundError):  # unreadable: the sweep starts again too
            return 0
    return json.loads(progress.read_text())["step"] if progress.exists() else 0


def _segment(chunk: Chunk, per: float, compile_s: float, work: Path) -> Chunk:
    """``chunk`` from where its checkpoint stands, to the evaluation step that ends it
    within :data:`CHUNK_LIMIT_S` (at least one evaluation interval)."""
    exp = chunk.exp
    start = _checkpointed_step(work, chunk.name)
    affordable = (CHUNK_LIMIT_S - compile_s) / max(per * chunk.runs, 1e-12)
    until = None
    if start + affordable < exp.steps:
        evals = max(1, int((start + affordable) // exp.eval_every) - start // exp.eval_every)
        until = min(exp.steps, (start // exp.eval_every + evals) * exp.eval_every)
        until = None if until >= exp.steps else until
    stop = exp.steps if until is None else until
    expected = compile_s + per * chunk.runs * (stop - start)
    return dataclasses.replace(chunk, start=start, until=until, expected_s=expected)


def plan(names: Sequence[str], out: Path, work: Path, kind: str, smoke: bool) -> list[Chunk]:
    """The chunks that can run now, in :data:`ORDER` of the experiments."""
    return plan_experiments([experiments.get(n, smoke_run=smoke) for n in names], out, work, kind)


def plan_experiments(exps: Sequence[Experiment], out: Path, work: Path, kind: str) -> list[Chunk]:
    """The chunks of ``exps`` that can run now, in their order."""
    ledger = read_ledger(out)
    chunks = []
    for exp in exps:
        for method in exp.methods:
            chunks += method_chunks(exp, method, out, work, kind, ledger)
    return chunks


def run_experiments(
    exps: Sequence[Experiment], out: Path, work: Path, *, progress: bool = True
) -> list[dict[str, Any]]:
    """Every chunk of ``exps`` in this process until their protocols are done, resuming from
    what ``out`` and ``work`` hold (the path of the CPU-budget experiments of
    ``python -m benchmarks.reproduce``). Returns the ledger entries of this call."""
    kind = device_kind()
    done = []
    while chunks := plan_experiments(exps, out, work, kind):
        chunk = chunks[0]
        print(
            f"chunk {chunk.name}: {chunk.runs} runs, steps {chunk.start}-{chunk.stop}", flush=True
        )
        done.append(run_chunk(chunk, out, work, progress))
    return done


# --------------------------------------------------------------------------- #
# Running.
# --------------------------------------------------------------------------- #

_DATA: dict[str, Any] = {}


def _data(exp: Experiment) -> tuple[Any, ...]:
    if exp.name not in _DATA:
        x_train, y_train, x_test, y_test = exp.load()
        if len(x_train) < exp.num_train:
            raise ValueError(
                f"{exp.name}: {len(x_train)} training examples, the budget assumes "
                f"{exp.num_train}; the data set differs from the one the experiment was made for."
            )
        _DATA[exp.name] = (x_train[: exp.num_train], y_train[: exp.num_train], x_test, y_test)
    return _DATA[exp.name]


def run_chunk(chunk: Chunk, out: Path, work: Path, progress: bool = True) -> dict[str, Any]:
    """Trains ``chunk``; stores its runs when they are finished; returns its ledger entry."""
    from optax_signvar.research import sweep

    exp = chunk.exp
    ckpt = _progress_file(work, chunk.name).parent
    if chunk.groups > 1:
        folder = protocol.method_dir(out, exp, chunk.method)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{chunk.stage.name}.groups.json").write_text(json.dumps(chunk.layout))
    static = {"optimizer": exp.methods[chunk.method].optimizer, "boundaries": exp.boundaries}
    if exp.rate_decay != "constant":  # (absent otherwise: the sweeps' hashes stay as they were)
        static["decay"] = exp.rate_decay
    static.update(exp.methods[chunk.method].static)
    t0 = time.perf_counter()
    result = sweep(
        experiments.scheduled,
        exp.init_fn,
        exp.loss_fn,
        _data(exp),
        grid=chunk.grid,
        seeds=chunk.seeds,
        steps=exp.steps,
        batch_size=exp.batch_size,
        eval_every=exp.eval_every,
        static=static,
        eval_fn=exp.eval_fn,
        checkpoint_dir=ckpt,
        until=chunk.until,
        train_eval_size=exp.train_eval_size,
        loss_key=exp.loss_takes_key,
        progress=progress,
    )
    wall = time.perf_counter() - t0
    entry = {
        "chunk": chunk.name,
        "experiment": exp.name,
        "device": device_kind(),
        "runs": chunk.runs,
        "steps": chunk.stop - chunk.start,
        "compile_s": round(result.seconds["compile"], 2),
        "train_s": round(result.seconds["train"], 2),
        "wall_s": round(wall, 2),
        "expected_s": round(chunk.expected_s, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _append_ledger(out, entry)
    if not result.complete:
        _progress_file(work, chunk.name).write_text(json.dumps({"step": chunk.stop}))
        return entry
    _store(chunk, result, out, entry)
    shutil.rmtree(ckpt, ignore_errors=True)
    if exp.queue_report and not (Path(out) / f"{exp.name}-paper.json").exists():
        report.write_if_complete(exp, out)
    return entry


def _store(chunk: Chunk, result: Any, out: Path, entry: dict[str, Any]) -> None:
    """The finished runs: the stage when whole, else one group of it."""
    exp, stage = chunk.exp, chunk.stage
    meta = {"device": entry["device"], "chunks": [entry], "grid": stage.grid}
    if chunk.groups == 1:
        protocol.write_stage(out, exp, chunk.method, stage, result, meta)
        return
    folder = protocol.method_dir(out, exp, chunk.method)
    group = dataclasses.replace(stage, name=f"{stage.name}.g{chunk.group}")
    protocol.write_stage(out, exp, chunk.method, group, result, meta)
    paths = [folder / f"{stage.name}.g{g}.json" for g in range(chunk.groups)]
    if all(p.exists() for p in paths):
        merged, metas = report.merge_results(paths)
        meta["chunks"] = [c for m in metas for c in m.get("chunks", [])]
        protocol.write_stage(out, exp, chunk.method, stage, merged, meta)
        for p in [*paths, folder / f"{stage.name}.groups.json"]:
            p.unlink()


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def run_queue(
    names: Sequence[str],
    out: Path,
    work: Path,
    *,
    time_limit: float | None,
    smoke: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Runs chunks in order while the next one's estimate fits in what is left of
    ``time_limit`` (``None``: until nothing is left); writes each finished experiment's
    report. Returns the ledger entries of this call."""
    kind = device_kind()
    start = time.perf_counter()
    done: list[dict[str, Any]] = []
    while True:
        chunks = plan(names, out, work, kind, smoke)
        if not chunks:
            break
        chunk = chunks[0]
        left = None if time_limit is None else time_limit - (time.perf_counter() - start)
        if left is not None and chunk.expected_s > left:
            print(
                f"next: {chunk.name}, expected {_minutes(chunk.expected_s)} on {kind}: "
                f"more than the {_minutes(max(left, 0))} left; stopping.",
                flush=True,
            )
            break
        span = f"steps {chunk.start}-{chunk.stop} of {chunk.exp.steps}"
        print(
            f"chunk {chunk.name}: {chunk.runs} runs, {span}, expected "
            f"{_minutes(chunk.expected_s)} on {kind}",
            flush=True,
        )
        done.append(run_chunk(chunk, out, work, progress))
        rest = plan(names, out, work, kind, smoke)
        print(
            f"  took {_minutes(done[-1]['wall_s'])}; left now: {len(rest)} chunks known, "
            f"{_minutes(sum(c.expected_s for c in rest))} (later stages not counted)",
            flush=True,
        )
    return done


# --------------------------------------------------------------------------- #
# Data for a machine without the data sets.
# --------------------------------------------------------------------------- #


def pack_data(dest: Path) -> list[Path]:
    """Copies Fashion-MNIST, MNIST (gzipped) and the cleaned KJV under ``dest`` in the
    layout :mod:`benchmarks.reproduce.data` and ``text`` read from ``$OPTAX_SIGNVAR_DATA``."""
    from benchmarks.reproduce import data, text

    dest = Path(dest)
    written = []
    names = [f + ".gz" for f in data._FILES.values()]
    for name in names:
        target = dest / "fashion-mnist" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data.FASHION_MNIST_DIR / name, target)
        written.append(target)
    for raw in data._FILES.values():
        target = dest / data.MNIST_SUBDIR / (raw + ".gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(data.mnist_dir() / raw, "rb") as f, gzip.open(target, "wb") as g:
            shutil.copyfileobj(f, g)
        written.append(target)
    target = dest / text.CACHE_NAME
    target.write_text(text.load_kjv(), encoding="utf-8")
    written.append(target)
    return written


# --------------------------------------------------------------------------- #
# Command line.
# --------------------------------------------------------------------------- #


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_queue",
        description="Run the next chunks of the paper-budget reproductions.",
    )
    p.add_argument("--smoke", action="store_true", help="the CPU smoke path (about a minute)")
    p.add_argument("--out", default=None, help=f"results folder (default {DEFAULT_OUT})")
    p.add_argument("--work", default=None, help=f"checkpoints (default {DEFAULT_WORK})")
    p.add_argument(
        "--time-limit",
        type=float,
        default=540.0,
        help="seconds: start no chunk whose estimate exceeds what is left (0: no limit)",
    )
    p.add_argument(
        "--experiments", default=",".join(ORDER), help=f"comma list (default {','.join(ORDER)})"
    )
    p.add_argument("--list", action="store_true", help="print the chunks that can run now")
    p.add_argument(
        "--plan-for",
        metavar="KIND",
        default=None,
        help='with --list: plan for this device kind, e.g. "NVIDIA H100 80GB HBM3"',
    )
    p.add_argument("--pack-data", metavar="DIR", help="copy the data sets into DIR and exit")
    p.add_argument(
        "--bundle",
        metavar="FILE",
        default=None,
        help="afterwards, pack the results folder into this .tar.gz (one file to bring back "
        "from a machine that returns few files)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def total_estimate(exp: Experiment, kind: str, ledger: Sequence[dict[str, Any]]) -> float:
    """Seconds for ``exp``'s whole protocol on ``kind`` if one tuning round suffices: every
    method's first grid with seed 0, then ``seeds - 1`` runs, one compilation per method
    and stage (more rounds add to it)."""
    per, compile_s = rates(exp, kind, ledger)
    total = 0.0
    for method in exp.methods.values():
        runs = len(method.rates) * math.prod(len(v) for v in method.grid.values())
        total += per * exp.steps * (runs + exp.seeds - 1) + 2 * compile_s
    return total


def bundle(out: Path, target: Path) -> None:
    """``out``'s JSON and PNG files as one ``.tar.gz`` (paths relative to ``out``)."""
    import tarfile

    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(Path(out).rglob("*")):
            if path.is_file() and path.suffix in (".json", ".png"):
                tar.add(path, arcname=str(path.relative_to(out)))


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parser().parse_args(argv)
    if args.pack_data:
        for path in pack_data(Path(args.pack_data)):
            print(path)
        return []
    names = [n for n in args.experiments.split(",") if n]
    unknown = sorted(set(names) - set(experiments.EXPERIMENTS))
    if unknown:
        raise SystemExit(f"unknown experiments {unknown}; choose from {list(ORDER)}")
    if args.smoke:
        names = ["p1"]
    out = Path(
        args.out or (tempfile.mkdtemp(prefix="gpu_queue_smoke_") if args.smoke else DEFAULT_OUT)
    )
    work = Path(args.work or (out / "work" if args.smoke else DEFAULT_WORK)).expanduser()
    if args.list:
        kind = args.plan_for or device_kind()
        for c in plan(names, out, work, kind, args.smoke):
            print(
                f"{c.name}: {c.runs} runs, steps {c.start}-{c.stop}, expected "
                f"{_minutes(c.expected_s)}"
            )
        ledger = read_ledger(out)
        for name in names:
            exp = experiments.get(name, smoke_run=args.smoke)
            hours = total_estimate(exp, kind, ledger) / 3600
            print(f"{exp.name}: the whole protocol ~{hours:.1f} h on {kind} (one tuning round)")
        return []
    limit = None if args.smoke or args.time_limit <= 0 else args.time_limit
    entries = run_queue(
        names, out, work, time_limit=limit, smoke=args.smoke, progress=not args.no_progress
    )
    print(f"results in {out}", flush=True)
    if args.bundle:
        bundle(out, Path(args.bundle))
        print(f"bundled into {args.bundle}", flush=True)
    return entries


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
