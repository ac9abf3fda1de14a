"""The MNIST experiments of the Adam, AMSGrad and AdaBound papers, as protocol experiments.

Unlike P1-P4 these problems are small enough for the papers' own budgets on this project's
2-core CPU: ``python -m benchmarks.reproduce adam-logreg`` (and ``adam-mlp``,
``amsgrad-mnist``, ``adabound-mnist``) runs their :mod:`benchmarks.paper.protocol` in one
process. The data are MNIST's 60,000 training and 10,000 test images (pixels / 255,
flattened to 784), batch 128, the remainder of an epoch dropped, evaluation after every epoch
on the test set and on the first 10,000 training images. What each paper says, and what we
chose where it is silent:

* **Adam §6.1** (Kingma & Ba, 2015): "L2-regularized multi-class logistic regression" on
  MNIST, "minibatch size of 128", "the step size α ... adjusted by 1/√t decay", Adam vs SGD
  with Nesterov momentum vs AdaGrad, training cost over 45 epochs (Fig. 1's axis). Chosen:
  L2 coefficient 1e-4 (``1e-4 * sum(w^2) / 2`` on the weights), Nesterov momentum 0.9, the
  1/√t decay for Adam and SGD-Nesterov (whose analyses use it) but not AdaGrad (its own
  accumulator already decays its steps; its theory takes a constant α), optax's AdaGrad
  (initial accumulator 0.1). "Searched over a dense grid": our protocol's half-decade search,
  selected by the final training cost; 3 seeds (the paper shows one curve).
* **Adam §6.2**: two hidden layers of 1,000 ReLU units, batch 128, dropout; Adam vs AdaGrad,
  RMSProp, SGD-Nesterov, AdaDelta; training cost (Fig. 2b: 200 epochs as we read its axis).
  Chosen: dropout 0.2 on the inputs and 0.5 on the hidden units (Srivastava et al.'s MNIST
  setting; the paper gives no rates), Glorot-normal weights, no weight decay, constant rates,
  optax's RMSProp (decay 0.9) and AdaDelta (ρ 0.9), one seed as the paper. The budget is
  what fits this CPU (``epochs``, stated in every result), not the paper's 200 epochs.
* **AMSGrad §5** (Reddi et al., 2018): logistic regression on MNIST with β1 = 0.9, β2 ∈
  {0.99, 0.999}, "step size α/√t", batch 128, and a network with one hidden layer of 100
  ReLU units with a constant rate; Adam vs AMSGrad; training loss against 5,000 iterations
  (Fig. 2's axis as we read it; the summary in this project's sources has no numbers). Ours:
  11 epochs (5,148 steps), no L2 (none is mentioned), AMSGrad in both forms: the package's
  (the max of v_t, then bias-corrected: ``osv.amsgrad``) and optax's (the max of the
  debiased v̂_t), selected by final training loss, 3 seeds.
* **AdaBound §5** (Luo et al., 2019): "a simple fully connected neural network with one
  hidden layer" on MNIST, 100 epochs, no rate decay; SGD(M), AdaGrad, Adam, AMSGrad,
  AdaBound, AMSBound, the rates tuned on the paper's grids (SGDM {0.001 ... 10}, AdaGrad
  {5e-4 ... 5e-2}, the Adam family {1e-4 ... 1e-2}); test accuracy over epochs. Chosen: 100
  hidden units (the width is not given; AMSGrad's MNIST network), momentum 0.9, AdaBound's
  final_lr 0.1 and γ 1e-3 (the paper's defaults; not tuned), default β's (the paper also
  tunes β1 ∈ {0.9, 0.99}, β2 ∈ {0.99, 0.999}: not done), selected by final test accuracy,
  3 seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.paper.experiments import Experiment, Method, _chunked_eval, _images, _l2
from benchmarks.reproduce import data, nets

CPU_MS = {"logreg": 0.25, "mlp100": 0.5, "mlp1000": 10.0}


def _init(sizes: Sequence[int]) -> Callable[[jax.Array], dict]:
    def init(key: jax.Array) -> dict:
        keys = jax.random.split(key, len(sizes) - 1)
        return {
            f"dense_{i}": nets._dense_params(k, a, b, 0.0)
            for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True))
        }

    return init


def forward(
    params: dict, x: jax.Array, key: jax.Array | None = None, dropout: tuple[float, float] = (0, 0)
) -> jax.Array:
    """Logits of a ReLU network on uint8 images; with ``key``, inverted dropout at the rates
    ``dropout = (input, hidden)`` before each dense layer."""
    h = x.reshape(x.shape[0], -1).astype(jnp.float32) / 255.0
    n = len(params)
    for i in range(n):
        rate = dropout[0] if i == 0 else dropout[1]
        if key is not None and rate > 0:
            key, sub = jax.random.split(key)
            keep = jax.random.bernoulli(sub, 1.0 - rate, h.shape)
            h = jnp.where(keep, h / (1.0 - rate), 0.0)
        h = nets.dense(params[f"dense_{i}"], h)
        if i < n - 1:
            h = jax.nn.relu(h)
    return h


def _fns(l2: float = 0.0, dropout: tuple[float, float] | None = None, chunk: int = 1000):
    """``loss_fn`` (with a key when ``dropout``) and ``eval_fn`` of :func:`forward`."""

    def penalty(params: dict) -> jax.Array:
        return _l2(params, l2, True) if l2 else jnp.zeros((), jnp.float32)

    if dropout is None:

        def loss_fn(params, x, y):
            return nets.cross_entropy(forward(params, x), y) + penalty(params)

    else:

        def loss_fn(params, x, y, key):
            return nets.cross_entropy(forward(params, x, key, dropout), y) + penalty(params)

    def eval_fn(params, x, y):
        return _chunked_eval(lambda xb, yb: forward(params, xb), x, y, chunk)

    return loss_fn, eval_fn


def _experiment(
    name: str,
    sizes: Sequence[int],
    methods: dict[str, Method],
    *,
    smoke: bool,
    l2: float = 0.0,
    dropout: tuple[float, float] | None = None,
    **fields: Any,
) -> Experiment:
    """MNIST (or, smoke, sklearn's digits: 1,500 + 297 images, 1 epoch of batch 50, 2 seeds,
    the first two methods with two rates each, hidden layers of 16 units)."""
    if smoke:
        sizes = [sizes[0], *[16] * (len(sizes) - 2), sizes[-1]]
        methods = {
            k: dataclasses.replace(m, rates=m.rates[:2]) for k, m in list(methods.items())[:2]
        }
        fields = fields | {
            "batch_size": 50,
            "epochs": 1,
            "num_train": 1_500,
            "eval_every_epochs": 0.5,
            "seeds": 2,
            "train_eval_size": 297,
            "paper_epochs": fields.get("paper_epochs") or fields["epochs"],
        }
    loss_fn, eval_fn = _fns(l2, dropout, chunk=99 if smoke else 1000)
    loader = (lambda: data.digits(test_size=297)) if smoke else data.mnist
    defaults = {
        "batch_size": 128,
        "num_train": 60_000,
        "num_classes": 10,
        "eval_every_epochs": 1,
        "train_eval_size": 10_000,
        "queue_report": False,
    }
    return Experiment(
        name=name + ("-smoke" if smoke else ""),
        load=_images(loader),
        init_fn=_init(sizes),
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        methods=methods,
        loss_takes_key=dropout is not None,
        **(defaults | fields),
    )


def adam_logreg(smoke: bool = False) -> Experiment:
    methods = {
        "Adam": Method("adam", (1e-3, 3e-3, 1e-2, 3e-2)),
        "SGD-Nesterov": Method("sgd_nesterov", (0.1, 0.3, 1.0, 3.0)),
        "AdaGrad": Method("adagrad", (0.01, 0.03, 0.1, 0.3), {"decay": "constant"}),
    }
    return _experiment(
        "adam-logreg",
        (784, 10),
        methods,
        smoke=smoke,
        l2=1e-4,
        title="Adam §6.1: L2-regularised logistic regression on MNIST, rate α/√t",
        epochs=45,
        seeds=3,
        select_by="train_loss",
        rate_decay="sqrt",
        pairs=(("Adam", "AdaGrad"), ("Adam", "SGD-Nesterov"), ("SGD-Nesterov", "AdaGrad")),
        paper="Adam §6.1, Fig. 1: Adam converges as fast as SGD with Nesterov momentum and "
        "both faster than AdaGrad (training cost, 45 epochs)",
        cpu_ms_per_run_step=CPU_MS["logreg"],
    )


ADAM_MLP_EPOCHS = 5  # what fitted beside the other experiments in one session (~20 min)


def adam_mlp(epochs: int = ADAM_MLP_EPOCHS, smoke: bool = False) -> Experiment:
    methods = {
        "Adam": Method("adam", (1e-4, 3e-4, 1e-3)),
        "AdaGrad": Method("adagrad", (3e-3, 1e-2, 3e-2)),
        "RMSProp": Method("rmsprop", (1e-4, 3e-4, 1e-3)),
        "SGD-Nesterov": Method("sgd_nesterov", (0.01, 0.03, 0.1)),
        "AdaDelta": Method("adadelta", (0.3, 1.0, 3.0)),
    }
    suffix = "" if epochs == ADAM_MLP_EPOCHS else f"-{epochs}ep"
    return _experiment(
        "adam-mlp" + suffix,
        (784, 1000, 1000, 10),
        methods,
        smoke=smoke,
        dropout=(0.2, 0.5),
        title=f"Adam §6.2: MNIST, 2 x 1000 ReLU with dropout, {epochs} of 200 epochs",
        epochs=epochs,
        paper_epochs=200,
        seeds=1,
        select_by="train_loss",
        pairs=tuple(("Adam", m) for m in methods if m != "Adam"),
        paper="Adam §6.2, Fig. 2b: with dropout, Adam converges faster than AdaGrad, RMSProp, "
        "SGD-Nesterov and AdaDelta (training cost)",
        cpu_ms_per_run_step=CPU_MS["mlp1000"],
    )


AMSGRAD_B2 = (0.99, 0.999)


def _amsgrad_methods(rates: tuple[float, ...]) -> dict[str, Method]:
    methods = {}
    for b2 in AMSGRAD_B2:
        methods[f"Adam (b2={b2})"] = Method("adam", rates, {"b2": b2})
        methods[f"AMSGrad (b2={b2})"] = Method("amsgrad", rates, {"b2": b2})
        methods[f"AMSGrad, optax (b2={b2})"] = Method("amsgrad_optax", rates, {"b2": b2})
    return methods


def _amsgrad_pairs() -> tuple[tuple[str, str], ...]:
    pairs = []
    for b2 in AMSGRAD_B2:
        pairs += [(f"AMSGrad (b2={b2})", f"Adam (b2={b2})")]
        pairs += [(f"AMSGrad, optax (b2={b2})", f"Adam (b2={b2})")]
        pairs += [(f"AMSGrad (b2={b2})", f"AMSGrad, optax (b2={b2})")]
    return tuple(pairs)


AMSGRAD_CLAIM = (
    "AMSGrad §5, Fig. 2: AMSGrad performs at least as well as Adam (training loss), often "
    "better, on logistic regression (rate α/√t) and a 100-unit network (constant rate)"
)


def amsgrad_logreg(smoke: bool = False) -> Experiment:
    return _experiment(
        "amsgrad-logreg",
        (784, 10),
        _amsgrad_methods((1e-3, 3e-3, 1e-2, 3e-2)),
        smoke=smoke,
        title="AMSGrad §5: logistic regression on MNIST, rate α/√t",
        epochs=11,
        seeds=3,
        select_by="train_loss",
        rate_decay="sqrt",
        pairs=_amsgrad_pairs(),
        paper=AMSGRAD_CLAIM,
        cpu_ms_per_run_step=CPU_MS["logreg"],
    )


def amsgrad_mlp(smoke: bool = False) -> Experiment:
    return _experiment(
        "amsgrad-mlp",
        (784, 100, 10),
        _amsgrad_methods((1e-4, 3e-4, 1e-3, 3e-3)),
        smoke=smoke,
        title="AMSGrad §5: MNIST, one hidden layer of 100 ReLU, constant rate",
        epochs=11,
        seeds=3,
        select_by="train_loss",
        pairs=_amsgrad_pairs(),
        paper=AMSGRAD_CLAIM,
        cpu_ms_per_run_step=CPU_MS["mlp100"],
    )


ADABOUND_GRID = (1e-4, 5e-4, 1e-3, 5e-3, 1e-2)
ADABOUND_BOUND = {"final_lr": 0.1, "gamma": 1e-3}


def adabound_mnist(smoke: bool = False) -> Experiment:
    methods = {
        "AdaBound": Method("adabound", ADABOUND_GRID, ADABOUND_BOUND),
        "Adam": Method("adam", ADABOUND_GRID),
        "AMSBound": Method("amsbound", ADABOUND_GRID, ADABOUND_BOUND),
        "AMSGrad": Method("amsgrad", ADABOUND_GRID),
        "SGDM": Method("sgdm", (0.001, 0.01, 0.1, 1.0, 10.0)),
        "AdaGrad": Method("adagrad", (5e-4, 1e-3, 5e-3, 1e-2, 5e-2)),
    }
    return _experiment(
        "adabound-mnist",
        (784, 100, 10),
        methods,
        smoke=smoke,
        title="AdaBound §5: MNIST, one hidden layer of 100 ReLU, 100 epochs",
        epochs=100,
        seeds=3,
        pairs=(
            ("AdaBound", "Adam"),
            ("AMSBound", "AMSGrad"),
            ("AdaBound", "SGDM"),
            ("AMSBound", "SGDM"),
        ),
        paper="AdaBound §5, Fig. 2: AdaBound/AMSBound make fast progress early like the "
        "adaptive methods and end with a test accuracy at least as high as SGD(M)'s",
        cpu_ms_per_run_step=CPU_MS["mlp100"],
    )
