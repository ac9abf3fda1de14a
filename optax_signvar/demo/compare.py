"""Demo: train a small MLP on sklearn's digits with the package's optimizers.

Trains the same 64-64-10 tanh MLP (softmax cross-entropy, standardized
features, fixed 75/25 train/test split) from the same initial parameters and on
the same mini-batch sequence with M-SGD, M-SSD, M-SVAG, Adam and AdaBound, then
prints each optimizer's final train loss, test accuracy and training time.

``--minibatch-variance`` adds M-VASSD and Dissecting Adam's alternative
variance estimate (sec. 4.1, supplement D): M-SVAG and M-VASSD fed the
variance of the mini-batch gradient, computed within each mini-batch from
per-example gradients (:func:`optax_signvar.minibatch.per_example_grad_moments`,
passed as ``update(..., grad_variance=...)``), instead of their moving
averages (``m_svag_minibatch``, ``m_vassd_minibatch``; any of them can also be
named in ``--optimizers``).

The default learning rates in :data:`LEARNING_RATES` were picked by a small
manual sweep (four values per optimizer, roughly 3x apart, default settings,
seeds 0 and 1): each reaches about 96-98% test accuracy. They are reasonable,
not tuned, so the table compares the update rules, not careful tuning.

Usage::

    python -m optax_signvar.demo
    python -m optax_signvar.demo --epochs 50 --optimizers m_sgd,adam --plot curves.png
    python -m optax_signvar.demo --optimizers m_svag,m_vassd --minibatch-variance

Needs the ``examples`` extras (scikit-learn, tqdm, matplotlib for ``--plot``)::

    pip install -e ".[examples]"
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

import optax_signvar as osv
from optax_signvar.demo.digits import _require, accuracy, init_mlp, load_data, loss_fn
from optax_signvar.minibatch import per_example_grad_moments

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "LEARNING_RATES",
    "MINIBATCH_VARIANCE",
    "OPTIMIZERS",
    "main",
    "parse_args",
    "plot",
    "train",
]

LEARNING_RATES = {
    "m_sgd": 0.3,
    "m_ssd": 1e-3,
    "m_svag": 0.3,
    "adam": 3e-3,
    "adabound": 1e-3,
    "m_vassd": 1e-3,
    "m_svag_minibatch": 0.3,
    "m_vassd_minibatch": 1e-3,
}

OPTIMIZERS = {
    "m_sgd": lambda: osv.m_sgd(LEARNING_RATES["m_sgd"], beta=0.9),
    "m_ssd": lambda: osv.m_ssd(LEARNING_RATES["m_ssd"]),
    "m_svag": lambda: osv.m_svag(LEARNING_RATES["m_svag"]),
    "adam": lambda: osv.adam(LEARNING_RATES["adam"]),
    "adabound": lambda: osv.adabound(learning_rate=LEARNING_RATES["adabound"], final_lr=0.1),
    "m_vassd": lambda: osv.m_vassd(LEARNING_RATES["m_vassd"]),
    # the same methods with the variance of the mini-batch gradient instead of moving averages
    "m_svag_minibatch": lambda: osv.dissect(
        LEARNING_RATES["m_svag_minibatch"], variance_adaptation="optimal", variance="minibatch"
    ),
    "m_vassd_minibatch": lambda: osv.dissect(
        LEARNING_RATES["m_vassd_minibatch"],
        direction="sign",
        variance_adaptation="optimal",
        variance="minibatch",
    ),
}

# what `python -m optax_signvar.demo` runs; --minibatch-variance adds the others
DEFAULT_OPTIMIZERS = ("m_sgd", "m_ssd", "m_svag", "adam", "adabound")
# the optimizers that take update(..., grad_variance=...): make_epoch computes it per batch
MINIBATCH_VARIANCE = frozenset({"m_svag_minibatch", "m_vassd_minibatch"})
VARIANCE_COMPARISON = ("m_svag", "m_svag_minibatch", "m_vassd", "m_vassd_minibatch")


def example_loss(params: Any, example: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The loss of one example ``(x, y)``, as ``per_example_grad_moments`` takes it (on the
    vector ``x``, not a batch of one: its dense layers are then factored, no per-example
    gradient formed)."""
    x, y = example
    return loss_fn(params, x, y)


def make_epoch(
    opt: optax.GradientTransformation, batch_size: int, *, minibatch_variance: bool = False
) -> Callable[..., Any]:
    """One jittable epoch: shuffle, ``lax.scan`` over the full batches, evaluate.

    With ``minibatch_variance``, each step computes the batch's mean gradient and the
    variance of that mini-batch gradient from per-example gradients and passes it as
    ``opt.update(grads, state, params, grad_variance=variance)``.
    """

    def step(carry: tuple[Any, Any], batch: tuple[jax.Array, jax.Array]) -> tuple[Any, None]:
        params, state = carry
        if minibatch_variance:
            grads, variance = per_example_grad_moments(example_loss, params, batch)
            # the mini-batch variants are GradientTransformationExtraArgs
            updates, state = opt.update(grads, state, params, grad_variance=variance)  # pyright: ignore[reportCallIssue]
        else:
            grads = jax.grad(loss_fn)(params, *batch)
            updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    def epoch(
        params: Any,
        state: Any,
        key: jax.Array,
        x_tr: jax.Array,
        y_tr: jax.Array,
        x_te: jax.Array,
        y_te: jax.Array,
    ) -> tuple[Any, Any, tuple[jax.Array, jax.Array]]:
        # Dropping the ragged last batch keeps every step's shape static for scan.
        n_batches = x_tr.shape[0] // batch_size
        idx = jax.random.permutation(key, x_tr.shape[0])[: n_batches * batch_size]
        idx = idx.reshape(n_batches, batch_size)
        (params, state), _ = jax.lax.scan(step, (params, state), (x_tr[idx], y_tr[idx]))
        metrics = (loss_fn(params, x_tr, y_tr), accuracy(params, x_te, y_te))
        return params, state, metrics

    return jax.jit(epoch)


def train(
    name: str,
    params: Any,
    data: tuple[jax.Array, ...],
    epoch_keys: Sequence[jax.Array],
    batch_size: int,
    progress: Any = None,
) -> tuple[list[float], list[float], float]:
    """Train one optimizer; returns the per-epoch train loss and test accuracy and the seconds."""
    opt = OPTIMIZERS[name]()
    state = opt.init(params)
    epoch = make_epoch(opt, batch_size, minibatch_variance=name in MINIBATCH_VARIANCE)
    # A discarded warm-up epoch compiles and also pays the first-call costs
    # (thread pools, buffers), which would otherwise land on whichever
    # optimizer runs first; params and state are immutable, so it has no effect.
    jax.block_until_ready(epoch(params, state, epoch_keys[0], *data))
    losses: list[float] = []
    accs: list[float] = []
    start = time.perf_counter()
    for key in epoch_keys:
        params, state, (loss, acc) = epoch(params, state, key, *data)
        # Pulling the metrics to the host each epoch also synchronizes, so the
        # clock measures finished work, not dispatched work.
        losses.append(float(loss))
        accs.append(float(acc))
        if progress is not None:
            progress.set_postfix(opt=name, loss=f"{losses[-1]:.4f}", acc=f"{accs[-1]:.3f}")
            progress.update()
    return losses, accs, time.perf_counter() - start


def plot(histories: dict[str, tuple[list[float], list[float]]], path: str) -> None:
    # A bare Figure renders with Agg without pyplot, so the process's global
    # backend (and any interactive session importing this) is left alone.
    figure = _require("matplotlib.figure", "matplotlib")
    fig = figure.Figure(figsize=(11, 4), layout="tight")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, (losses, accs) in histories.items():
        epochs = np.arange(1, len(losses) + 1)
        ax_loss.plot(epochs, losses, label=name)
        ax_acc.plot(epochs, accs, label=name)
    ax_loss.set(xlabel="epoch", ylabel="train loss", yscale="log", title="Train loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy")
    ax_acc.legend()
    fig.savefig(path, dpi=120)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m optax_signvar.demo", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--epochs", type=int, default=30, help="passes over the train set (default: 30)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init and the batch order")
    p.add_argument("--plot", metavar="FILE", help="save train loss and test accuracy curves")
    p.add_argument(
        "--optimizers",
        default=",".join(DEFAULT_OPTIMIZERS),
        help=f"comma-separated subset of {','.join(OPTIMIZERS)} "
        f"(default: {','.join(DEFAULT_OPTIMIZERS)})",
    )
    p.add_argument(
        "--minibatch-variance",
        action="store_true",
        help="also run M-SVAG and M-VASSD with the moving-average and with the mini-batch "
        f"variance ({','.join(VARIANCE_COMPARISON)}), as Dissecting Adam's supplement D",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    args.optimizers = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    if args.minibatch_variance:
        args.optimizers += [s for s in VARIANCE_COMPARISON if s not in args.optimizers]
    unknown = [s for s in args.optimizers if s not in OPTIMIZERS]
    if unknown or not args.optimizers:
        p.error(f"unknown optimizers {unknown}; choose from {','.join(OPTIMIZERS)}")
    if args.epochs < 1 or args.batch_size < 1:
        p.error("--epochs and --batch-size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the comparison and print the table.

    Returns one dict per optimizer: ``name``, ``final_train_loss`` (mean loss on
    the whole train split after the last epoch), ``test_accuracy`` and
    ``seconds`` (training plus per-epoch evaluation, compilation excluded).
    """
    args = parse_args(argv)
    if args.plot:
        _require("matplotlib", "matplotlib")  # fail before training, not after
    data = load_data()
    if args.batch_size > data[0].shape[0]:
        raise SystemExit(f"--batch-size must be at most {data[0].shape[0]} (the train set)")
    init_key, shuffle_key = jax.random.split(jax.random.PRNGKey(args.seed))
    # Same init and same batch order for every optimizer: only the update rule differs.
    params = init_mlp(init_key)
    epoch_keys = list(jax.random.split(shuffle_key, args.epochs))

    progress = None
    if not args.no_progress:
        tqdm = _require("tqdm", "tqdm").tqdm
        progress = tqdm(total=len(args.optimizers) * args.epochs, unit="epoch")
    results: list[dict[str, Any]] = []
    histories: dict[str, tuple[list[float], list[float]]] = {}
    try:
        for name in args.optimizers:
            losses, accs, seconds = train(name, params, data, epoch_keys, args.batch_size, progress)
            histories[name] = (losses, accs)
            results.append(
                {
                    "name": name,
                    "final_train_loss": losses[-1],
                    "test_accuracy": accs[-1],
                    "seconds": seconds,
                }
            )
    finally:
        if progress is not None:
            progress.close()

    w = max(10, *(len(r["name"]) for r in results))
    print(f"\n{'optimizer':<{w}} {'lr':>8} {'train loss':>11} {'test acc':>9} {'seconds':>8}")
    for r in results:
        print(
            f"{r['name']:<{w}} {LEARNING_RATES[r['name']]:>8g} {r['final_train_loss']:>11.3e}"
            f" {r['test_accuracy']:>9.2%} {r['seconds']:>8.3f}"
        )
    print(
        f"({args.epochs} epochs, batch {args.batch_size}, seed {args.seed}; "
        "seconds: training and per-epoch evaluation, compilation excluded)"
    )
    if args.plot:
        plot(histories, args.plot)
        print(f"saved {args.plot}")
    return results
