"""Logging ``optax_signvar.diagnostics`` every step while training with M-SVAG.

Trains the demo's 64-64-10 tanh MLP on sklearn's digits (:mod:`optax_signvar.demo.digits`:
the same data split, standardisation and initialisation) with ``osv.m_svag`` on mini-batches,
computes the diagnostics of the optimizer state inside the jitted step, shows the mean
variance-adaptation factor and the estimated sign agreement in a tqdm progress bar, and
prints a table at a few steps. What to expect: at step 1 the variance estimate is 0
(``gamma = 1``, the first M-SVAG step is an SGD step); as training goes on the mini-batch
noise overtakes the shrinking mean gradient, so ``gamma`` falls, ``eta2`` rises and the
signs of the momentum become less reliable, and the steps shrink by themselves.

Each step also computes the per-example gradient moments of its batch
(``osv.per_example_grad_moments``: the mean gradient, which the update uses, and the
variance of that mini-batch gradient) and logs the batch's gradient noise
(``diagnostics(..., grad_variance=, batch_size=)``, see ``osv.gradient_noise_statistics``):
the simple noise scale ``B_simple = tr(Sigma)/|G|^2`` of McCandlish et al. (2018), roughly
the batch size beyond which larger batches stop paying off, the signal-to-noise ratio of the
mini-batch gradient and the mean variance-adaptation factor with the batch's own variance
(``gamma_b``), also per leaf (``grad_snr/w0``, ...) in the returned history. The same
picture from the batch alone: the noise scale grows as the loss falls (from a few examples
to far more than the batch), ``SNR`` falls towards 1 (``B_simple = B/(SNR - 1)``, +inf at
or below 1), and ``gamma_b`` falls with ``gamma``. Per step, ``B_simple`` is a ratio of two
noisy estimates; average its parts ``trace_sigma`` and ``grad_sq_unbiased`` over steps
before dividing, as the paper does, for a smooth curve (the table does, over the steps
since the previous row).

Usage::

    python -m optax_signvar.demo.diagnostics                  # ~15 s on 2 CPU cores
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
NOISE_COLUMNS = {  # with the gradient noise (batches of 2 or more)
    "b_simple": "B_simple",
    "grad_snr": "SNR",
    "batch_gamma_mean": "gamma_b",
}


def _example_loss(params: Any, example: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The loss of one example, as ``per_example_grad_moments`` takes it."""
    x, y = example
    return loss_fn(params, x[None], y[None])


def make_step(opt: optax.GradientTransformation, *, noise: bool = False) -> Callable[..., Any]:
    """One jitted training step that also returns the loss and the state's diagnostics.

    ``opt`` is one of the package's optimizers: the diagnostics read its decay from it.
    With ``noise``, the gradient is the mean of the per-example gradients, and the
    diagnostics include the batch's gradient noise (its variance, batches of 2 or more).
    """

    @jax.jit
    def step(params: Any, state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, ...]:
        if noise:
            loss = loss_fn(params, x, y)
            grads, grad_variance = osv.per_example_grad_moments(_example_loss, params, (x, y))
            extra = {"grad_variance": grad_variance, "batch_size": x.shape[0]}
        else:
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            extra = {}
        updates, state = opt.update(grads, state, params)
        # the diagnostics of the state after the update, with this step's gradient
        return (
            optax.apply_updates(params, updates),
            state,
            loss,
            diagnostics(state, opt, grads=grads, **extra),
        )

    return step


def _noise_row(history: dict[str, list[float]], start: int) -> dict[str, float]:
    """B_simple from the means of its two parts over steps ``start`` to the last."""
    trace = float(np.mean(history["trace_sigma"][start:]))
    signal = float(np.mean(history["grad_sq_unbiased"][start:]))
    return {"b_simple": trace / signal if signal > 0 else float("inf")}


def _table_steps(steps: int) -> list[int]:
    marks = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
    return sorted({s for s in marks if s < steps} | {steps})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m optax_signvar.demo.diagnostics", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default: 1000)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: 32; 1: no gradient noise)")
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
    noise = args.batch_size >= 2  # the variance of the batch needs two examples
    step = make_step(opt, noise=noise)
    columns = {**COLUMNS, **NOISE_COLUMNS} if noise else COLUMNS
    rng = np.random.default_rng(args.seed)
    batches = [rng.choice(x_tr.shape[0], args.batch_size, replace=False) for _ in range(args.steps)]

    history: dict[str, list[float]] = {"loss": []}
    table_steps = set(_table_steps(args.steps))
    rows = []
    last_row = 0
    start = time.perf_counter()
    with tqdm(total=args.steps, disable=args.no_progress, desc="m_svag") as bar:
        for t, idx in enumerate(batches, start=1):
            params, state, loss, diag = step(params, state, x_tr[idx], y_tr[idx])
            diag = jax.device_get(diag)  # a few dozen scalars: one small transfer
            history["loss"].append(float(loss))
            for key, value in diag.items():
                history.setdefault(key, []).append(float(value))
            if t in table_steps:
                # B_simple of the row: the ratio of its parts' means since the last row
                smoothed = _noise_row(history, last_row) if noise else {}
                rows.append((t, float(loss), {**diag, **smoothed}))
                last_row = t
            if t % 10 == 0 or t == args.steps:
                shown = {
                    "gamma": f"{diag['gamma_mean']:.3f}",
                    "sign": f"{diag['sign_agreement']:.3f}",
                }
                if noise:
                    shown["snr"] = f"{diag['grad_snr']:.3g}"
                bar.set_postfix(loss=f"{float(loss):.3f}", **shown)
            bar.update()
    seconds = time.perf_counter() - start

    header = f"{'step':>6} {'loss':>7} " + " ".join(f"{h:>8}" for h in columns.values())
    print(header)
    print("-" * len(header))
    for t, loss, diag in rows:
        print(f"{t:>6} {loss:>7.4f} " + " ".join(f"{diag[k]:>8.3g}" for k in columns))
    if noise:
        print(
            "\nB_simple: tr(Sigma)/|G|^2 from the means of its two unbiased parts over the steps "
            "since the previous row (inf: |G|^2 not resolved)"
        )
    acc = float(accuracy(params, x_te, y_te))
    print(f"\ntest accuracy {acc:.3f} after {args.steps} steps ({seconds:.1f} s, compile included)")
    history["test_accuracy"] = [acc]
    return history


if __name__ == "__main__":
    main()
