"""Logging ``optax_signvar.diagnostics`` every step while training with M-SVAG.

Trains the demo's 64-64-10 tanh MLP on sklearn's digits (:mod:`optax_signvar.demo.digits`:
the same data split, standardisation and initialisation) with ``osv.m_svag`` on mini-batches,
computes the diagnostics of the optimizer state inside the jitted step, shows the mean
variance-adaptation factor and the estimated sign agreement in a tqdm progress bar, and
prints a table at a few steps. What to expect: at step 1 the variance estimate is 0
(``gamma = 1``, the first M-SVAG step is an SGD step); as training goes on the mini-batch
noise overtakes the shrinking mean gradient, so ``gamma`` falls, ``eta2`` rises and the
signs of the momentum become less reliable, and the steps shrink by themselves.

Usage::

    python -m optax_signvar.demo.diagnostics                  # ~10 s on 2 CPU cores
    python -m optax_signvar.demo.diagnostics --steps 2000 --lr 0.1 --no-progress

Needs the ``examples`` extras (scikit-learn, tqdm): ``pip install -e ".[examples]"``.
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
from optax_signvar.demo.compare import LEARNING_RATES
from optax_signvar.demo.digits import _require, accuracy, init_mlp, load_data, loss_fn
from optax_signvar.monitoring import diagnostics

__all__ = ["main", "make_step", "parse_args"]

COLUMNS = {  # key of the diagnostics -> column header
    "active_fraction": "active",
    "gamma_mean": "gamma",
    "gamma_q10": "q10",
    "gamma_q50": "q50",
    "gamma_q90": "q90",
    "gamma_below_half": "<0.5",
    "eta2_median": "med eta2",
    "sign_agreement": "P(sign)",
    "grad_cosine": "cos(g,m)",
    "grad_norm": "|g|",
}


def make_step(opt: optax.GradientTransformation) -> Callable[..., Any]:
    """One jitted training step that also returns the loss and the state's diagnostics.

    ``opt`` is one of the package's optimizers: the diagnostics read its decay from it.
    """

    @jax.jit
    def step(params: Any, state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, ...]:
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)
        # the diagnostics of the state after the update, with this step's gradient
        return (
            optax.apply_updates(params, updates),
            state,
            loss,
            diagnostics(state, opt, grads=grads),
        )

    return step


def _table_steps(steps: int) -> list[int]:
    marks = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
    return sorted({s for s in marks if s < steps} | {steps})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m optax_signvar.demo.diagnostics", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default: 1000)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: 32)")
    p.add_argument("--lr", type=float, default=LEARNING_RATES["m_svag"], help="(0.3)")
    p.add_argument("--beta", type=float, default=0.9, help="M-SVAG's decay (default: 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Train, log, print the table; returns the per-step history (a dict of lists)."""
    args = parse_args(argv)
    tqdm = _require("tqdm", "tqdm").tqdm

    x_tr, y_tr, x_te, y_te = load_data()
    params = init_mlp(jax.random.key(args.seed))
    opt = osv.m_svag(args.lr, beta=args.beta)
    state = opt.init(params)
    step = make_step(opt)
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(x_tr.shape[0], args.batch_size, replace=False) for _ in range(args.steps)]

    history: dict[str, list[float]] = {"loss": []}
    table_steps = set(_table_steps(args.steps))
    rows = []
    start = time.perf_counter()
    with tqdm(total=args.steps, disable=args.no_progress, desc="m_svag") as bar:
        for t, idx in enumerate(batches, start=1):
            params, state, loss, diag = step(params, state, x_tr[idx], y_tr[idx])
            diag = jax.device_get(diag)  # a dozen scalars: one small transfer
            history["loss"].append(float(loss))
            for key, value in diag.items():
                history.setdefault(key, []).append(float(value))
            if t in table_steps:
                rows.append((t, float(loss), diag))
            if t % 10 == 0 or t == args.steps:
                bar.set_postfix(
                    loss=f"{float(loss):.3f}",
                    gamma=f"{diag['gamma_mean']:.3f}",
                    sign=f"{diag['sign_agreement']:.3f}",
                )
            bar.update()
    seconds = time.perf_counter() - start

    header = f"{'step':>6} {'loss':>7} " + " ".join(f"{h:>8}" for h in COLUMNS.values())
    print(header)
    print("-" * len(header))
    for t, loss, diag in rows:
        print(f"{t:>6} {loss:>7.4f} " + " ".join(f"{diag[k]:>8.3g}" for k in COLUMNS))
    acc = float(accuracy(params, x_te, y_te))
    print(f"\ntest accuracy {acc:.3f} after {args.steps} steps ({seconds:.1f} s, compile included)")
    history["test_accuracy"] = [acc]
    return history


if __name__ == "__main__":
    main()
