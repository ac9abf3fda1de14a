"""What the image-classification reproductions (p1, p2, p3, adabound) share.

* :func:`make_problem`: a data set and a network as the pure ``loss_fn(params, key)`` (cross
  entropy of a mini-batch drawn with the key, uniformly *with* replacement from the training
  subset), ``init_params(key)`` and ``eval_fn(params)`` -> ``{"train_loss", "test_loss",
  "test_acc"}`` (on a fixed training subset and the test subset, in chunks) that
  :func:`optax_signvar.research.ablate` trains and records.
* :class:`Scale` and :func:`add_arguments` / :func:`scale_of`: the options every experiment
  takes (``--steps --batch-size --train-size --test-size --train-eval-size --grid --records``)
  over its own defaults, and the ``--smoke`` configuration (sklearn's digits, no download).
* :func:`compare`: :func:`benchmarks.reproduce.tuning.tune_and_repeat` (a constant rate per
  method tuned on a log grid with one seed, selected by final test accuracy, then all seeds at
  the best rate), the final table printed, and :func:`plot_comparison` for the figure.
* :func:`orderings`, :func:`check_claims`: rankings, one-aspect comparisons (Dissecting
  Adam's: does the sign help? does variance adaptation? does it matter whether the variance
  comes from moving averages or from the mini-batch?) and a paper's findings checked on the
  final table; :func:`run_comparison` / :func:`run_dissecting` do all of the above.
* :func:`step_seconds`: the wall time of one training step per method (the cost of the
  mini-batch variance next to the moving averages').

The grid is given as multipliers of a per-method center rate (sign methods and raw-gradient
methods live on scales 100x apart), so ``--grid 0.01,0.03,0.1,0.3,1,3,10`` is a 3-decade
log grid around each method's usual rate.

Images are kept as uint8 inside the compiled functions: the data are closed-over constants of
every compilation (one per method and rate), and 4x fewer bytes compile faster.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_signvar as osv
from benchmarks.reproduce import data, nets, tuning
from optax_signvar.minibatch import per_example_grad_moments

# --------------------------------------------------------------------------- #
# The problem: loss, initialization, evaluation.
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Problem:
    """A data set and a network as :func:`optax_signvar.research.ablate` takes them, and
    ``moments_fn(params, key)``: the mean gradient and the variance of the mini-batch gradient
    of the mini-batch ``loss_fn(params, key)`` draws (for :class:`tuning.MinibatchVariance`)."""

    loss_fn: Callable[[Any, jax.Array], jax.Array]
    init_params: Callable[[jax.Array], Any]
    eval_fn: Callable[[Any], dict[str, jax.Array]]
    n_params: int
    sizes: dict[str, int]
    moments_fn: tuning.MomentsFn | None = None


def _as_uint8(x: np.ndarray) -> jax.Array:
    return jnp.asarray(np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8))


def _subset(n: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """A fixed random subset (all of it when ``size`` is None or too large), in random order."""
    order = rng.permutation(n)
    return order if size is None or size >= n else order[:size]


def make_problem(
    ds: data.Dataset,
    net: nets.Net,
    *,
    batch_size: int = 128,
    train_size: int | None = None,
    test_size: int | None = None,
    train_eval_size: int = 1000,
    chunk: int = 500,
    seed: int = 0,
) -> Problem:
    """The training loss, initializer and evaluation of ``net`` on ``ds``.

    Args:
      ds: the data set.
      net: the network.
      batch_size: mini-batch size of ``loss_fn``.
      train_size: train on a fixed random subset of this many training images (all: None).
      test_size: evaluate on a fixed random subset of this many test images (all: None).
      train_eval_size: ``train_loss`` is the loss on this many images of the training subset.
      chunk: images per forward pass of the evaluation (bounds its memory).
      seed: picks the subsets (the same for every method and run seed).
    """
    rng = np.random.default_rng(seed)
    train = _subset(len(ds.y_train), train_size, rng)
    test = _subset(len(ds.y_test), test_size, rng)
    x_train, y_train = _as_uint8(ds.x_train[train]), jnp.asarray(ds.y_train[train])
    x_test, y_test = _as_uint8(ds.x_test[test]), jnp.asarray(ds.y_test[test])
    n_train = len(train)
    n_eval = min(train_eval_size, n_train)

    def logits(params: Any, x: jax.Array) -> jax.Array:
        return net.apply(params, x.astype(jnp.float32) / 255.0)

    def loss_fn(params: Any, key: jax.Array) -> jax.Array:
        idx = jax.random.randint(key, (batch_size,), 0, n_train)
        return nets.cross_entropy(logits(params, x_train[idx]), y_train[idx])

    def example_loss(params: Any, example: tuple[jax.Array, jax.Array]) -> jax.Array:
        x, y = example
        out = nets.one_example_logits(net, params, x.astype(jnp.float32) / 255.0)
        return optax.softmax_cross_entropy_with_integer_labels(out, y)

    def moments_fn(params: Any, key: jax.Array) -> tuple[Any, Any]:
        idx = jax.random.randint(key, (batch_size,), 0, n_train)  # loss_fn's mini-batch
        return per_example_grad_moments(example_loss, params, (x_train[idx], y_train[idx]))

    def totals(params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean loss and accuracy over ``x``, ``chunk`` images per forward pass."""
        n = x.shape[0]
        size = min(chunk, n)
        pad = -n % size
        # pad to whole chunks; the padded images carry weight 0
        weight = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)]).reshape(-1, size)
        xs = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(
            -1, size, *x.shape[1:]
        )
        ys = jnp.concatenate([y, jnp.zeros(pad, y.dtype)]).reshape(-1, size)

        def one(batch):
            xb, yb, wb = batch
            out = logits(params, xb)
            ce = optax.softmax_cross_entropy_with_integer_labels(out, yb)
            hit = (jnp.argmax(out, axis=-1) == yb).astype(jnp.float32)
            return jnp.sum(ce * wb), jnp.sum(hit * wb)

        ce, hits = jax.lax.map(one, (xs, ys, weight))
        return ce.sum() / n, hits.sum() / n

    def eval_fn(params: Any) -> dict[str, jax.Array]:
        train_loss, _ = totals(params, x_train[:n_eval], y_train[:n_eval])
        test_loss, test_acc = totals(params, x_test, y_test)
        return {"train_loss": train_loss, "test_loss": test_loss, "test_acc": test_acc}

    sizes = {"train": n_train, "train_eval": n_eval, "test": len(test), "batch": batch_size}
    n_params = nets.n_params(jax.eval_shape(net.init, jax.random.key(0)))
    return Problem(loss_fn, net.init, eval_fn, n_params, sizes, moments_fn)


# --------------------------------------------------------------------------- #
# Options.
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Scale:
    """How big a run is; every field is a command-line option of the experiment."""

    steps: int
    batch_size: int
    train_size: int | None  # None: the whole training set
    test_size: int | None  # None: the whole test set
    train_eval_size: int
    grid: tuple[float, ...]  # multipliers of each method's center rate
    seeds: int
    records: int  # evaluations per run (the curves' points), the first and last included


# The shared sizes of the image experiments: the CPU default (each experiment sets its steps
# and, where it differs, its grid) and the smoke run (digits, a few steps, CI).
CPU_DEFAULT = Scale(
    steps=300,
    batch_size=32,
    train_size=20_000,
    test_size=2_000,
    train_eval_size=1_000,
    grid=(0.3, 1.0, 3.0),
    seeds=3,
    records=6,
)
SMOKE = Scale(
    steps=20,
    batch_size=32,
    train_size=None,
    test_size=None,
    train_eval_size=300,
    grid=(1.0,),
    seeds=1,
    records=2,
)

_OPTIONS = {
    "steps": (int, "training steps per run"),
    "batch_size": (int, "mini-batch size"),
    "train_size": (int, "train on a fixed random subset of this many images (0: all)"),
    "test_size": (int, "test on a fixed random subset of this many images (0: all)"),
    "train_eval_size": (int, "images of the training subset the recorded train_loss is on"),
    "grid": (str, "comma-separated multipliers of each method's center rate, e.g. 0.1,1,10"),
    "records": (int, "evaluations per run (points of the curves)"),
}


def add_arguments(parser: argparse.ArgumentParser, default: Scale) -> None:
    """``--steps`` etc., each defaulting to the experiment's ``default`` (shown in --help)."""
    group = parser.add_argument_group("scale (defaults: this experiment's; --smoke: tiny)")
    for name, (kind, text) in _OPTIONS.items():
        value = getattr(default, name)
        if name == "grid":
            value = ",".join(f"{g:g}" for g in value)
        shown = "all" if value is None else value
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, type=kind, default=None, help=f"{text} (default: {shown})")


def scale_of(ctx: Any, default: Scale, smoke: Scale) -> Scale:
    """The run's scale: the options given on the command line over default (or smoke)."""
    base = smoke if ctx.smoke else default
    given: dict[str, Any] = {}
    for name in _OPTIONS:
        value = getattr(ctx.args, name, None)
        if value is None:
            continue
        if name == "grid":
            value = tuple(float(v) for v in str(value).split(",") if v.strip())
            if not value or min(value) <= 0:
                raise SystemExit("--grid takes positive multipliers, e.g. 0.1,1,10")
        elif name in ("train_size", "test_size") and value == 0:
            value = None
        elif value < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive")
        given[name] = value
    scale = replace(base, **given)
    return replace(scale, seeds=len(ctx.seeds(default.seeds, smoke.seeds)))


def load_data(ctx: Any, name: str) -> data.Dataset:
    """The experiment's data set, or sklearn's digits under ``--smoke``."""
    return data.digits() if ctx.smoke else data.load(name)


def scaled_problem(ds: data.Dataset, net: nets.Net, scale: Scale) -> Problem:
    """:func:`make_problem` at ``scale``'s batch and data sizes."""
    return make_problem(
        ds,
        net,
        batch_size=scale.batch_size,
        train_size=scale.train_size,
        test_size=scale.test_size,
        train_eval_size=scale.train_eval_size,
    )


def log_every(scale: Scale) -> int:
    return max(1, math.ceil((scale.steps - 1) / max(scale.records - 1, 1)))


# --------------------------------------------------------------------------- #
# The comparison.
# --------------------------------------------------------------------------- #

# name -> (center rate, optimizer of a rate or schedule)
Methods = Mapping[str, tuple[float, Callable[[Any], Any]]]

DISSECTING: dict[str, Callable[[Any], Any]] = {
    "M-SGD": osv.m_sgd,
    "M-SSD": osv.m_ssd,
    "M-SVAG": osv.m_svag,
    "Adam": osv.adam,
    "M-VASSD": osv.m_vassd,
}

# Dissecting Adam sec. 4.1 / supplement D: the variance-adapted methods with the variance of
# the mini-batch gradient (computed within each mini-batch from per-example gradients) in
# place of their moving-average estimate; everything else (beta = 0.9, the momentum's
# variance rho(beta, t) times the gradient's) is the method's own.
MINIBATCH_SUFFIX = " (minibatch var)"


def _minibatch_variance(**kwargs: Any) -> Callable[[Any], tuning.MinibatchVariance]:
    def make(rate: Any) -> tuning.MinibatchVariance:
        opt = osv.dissect(
            rate, variance_adaptation="optimal", variance="minibatch", b1=0.9, **kwargs
        )
        return tuning.MinibatchVariance(opt)

    return make


DISSECTING |= {
    "M-SVAG" + MINIBATCH_SUFFIX: _minibatch_variance(),
    "M-VASSD" + MINIBATCH_SUFFIX: _minibatch_variance(direction="sign"),
}


def minibatch_variant_of(method: str) -> str | None:
    """The moving-average method of a mini-batch-variance variant (None for the others)."""
    return method.removesuffix(MINIBATCH_SUFFIX) if method.endswith(MINIBATCH_SUFFIX) else None


def compare(
    ctx: Any,
    problem: Problem,
    methods: Methods,
    scale: Scale,
    *,
    schedule: Callable[[float], Any] | None = None,
    title: str = "",
) -> dict:
    """Tunes each method's rate on its grid, runs the best on every seed, prints the table.

    Args:
      ctx: the experiment's context.
      problem: from :func:`make_problem`.
      methods: name -> (center rate, optimizer factory); the grid of a method is
        ``center * scale.grid``.
      scale: steps, seeds, grid, ...
      schedule: turns the tuned (initial) rate into what the factory gets, e.g. a decay
        schedule; the rate itself by default.
      title: printed above the table (it names any substitution).

    Returns:
      ``tune_and_repeat``'s dict (``grid``, ``best``, ``rows``, ``final``) plus ``edge``: the
      methods whose best rate lies on the edge of a grid of more than one rate.
    """
    grid = {m: [c * g for g in scale.grid] for m, (c, _) in methods.items()}
    wrap = schedule or (lambda rate: rate)
    makers = {m: (lambda rate, make=make: make(wrap(rate))) for m, (_, make) in methods.items()}
    out = tuning.tune_and_repeat(
        ctx,
        makers,
        grid,
        problem.loss_fn,
        problem.init_params,
        steps=scale.steps,
        seeds=list(range(scale.seeds)),
        select="test_acc",
        maximize=True,
        log_every=log_every(scale),
        eval_fn=problem.eval_fn,
        moments_fn=problem.moments_fn,
    )
    out["edge"] = [
        m for m, rates in grid.items() if len(rates) > 1 and out["best"][m] in (rates[0], rates[-1])
    ]
    print_table(out, scale, title)
    return out


def print_table(out: dict, scale: Scale, title: str = "") -> None:
    """The final table: best rate, train loss, average mini-batch loss, test loss and accuracy."""
    n = scale.seeds
    w = max(9, *map(len, out["final"]))
    print(f"\n{title}\nafter {scale.steps} steps, mean +- sd over {n} seed{'s' * (n > 1)}:")
    head = f"{'method':{w}s} {'rate':>8s} {'train loss':>15s} {'avg batch loss':>15s}"
    print(head + f" {'test loss':>15s} {'test acc %':>13s}")
    for m, f in out["final"].items():
        cells = [f"{f[c][0]:.4f}+-{f[c][1]:.4f}" for c in ("train_loss", "mean_loss", "test_loss")]
        acc = f"{100 * f['test_acc'][0]:.2f}+-{100 * f['test_acc'][1]:.2f}"
        print(
            f"{m:{w}s} {out['best'][m]:8.2g} "
            + " ".join(f"{c:>15s}" for c in cells)
            + f" {acc:>13s}"
        )
    grid_text = ", ".join(
        f"{m}: " + " ".join(f"{r:g}->{100 * v:.1f}%" for r, v in by_rate.items())
        for m, by_rate in out["grid"].items()
    )
    print(f"tuning (seed 0, final test accuracy): {grid_text}")
    if out["edge"]:
        print(
            "note: the best rate is on the edge of the grid for "
            + ", ".join(out["edge"])
            + "; a wider --grid may find a better one."
        )


def plot_comparison(axes: Sequence[Any], out: dict, title: str) -> None:
    """Three panels: train loss (fixed subset) and test accuracy vs step (mean +- 1 sd over
    seeds), and the tuning curves (final test accuracy vs rate, seed 0)."""
    ax_loss, ax_acc, ax_grid = axes
    ax_loss.figure.suptitle(title, fontsize=10)
    tuning.plot_band(ax_loss, out["rows"], "train_loss")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("train loss (fixed subset)")
    ax_loss.legend(fontsize=8)
    tuning.plot_band(ax_acc, out["rows"], "test_acc")
    ax_acc.set_ylabel("test accuracy")
    # zoom past the chance level of step 0, where the differences are
    later = [r["test_acc"] for r in out["rows"] if r["step"] > 0 and math.isfinite(r["test_acc"])]
    if later:
        ax_acc.set_ylim(bottom=max(0.0, min(later) - 0.02))
    for m, by_rate in out["grid"].items():
        rates = sorted(by_rate)
        (line,) = ax_grid.plot(rates, [by_rate[r] for r in rates], "o-", label=m)
        best = out["best"][m]
        ax_grid.plot([best], [by_rate[best]], "*", color=line.get_color(), mec="k", ms=13)
    ax_grid.set_xscale("log")
    ax_grid.set_xlabel("rate (initial rate with a schedule)")
    ax_grid.set_ylabel("final test accuracy (seed 0)")
    ax_grid.set_title("tuning; * = picked", fontsize=9)
    ax_grid.legend(fontsize=8)


def results_of(out: dict, scale: Scale, problem: Problem, **extra: Any) -> dict:
    """The JSON of a comparison: configuration, tuning, picks, final table, rows, and (where
    the comparison has a mini-batch-variance method) each tuning run's wall time."""
    timed = {}
    if any(minibatch_variant_of(m) for m in out["final"]) and "seconds" in out:
        timed["tuning_seconds"] = {
            m: {f"{r:g}": round(v, 2) for r, v in by_rate.items()}
            for m, by_rate in out["seconds"].items()
        }
    return timed | {
        "config": asdict(scale) | {"sizes": problem.sizes, "n_params": problem.n_params} | extra,
        "grid": {
            m: {f"{r:g}": v for r, v in by_rate.items()} for m, by_rate in out["grid"].items()
        },
        "best_rate": {m: float(f"{r:.6g}") for m, r in out["best"].items()},
        "best_rate_on_grid_edge": out["edge"],
        "final": out["final"],
        "rows": out["rows"],
    }


# --------------------------------------------------------------------------- #
# Dissecting Adam's questions.
# --------------------------------------------------------------------------- #

# (the method with the aspect, the method without it): the other aspect held fixed
SIGN_PAIRS = [("M-SSD", "M-SGD"), ("Adam", "M-SVAG")]
VARIANCE_PAIRS = [("M-SVAG", "M-SGD"), ("Adam", "M-SSD"), ("M-VASSD", "M-SSD")]
# Adam is the sign method with (its implicit) variance adaptation (Dissecting Adam, sec. 3);
# M-VASSD is the sign method with the explicit, optimal one (sec. 3.1, supplement C).
# (the mini-batch variance, the moving-average one): the variance estimate of sec. 4.1 / supp. D
ESTIMATE_PAIRS = [
    ("M-SVAG" + MINIBATCH_SUFFIX, "M-SVAG"),
    ("M-VASSD" + MINIBATCH_SUFFIX, "M-VASSD"),
]

_COLUMNS = {
    "mean_loss": ("average mini-batch loss over the run (lower = faster)", False),
    "train_loss": ("final train loss", False),
    "test_acc": ("final test accuracy", True),
}


def orderings(
    final: Mapping[str, Mapping[str, Sequence[float]]],
    pairs: Mapping[str, Sequence[tuple[str, str]]],
    n_seeds: int,
) -> dict:
    """Rankings and one-aspect comparisons on a final table, printed and returned.

    For each column (average mini-batch loss over the run: speed; final train loss; final
    test accuracy): the methods from best to worst, and for each ``(with, without)`` pair of
    each aspect which is better and whether the gap exceeds the larger of the two seeds' sds
    (with one seed there is no sd: ``beyond_sd`` is None and nothing is called clear).
    """
    w = max(18, *(len(f"{a} vs {b}") for ps in pairs.values() for a, b in ps))
    result: dict[str, Any] = {}
    for column, (text, higher_better) in _COLUMNS.items():
        mean = {m: final[m][column][0] for m in final}
        sd = {m: final[m][column][1] for m in final}
        ranked = sorted(mean, key=lambda m: -mean[m] if higher_better else mean[m])
        print(f"\n{text}: " + (" > " if higher_better else " < ").join(ranked))
        verdicts = {}
        for aspect, aspect_pairs in pairs.items():
            for with_, without in aspect_pairs:
                if with_ not in mean or without not in mean:
                    continue
                gap = mean[with_] - mean[without]
                helps = gap > 0 if higher_better else gap < 0
                clear = abs(gap) > max(sd[with_], sd[without]) if n_seeds > 1 else None
                word = ("helps" if helps else "hurts") if gap else "equal"
                word += {True: "", False: " (within the seeds' sd)", None: " (1 seed)"}[clear]
                key = f"{with_} vs {without}"
                verdicts[key] = {
                    "aspect": aspect,
                    "difference": gap,
                    "helps": helps,
                    "beyond_sd": clear,
                }
                print(
                    f"  {aspect:19s} {key:{w}s}: {mean[with_]:.4f} vs {mean[without]:.4f} -> {word}"
                )
        result[column] = {"ranking": ranked, "pairs": verdicts}
    return result


@dataclass(frozen=True)
class Claim:
    """A finding of a paper as a check on :func:`orderings`: on every column, each pair must
    show ``expect`` ("helps": better, by any margin; "never hurts": not worse by more than the
    seeds' sd, and with one seed not worse at all; "alike": neither better nor worse by more
    than the seeds' sd, which one seed cannot show)."""

    text: str
    pairs: tuple[tuple[str, str], ...]
    columns: tuple[str, ...]
    expect: str


def check_claims(found: dict, claims: Sequence[Claim]) -> list[dict]:
    """Whether each claim holds in ``found`` (from :func:`orderings`); printed and returned
    (``holds`` None: none of the claim's pairs was run)."""
    checked = []
    for claim in claims:
        seen = []
        for column in claim.columns:
            for with_, without in claim.pairs:
                v = found[column]["pairs"].get(f"{with_} vs {without}")
                if v is None:
                    continue
                if claim.expect == "alike":
                    ok = v["beyond_sd"] is False
                else:
                    ok = v["helps"] or (claim.expect == "never hurts" and v["beyond_sd"] is False)
                seen.append({"column": column, "pair": f"{with_} vs {without}", "holds": ok})
        if not seen:  # none of its pairs ran (a --smoke or --methods subset)
            print(f"paper: {claim.text}: not checked (its methods did not run)")
            checked.append({"claim": claim.text, "holds": None, "checks": []})
            continue
        holds = all(s["holds"] for s in seen)
        print(f"paper: {claim.text}: {'observed' if holds else 'NOT observed'}", end="")
        failed = [f"{s['pair']} ({s['column']})" for s in seen if not s["holds"]]
        print(f" (fails for {', '.join(failed)})" if failed else "")
        checked.append({"claim": claim.text, "holds": holds, "checks": seen})
    return checked


@dataclass(frozen=True)
class Comparison:
    """A finished comparison: its scale, problem, tuning output, JSON results, and the
    figure's spare axis (for an experiment's own panel) when one was asked for."""

    scale: Scale
    problem: Problem
    out: dict
    results: dict
    spare_axis: Any = None


def run_comparison(
    ctx: Any,
    *,
    dataset: str,
    net: nets.Net,
    title: str,
    default: Scale,
    smoke: Scale,
    methods: Methods,
    pairs: Mapping[str, Sequence[tuple[str, str]]],
    schedule: Callable[[Scale], Callable[[float], Any]] | None = None,
    claims: Sequence[Claim] = (),
    smoke_methods: Sequence[str] | None = None,
    spare_axis: bool = False,
    **extra: Any,
) -> Comparison:
    """Loads the data, builds the problem, compares ``methods``, prints and plots.

    Args:
      ctx: the experiment's context.
      dataset: a name of :data:`benchmarks.reproduce.data.LOADERS` (digits under --smoke).
      net: the network (the experiment picks a smaller one under --smoke).
      title: the figure's and the table's title; it names any substitution.
      default, smoke: the experiment's scales.
      methods: name -> (center rate, optimizer factory), in the order of the legends.
      pairs: aspect -> (with, without) method pairs for :func:`orderings`.
      schedule: the scale -> (rate -> schedule) of a decaying rate; constant by default.
      claims: the paper's findings to check.
      smoke_methods: the methods a --smoke run keeps (all by default).
      spare_axis: lay the figure out 2x2 and hand the fourth axis back.
      extra: more entries for the JSON's config (e.g. the substitution).
    """
    scale = scale_of(ctx, default, smoke)
    ds = load_data(ctx, dataset)
    problem = scaled_problem(ds, net, scale)
    print(f"{ds.name}, {net.name} ({problem.n_params:,} parameters), sizes {problem.sizes}")
    if ctx.smoke and smoke_methods is not None:
        methods = {m: methods[m] for m in smoke_methods}
    label = title + ("  [smoke: digits]" if ctx.smoke else "")
    wrap = schedule(scale) if schedule else None
    out = compare(ctx, problem, methods, scale, schedule=wrap, title=label)
    found = orderings(out["final"], pairs, scale.seeds)
    checked = check_claims(found, claims)
    if spare_axis:
        fig, grid = ctx.figure(2, 2, figsize=(13, 8.5))
        axes, spare = [grid[0, 0], grid[0, 1], grid[1, 0]], grid[1, 1]
    else:
        fig, axes = ctx.figure(1, 3, figsize=(15, 4.2))
        spare = None
    plot_comparison(axes, out, label)
    if spare is None:
        fig.tight_layout()  # an experiment with a spare panel lays out after drawing it
    info = {"data": ds.name, "net": net.name, "title": title} | extra
    results = results_of(out, scale, problem, **info) | {"orderings": found, "claims": checked}
    return Comparison(scale, problem, out, results, spare)


def run_dissecting(
    ctx: Any, *, centers: Mapping[str, float], time_steps: bool = False, **kwargs: Any
) -> dict:
    """One column of Dissecting Adam's Fig. 5: M-SGD, M-SSD, M-SVAG and Adam (``centers``:
    method -> center rate of its grid; any of :data:`DISSECTING`) on one problem; ``kwargs``
    as :func:`run_comparison`. With mini-batch-variance methods the pairs include the
    "variance estimate" aspect (:data:`ESTIMATE_PAIRS`), and ``time_steps`` adds
    :func:`step_seconds` of every method that ran to the results."""
    methods = {m: (c, DISSECTING[m]) for m, c in centers.items()}
    pairs = {"sign": SIGN_PAIRS, "variance adaptation": VARIANCE_PAIRS}
    if any(minibatch_variant_of(m) for m in methods):
        pairs |= {"variance estimate": ESTIMATE_PAIRS}
    done = run_comparison(ctx, methods=methods, pairs=pairs, **kwargs)
    ran = {m: methods[m] for m in done.out["final"]}
    if not (time_steps and any(minibatch_variant_of(m) for m in ran)):
        return done.results
    timing = step_seconds(done.problem, {m: (done.out["best"][m], f) for m, (_, f) in ran.items()})
    return done.results | {"step_seconds": timing}


def step_seconds(problem: Problem, methods: Methods, *, repeats: int = 5) -> dict:
    """Wall time of one training step of each method, one seed, at its given rate.

    A step is what the runs do: the loss and its gradient (``jax.value_and_grad``), or for a
    :class:`tuning.MinibatchVariance` method the loss and ``problem.moments_fn``, then the
    update; jitted, compiled and run once before the clock, then the median of ``repeats``
    calls (the methods interleaved, so a load change on the machine hits all alike). Printed
    with each method's ratio to its moving-average counterpart (or to M-SGD), and returned
    as ``{"seconds": {method: s}, "ratio": {method: [reference, ratio]}, "repeats": n}``.
    """
    params = problem.init_params(jax.random.key(0))
    key = jax.random.key(1)
    steps = {}
    for name, (rate, make) in methods.items():
        config = make(rate)
        if isinstance(config, tuning.MinibatchVariance):
            opt = config.optimizer

            def step(p, s, k, opt=opt):
                loss = problem.loss_fn(p, k)
                g, v = problem.moments_fn(p, k)  # pyright: ignore[reportOptionalCall]
                u, s = opt.update(g, s, p, grad_variance=v)
                return optax.apply_updates(p, u), s, loss

        else:
            opt = config

            def step(p, s, k, opt=opt):
                loss, g = jax.value_and_grad(problem.loss_fn)(p, k)
                u, s = opt.update(g, s, p)
                return optax.apply_updates(p, u), s, loss

        steps[name] = (jax.jit(step), opt.init(params))
    times: dict[str, list[float]] = {m: [] for m in steps}
    for step, state in steps.values():  # compile and warm up
        jax.block_until_ready(step(params, state, key))
    for _ in range(repeats):
        for name, (step, state) in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(step(params, state, key))
            times[name].append(time.perf_counter() - start)
    seconds = {m: float(np.median(t)) for m, t in times.items()}
    ratio = {}
    print(f"\nwall time per step (median of {repeats}, batch {problem.sizes['batch']}):")
    for m, sec in seconds.items():
        ref = minibatch_variant_of(m) or ("M-SGD" if m != "M-SGD" else None)
        text = ""
        if ref in seconds:
            ratio[m] = [ref, sec / seconds[ref]]
            text = f"  ({sec / seconds[ref]:.1f}x {ref})"
        print(f"  {m:24s} {1e3 * sec:9.1f} ms{text}")
    return {"seconds": seconds, "ratio": ratio, "repeats": repeats}


# --------------------------------------------------------------------------- #
# The ResNet experiments (p3, adabound).
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ResNetSize:
    """WRN-depth-width with ``base`` stem channels and ``stages`` of the 3 groups."""

    depth: int
    width: int
    base: int = 16
    stages: int = 3


def add_resnet_arguments(parser: argparse.ArgumentParser, default: ResNetSize) -> None:
    group = parser.add_argument_group("network (wide ResNet with GroupNorm)")
    group.add_argument("--depth", type=int, default=None, help=f"WRN depth 6n+4 ({default.depth})")
    group.add_argument("--width", type=int, default=None, help=f"WRN widening k ({default.width})")
    group.add_argument(
        "--base", type=int, default=None, help=f"stem channels; WRN's is 16 ({default.base})"
    )


def resnet_of(ctx: Any, default: ResNetSize, smoke: ResNetSize) -> nets.Net:
    """The ResNet of the run: command-line options over the default (or smoke) size."""
    size = smoke if ctx.smoke else default
    given = {k: getattr(ctx.args, k, None) for k in ("depth", "width", "base")}
    size = replace(size, **{k: v for k, v in given.items() if v is not None})
    return nets.wide_resnet(size.depth, size.width, base=size.base, stages=size.stages)


def step_decay(*fractions: float) -> Callable[[Scale], Callable[[float], Any]]:
    """scale -> (rate -> the rate x0.1 at each of these fractions of the steps), a piecewise
    constant schedule (at least one step apart, so short runs keep every cut)."""

    def of_scale(scale: Scale) -> Callable[[float], Any]:
        cuts: dict[int, float] = {}
        for f in fractions:
            step = max(int(f * scale.steps), max(cuts, default=0) + 1)
            cuts[step] = 0.1
        return lambda rate: optax.piecewise_constant_schedule(rate, cuts)

    return of_scale
