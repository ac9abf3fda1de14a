"""P1-P4 of Dissecting Adam and AdaBound's CIFAR comparison, configured as the papers.

Each :class:`Experiment` is what :func:`optax_signvar.research.sweep` needs (data, init,
loss, evaluation, batch size, steps) plus the paper's methods and the first rates the search
of :mod:`benchmarks.paper.protocol` tries. Sources, beside the papers (``docs/reproductions.rst``
has the table):

* DeepOBS (Schneider, Balles & Hennig, ICLR 2019; ``fsschneider/DeepOBS``): the networks
  ``fmnist_2c2d`` (truncated-normal sd 0.05 weights, biases 0.05, no regularization),
  ``cifar10_3c3d`` (L2 0.002 on the kernels, as ``0.002 * sum(w^2) / 2``), ``cifar100_wrn404``
  (L2 5e-4 on the kernels) and ``tolstoi_char_rnn`` (2 LSTM layers of 128, 50 characters per
  sequence, dropout 0.2 on the inputs and outputs of each layer); batch size and epochs from
  its ``DEFAULT_TEST_PROBLEMS_SETTINGS``: 128 x 100 (P1, P2), 128 x 160 (P3), 50 x 200 (P4);
  pixels scaled to [0, 1], the remainder of an epoch dropped; evaluation on the test set and on
  10,000 training examples.
* Dissecting Adam §6.1: constant rates for P1 and P2, "a decrease schedule ... fixed in advance
  for all methods" for P3 and P4, whose values are in the supplement (not available here):
  we use x0.1 at 50% and at 75% of the steps (WRN's own schedule is x0.2 at epochs 60, 120,
  160 of 200; ours keeps DeepOBS' 160 epochs).
* AdaBound's reference code (``Luolc/AdaBound``, ``demos/cifar10``): batch 128, 200 epochs,
  every rate x0.1 at epoch 150, ``final_lr`` 0.1, ``gamma`` 1e-3, weight decay 5e-4 on every
  parameter (coupled: the gradient gets ``5e-4 * w``), SGD's momentum 0.9.

Substitutes (CIFAR-10, CIFAR-100 and War and Peace cannot be obtained here): MNIST for
CIFAR-10 (P2), Fashion-MNIST for CIFAR-100 (P3) and for AdaBound's CIFAR-10, the KJV Bible for
War and Peace (P4); GroupNorm for BatchNorm in the residual networks (a sweep's loss is a pure
function of the parameters), WRN-16-4 for AdaBound's ResNet-34; no data augmentation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_signvar as osv
from benchmarks.reproduce import data, nets, text
from benchmarks.reproduce import p4 as char_rnn

Arrays = tuple[Any, Any, Any, Any]

# the optimizers a sweep builds by name (a name, unlike a closure, is the same in every
# process, so the sweep's checkpoint configuration matches when a chunk resumes)
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "m_sgd": osv.m_sgd,
    "m_ssd": osv.m_ssd,
    "m_svag": osv.m_svag,
    "adam": osv.adam,
    "amsgrad": osv.amsgrad,
    "adabound": osv.adabound,
    "amsbound": osv.amsbound,
    "sgdm": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    # the baselines of the Adam paper's MNIST experiments, as optax has them
    "sgd_nesterov": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9, nesterov=True),
    "adagrad": optax.adagrad,
    "rmsprop": optax.rmsprop,
    "adadelta": optax.adadelta,
    # optax's AMSGrad keeps the max of the *debiased* second moment (ours: of v_t)
    "amsgrad_optax": optax.amsgrad,
}


def scheduled(
    learning_rate: Any,
    *,
    optimizer: str,
    boundaries: tuple[int, ...] = (),
    final_lr: Any = None,
    gamma: Any = None,
    b2: Any = None,
    decay: str = "constant",
) -> optax.GradientTransformation:
    """``OPTIMIZERS[optimizer]`` with ``learning_rate`` x0.1 from each step of ``boundaries``.

    The factory every paper sweep wraps in ``optax.inject_hyperparams``: the initial rate
    (and AdaBound's ``final_lr`` and ``gamma``, given only to the bound methods, and ``b2``
    where a comparison fixes it) arrive as arrays, one per run; the schedule is built from them
    inside the step. ``decay="sqrt"`` is the Adam and AMSGrad papers' ``alpha_t = alpha /
    sqrt(t)`` (``t = count + 1``). The keywords are named, not ``**kwargs``, because
    ``inject_hyperparams`` binds the signature.
    """
    if decay not in ("constant", "sqrt"):
        raise ValueError(f"decay must be 'constant' or 'sqrt', got {decay!r}.")
    rate = learning_rate
    if boundaries:
        rate = optax.piecewise_constant_schedule(learning_rate, {b: 0.1 for b in boundaries})
    if decay == "sqrt":
        base = rate

        def rate(count):
            a = base(count) if callable(base) else base
            return a / jnp.sqrt(jnp.asarray(count, jnp.float32) + 1.0)

    named = (("final_lr", final_lr), ("gamma", gamma), ("b2", b2))
    return OPTIMIZERS[optimizer](rate, **{k: v for k, v in named if v is not None})


@dataclasses.dataclass(frozen=True)
class Method:
    """One optimizer of a comparison: ``scheduled(optimizer=..., **static)`` and its grid.

    ``rates`` is where the rate search starts (the protocol extends it); ``grid`` holds the
    other tuned hyperparameters with all their values (e.g. AdaBound's ``final_lr``).
    """

    optimizer: str
    rates: tuple[float, ...]
    static: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    grid: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A problem at a budget, its methods, and what the paper claims about them."""

    name: str
    title: str
    load: Callable[[], Arrays]
    init_fn: Callable[[jax.Array], Any]
    loss_fn: Callable[..., jax.Array]
    eval_fn: Callable[[Any, jax.Array, jax.Array], dict[str, jax.Array]]
    batch_size: int
    epochs: int
    num_train: int
    eval_every_epochs: float
    methods: Mapping[str, Method]
    num_classes: int
    decay_at: tuple[float, ...] = ()
    seeds: int = 10
    train_eval_size: int = 10_000
    loss_takes_key: bool = False
    substitution: str | None = None
    paper: str = ""
    baselines: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    # planning estimate (ms per run and step on one H100) until the queue has measured one
    h100_ms_per_run_step: float = 1.0
    # the same on this project's 2-core CPU, where one is known (else x CPU_FACTOR)
    cpu_ms_per_run_step: float | None = None
    # what the rate search maximises: "test_accuracy", or "train_loss" (minimised: the mean
    # mini-batch loss of the last evaluation interval) where the paper plots training cost
    select_by: str = "test_accuracy"
    # "sqrt": alpha / sqrt(t) for every method (see `scheduled`)
    rate_decay: str = "constant"
    # (better-if-first, second) pairs the report compares; empty: report.PAIRS
    pairs: tuple[tuple[str, str], ...] = ()
    # the paper's number of epochs, where ours is smaller ("budget": "reduced")
    paper_epochs: int | None = None
    # whether the queue writes `<name>-paper.{json,png}` itself when the protocol finishes
    # (the CPU experiments of benchmarks.reproduce write their own report)
    queue_report: bool = True

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.batch_size

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def eval_every(self) -> int:
        return max(1, round(self.eval_every_epochs * self.steps_per_epoch))

    @property
    def boundaries(self) -> tuple[int, ...]:
        return tuple(int(f * self.steps) for f in self.decay_at)

    @property
    def unstable_loss(self) -> float:
        """A run whose final training loss is not below this (chance's) diverged."""
        return math.log(self.num_classes)


# --------------------------------------------------------------------------- #
# Losses and evaluations on (params, x, y).
# --------------------------------------------------------------------------- #


def _l2(params: Any, coefficient: float, kernels_only: bool) -> jax.Array:
    """``coefficient * sum(w^2) / 2`` over the kernels (leaves named ``w``) or all leaves."""
    total = jnp.zeros((), jnp.float32)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = getattr(path[-1], "key", None)
        if not kernels_only or name == "w":
            total = total + jnp.sum(jnp.square(leaf))
    return 0.5 * coefficient * total


def _image_fns(net: nets.Net, l2: float = 0.0, kernels_only: bool = True, chunk: int = 1000):
    """``loss_fn(params, x, y)`` and a chunked ``eval_fn`` of a classifier on uint8 images."""

    def logits(params, x):
        return net.apply(params, x.astype(jnp.float32) / 255.0)

    def loss_fn(params, x, y):
        loss = nets.cross_entropy(logits(params, x), y)
        return loss + _l2(params, l2, kernels_only) if l2 else loss

    def eval_fn(params, x, y):
        return _chunked_eval(lambda xb, yb: logits(params, xb), x, y, chunk)

    return loss_fn, eval_fn


def _chunked_eval(logits_of: Callable, x: jax.Array, y: jax.Array, chunk: int) -> dict:
    """Mean cross-entropy and accuracy over ``x``, ``chunk`` examples per forward pass
    (``len(x)`` a multiple of ``chunk``, or smaller than it), so the memory of an evaluation
    stays that of a few steps whatever the test set's size."""
    n = x.shape[0]
    size = min(chunk, n)
    if n % size:
        raise ValueError(f"{n} evaluation examples are not a multiple of the chunk {size}.")
    xs = x.reshape(n // size, size, *x.shape[1:])
    ys = y.reshape(n // size, size, *y.shape[1:])

    def one(batch):
        out = logits_of(*batch)
        ce = optax.softmax_cross_entropy_with_integer_labels(out, batch[1])
        return ce.mean(), (jnp.argmax(out, -1) == batch[1]).astype(jnp.float32).mean()

    ce, acc = jax.lax.map(one, (xs, ys))
    return {"loss": ce.mean(), "accuracy": acc.mean()}


def _images(loader: Callable[[], data.Dataset]) -> Callable[[], Arrays]:
    def load() -> Arrays:
        ds = loader()

        def as_uint8(x):
            return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)

        return as_uint8(ds.x_train), ds.y_train, as_uint8(ds.x_test), ds.y_test

    return load


# --------------------------------------------------------------------------- #
# The experiments.
# --------------------------------------------------------------------------- #

SGD_RATES = (0.01, 0.03, 0.1, 0.3, 1.0)
SIGN_RATES = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3)
DISSECTING = {
    "M-SGD": Method("m_sgd", SGD_RATES),
    "M-SSD": Method("m_ssd", SIGN_RATES),
    "M-SVAG": Method("m_svag", SGD_RATES),
    "Adam": Method("adam", SIGN_RATES),
}
DISSECTING_CLAIM = (
    "§6.2: (1) the sign aspect dominates: M-SSD and Adam cluster apart from M-SGD and M-SVAG "
    "(except P4); (2) the sign helps on P2 and hurts on P3; (3) variance adaptation helps: "
    "M-SVAG >= M-SGD and Adam >= M-SSD everywhere; (4) M-SVAG beats M-SGD on P3 and P4"
)
# single-seed final test accuracies of DeepOBS' tuned runs, 100 epochs of batch 128:
# fsschneider/DeepOBS, baselines/fmnist_2c2d/<optimizer>/ (Momentum is momentum 0.99)
P1_BASELINES = {
    "SGD": {"test_accuracy": 0.92378, "rate": 0.15848931925},
    "Momentum": {"test_accuracy": 0.92398, "rate": 0.002511886},
    "Adam": {"test_accuracy": 0.92939, "rate": 0.000251189},
}


def _image_experiment(
    loader: Callable[[], data.Dataset],
    net: nets.Net,
    *,
    l2: float = 0.0,
    kernels_only: bool = True,
    chunk: int = 1000,
    **fields: Any,
) -> Experiment:
    """An image classification experiment: ``net`` on ``loader``'s data (uint8 pixels),
    cross-entropy plus the L2 term, batch 128 of 60,000 images in 10 classes unless
    ``fields`` say otherwise."""
    loss_fn, eval_fn = _image_fns(net, l2, kernels_only, chunk)
    defaults = {"batch_size": 128, "num_train": 60_000, "num_classes": 10}
    return Experiment(
        load=_images(loader),
        init_fn=net.init,
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        **{**defaults, **fields},
    )


def p1() -> Experiment:
    return _image_experiment(
        data.fashion_mnist,
        nets.net_2c2d(weight_std=0.05),
        name="p1",
        title="Dissecting Adam P1: Fashion-MNIST, 2c2d (DeepOBS fmnist_2c2d)",
        epochs=100,
        eval_every_epochs=2,
        methods=DISSECTING,
        paper=DISSECTING_CLAIM,
        baselines=P1_BASELINES,
        h100_ms_per_run_step=1.0,
    )


def p2() -> Experiment:
    return _image_experiment(
        data.mnist,
        nets.net_3c3d(),
        l2=0.002,
        name="p2",
        title="Dissecting Adam P2 substitute: MNIST, 3c3d (paper: CIFAR-10)",
        epochs=100,
        eval_every_epochs=2,
        methods=DISSECTING,
        substitution="CIFAR-10 (unavailable here) replaced by MNIST; 3c3d on 28x28x1",
        paper=DISSECTING_CLAIM,
        h100_ms_per_run_step=1.0,
    )


def p3() -> Experiment:
    return _image_experiment(
        data.fashion_mnist,
        nets.wide_resnet(depth=40, width=4, num_classes=10, channels=1),
        l2=5e-4,
        chunk=500,
        name="p3",
        title="Dissecting Adam P3 substitute: Fashion-MNIST, WRN-40-4 with GroupNorm "
        "(paper: CIFAR-100)",
        epochs=160,
        eval_every_epochs=4,
        methods=DISSECTING,
        decay_at=(0.5, 0.75),
        substitution="CIFAR-100 (unavailable here) replaced by Fashion-MNIST; GroupNorm for "
        "BatchNorm",
        paper=DISSECTING_CLAIM,
        h100_ms_per_run_step=15.0,
    )


def _char_data(smoke: bool, seq_len: int) -> Callable[[], Arrays]:
    def load() -> Arrays:
        corpus = text.load(smoke=smoke)

        def windows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            n = (len(ids) - 1) // seq_len
            x = ids[: n * seq_len].reshape(n, seq_len)
            y = ids[1 : n * seq_len + 1].reshape(n, seq_len)
            return x, y

        return (*windows(corpus.train), *windows(corpus.test))

    return load


def _char_fns(vocab: int, dropout: float = 0.2, chunk: int = 50):
    def loss_fn(params, x, y, key):
        logits = char_rnn.logits_fn(params, x, key, dropout)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def eval_fn(params, x, y):
        # the test windows, cut to a multiple of the chunk (at most chunk - 1 windows unused)
        n = x.shape[0] // min(chunk, x.shape[0]) * min(chunk, x.shape[0])
        return _chunked_eval(lambda xb, yb: char_rnn.logits_fn(params, xb), x[:n], y[:n], chunk)

    def init_fn(key):
        return char_rnn.init_params(key, vocab)

    return init_fn, loss_fn, eval_fn


P4_SGD_RATES = (0.3, 1.0, 3.0, 10.0, 30.0)
P4_SIGN_RATES = (1e-3, 3e-3, 1e-2, 3e-2)


# the cleaned KJV (benchmarks.reproduce.text): 63 distinct characters, 3,310,278 of them in
# the training part, i.e. 66,205 windows of 50 (checked when the data are loaded)
KJV_VOCAB, KJV_WINDOWS = 63, 66_205


def p4(*, smoke: bool = False) -> Experiment:
    corpus = text.load(smoke=True) if smoke else None
    vocab = corpus.vocab_size if corpus is not None else KJV_VOCAB
    init_fn, loss_fn, eval_fn = _char_fns(vocab)
    methods = {
        name: Method(m.optimizer, P4_SIGN_RATES if name in ("M-SSD", "Adam") else P4_SGD_RATES)
        for name, m in DISSECTING.items()
    }
    return Experiment(
        name="p4",
        title="Dissecting Adam P4 substitute: KJV Bible, char-LSTM (paper: War and Peace)",
        load=_char_data(smoke, 50),
        init_fn=init_fn,
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        batch_size=50,
        epochs=200,
        num_train=(len(corpus.train) - 1) // 50 if corpus is not None else KJV_WINDOWS,
        eval_every_epochs=5,
        methods=methods,
        num_classes=vocab,
        decay_at=(0.5, 0.75),
        # as many training windows as the test part has (827,569 characters)
        train_eval_size=0 if smoke else 16_550,
        loss_takes_key=True,
        substitution="War and Peace (unavailable here) replaced by the KJV Bible",
        paper=DISSECTING_CLAIM,
        h100_ms_per_run_step=0.5,
    )


ADAPTIVE_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
FINAL_LRS = (0.01, 0.03, 0.1, 0.3)
BOUND = {"gamma": 1e-3}


def adabound() -> Experiment:
    methods = {
        "SGDM": Method("sgdm", (0.01, 0.03, 0.1, 0.3)),
        "Adam": Method("adam", ADAPTIVE_RATES),
        "AMSGrad": Method("amsgrad", ADAPTIVE_RATES),
        "AdaBound": Method("adabound", ADAPTIVE_RATES, {**BOUND, "final_lr": 0.1}),
        "AMSBound": Method("amsbound", ADAPTIVE_RATES, {**BOUND, "final_lr": 0.1}),
        "AdaBound (final_lr tuned)": Method(
            "adabound", ADAPTIVE_RATES, BOUND, {"final_lr": FINAL_LRS}
        ),
        "AMSBound (final_lr tuned)": Method(
            "amsbound", ADAPTIVE_RATES, BOUND, {"final_lr": FINAL_LRS}
        ),
    }
    return _image_experiment(
        data.fashion_mnist,
        nets.wide_resnet(depth=16, width=4, num_classes=10, channels=1),
        l2=5e-4,
        kernels_only=False,
        chunk=500,
        name="adabound",
        title="AdaBound/AMSBound vs SGDM, Adam, AMSGrad substitute: Fashion-MNIST, WRN-16-4 "
        "with GroupNorm (paper: CIFAR-10, ResNet-34)",
        epochs=200,
        eval_every_epochs=5,
        methods=methods,
        decay_at=(0.75,),
        substitution="CIFAR-10 and ResNet-34 (unavailable here / too costly) replaced by "
        "Fashion-MNIST and WRN-16-4 with GroupNorm; no augmentation",
        paper="AdaBound §5: AdaBound/AMSBound train as fast as Adam early and end with SGDM's "
        "test accuracy or better (ResNet-34 on CIFAR-10: about 95% after the decay at 150)",
        h100_ms_per_run_step=4.0,
    )


EXPERIMENTS: dict[str, Callable[[], Experiment]] = {
    "p1": p1,
    "p2": p2,
    "p3": p3,
    "p4": p4,
    "adabound": adabound,
}


def smoke(name: str = "p1") -> Experiment:
    """A minute-sized stand-in of experiment ``name`` on CPU: the same protocol and code path
    on the embedded digits (or the embedded text for P4), a small network, 2 methods, a few
    dozen steps, 2 seeds."""
    if name == "p4":
        full = p4(smoke=True)
        methods = {k: full.methods[k] for k in ("M-SGD", "Adam")}
        return dataclasses.replace(
            full,
            name="p4-smoke",
            epochs=1,
            num_train=2 * full.batch_size,
            methods=methods,
            eval_every_epochs=0.5,
            seeds=2,
        )
    methods = {
        "M-SGD": Method("m_sgd", (0.01, 0.1, 1.0)),
        "Adam": Method("adam", (1e-3, 1e-2, 0.1)),
    }
    return _image_experiment(
        lambda: data.digits(test_size=297),
        nets.net_2c2d(weight_std=0.05),
        chunk=99,
        name=f"{name}-smoke",
        title=f"{name} smoke: digits (sklearn), 2c2d",
        batch_size=50,
        epochs=1,
        num_train=1_500,
        eval_every_epochs=0.5,
        methods=methods,
        seeds=2,
        train_eval_size=297,
        paper=DISSECTING_CLAIM,
        baselines=P1_BASELINES if name == "p1" else {},
    )


def get(name: str, *, smoke_run: bool = False) -> Experiment:
    """The experiment ``name`` (one of :data:`EXPERIMENTS`), or its smoke stand-in."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}.")
    return smoke(name) if smoke_run else EXPERIMENTS[name]()
