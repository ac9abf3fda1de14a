"""Train a grid of hyperparameters x seeds of one optimizer as one jitted program.

:func:`sweep` trains every combination of the numeric hyperparameters of
``grid`` (the learning rate, AdaBound's ``final_lr``, a decay ...) and every
seed of ``seeds`` with one optimizer factory, as a single program: the runs are
a leading axis of the parameters and optimizer states (``jax.vmap``), the
hyperparameters are arrays in the state of ``optax.inject_hyperparams``, and
the steps are a ``lax.scan`` between two evaluations. Each run of a sweep equals
the same run trained alone with the plain optimizer, to float rounding
(``tests/test_sweep.py``).

**What a run is.** Run ``i`` has the hyperparameters ``hyperparams[i]`` (a point
of the product of ``grid``, the grid's first key varying slowest) and the seed
``seed[i]`` (seeds vary fastest). With ``key = jax.random.key(seed)`` and
``init_key, data_key = jax.random.split(key)``, its initial parameters are
``init_fn(init_key)`` and its mini-batch at step ``t`` (counting from 0) is::

    per_epoch = num_train // batch_size        # the remainder of an epoch is dropped
    perm = jax.random.permutation(jax.random.fold_in(data_key, t // per_epoch), num_train)
    idx = perm[(t % per_epoch) * batch_size:][:batch_size]
    loss_fn(params, x_train[idx], y_train[idx])

**Evaluation.** After every ``eval_every`` steps (and after the last), ``eval_fn``
(default: ``loss_fn``) runs on the full test set and, with ``train_eval_size=n``,
also on the first ``n`` training examples, ``x_train[:n], y_train[:n]``: a fixed
portion, the same for every run and evaluation (Dissecting Adam, §6.1, evaluates
"on an equally-sized portion of the training set"; pass the test set's size).
Both evaluations are part of the compiled program.

**Throughput** (:func:`benchmark_throughput`, a 2-layer MLP 32-64-10 on 4096
random examples, batch 64, 8 runs of Adam x 400 steps, float32; a 2-core
x86-64 CPU VM, jax 0.10.2, ``python -m optax_signvar.research.sweeps``, best of
5 on a shared machine): 770 steps/s as one sweep vs 562 steps/s as 8 jitted
runs one after the other, a gain of 1.37x, compilation excluded on both sides
(single measurements on the loaded machine ranged from 1.0x to 1.9x).

**Sharding.** ``shard=True`` places the run axis on a 1-D mesh of the local
devices (``NamedSharding(Mesh(devices, ("runs",)), P("runs"))``), the data
replicated; the number of runs must be a multiple of the number of devices.

**Checkpoints.** With ``checkpoint_dir``, the sweep saves ``{step, params,
opt_state, curves}`` with :func:`optax_signvar.checkpoint.save_state` every
``checkpoint_every`` evaluations (and when it stops), next to a
``sweep_config.json`` describing the configuration (hash included); the curves
are the training loss, the test evaluation and, with ``train_eval_size``, the
evaluation on the training portion. A later call with the same configuration,
in any process, resumes from the checkpoint and gives the same numbers as an
uninterrupted sweep (bit for bit on one CPU); a call with another configuration
raises ``ValueError`` naming what differs. The hash covers the grid, seeds, step
counts, batch size, ``train_eval_size``, the static keyword arguments (by
``repr``), the factory, loss and evaluation functions (by qualified name only:
editing their body is not detected), the data (sha256 of its bytes) and the
shapes of the parameters and state.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["SweepResult", "benchmark_throughput", "sweep"]

_CONFIG_FILE = "sweep_config.json"
_STATE_DIR = "state"


@dataclasses.dataclass
class SweepResult:
    """The curves of every run of a :func:`sweep`.

    Attributes:
      names: the hyperparameter names of the grid.
      hyperparams: per run, ``{name: value}``.
      seeds: per run, the seed.
      steps: the steps after which the runs were evaluated (``eval_every``,
        ``2 * eval_every``, ..., ``steps``), up to where the sweep stopped.
      train_loss: ``(runs, evaluations)``, the mean training loss of the
        mini-batches since the previous evaluation.
      test: metric name -> ``(runs, evaluations)``, the evaluation on the full
        test set at ``steps``.
      train_eval: metric name -> ``(runs, evaluations)``, the same evaluation on
        the first ``train_eval_size`` training examples at ``steps``; empty when
        ``train_eval_size=0``.
      complete: whether all the steps were trained (``False`` after ``until``).
      params: the parameters of every run (leading run axis) at the last step;
        ``None`` for a result read from JSON.
      seconds: ``{"compile": ..., "train": ...}``, the wall time of compiling
        and of the training steps and evaluations of this call (not in JSON).
    """

    names: list[str]
    hyperparams: list[dict[str, float]]
    seeds: list[int]
    steps: np.ndarray
    train_loss: np.ndarray
    test: dict[str, np.ndarray]
    complete: bool = True
    params: Any = None
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    # last, with a default: constructions written before it existed keep working
    train_eval: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the curves (not the parameters) to ``path`` as JSON."""
        runs = [
            {
                "hyperparams": self.hyperparams[i],
                "seed": self.seeds[i],
                "train_loss": [float(v) for v in self.train_loss[i]],
                "test": {k: [float(v) for v in a[i]] for k, a in self.test.items()},
                "train_eval": {k: [float(v) for v in a[i]] for k, a in self.train_eval.items()},
            }
            for i in range(len(self.seeds))
        ]
        doc = {
            "names": self.names,
            "steps": [int(s) for s in self.steps],
            "complete": self.complete,
            "runs": runs,
        }
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> SweepResult:
        """Reads a result written by :meth:`to_json` (``params`` is ``None``)."""
        with open(path) as f:
            doc = json.load(f)
        runs = doc["runs"]
        n = len(doc["steps"])

        def curves(group: str) -> dict[str, np.ndarray]:
            # files written before train_eval existed lack the key
            metrics = list(runs[0].get(group, {})) if runs else []
            return {
                k: np.asarray([r[group][k] for r in runs], np.float64).reshape(-1, n)
                for k in metrics
            }

        return cls(
            names=list(doc["names"]),
            hyperparams=[dict(r["hyperparams"]) for r in runs],
            seeds=[int(r["seed"]) for r in runs],
            steps=np.asarray(doc["steps"], np.int64).reshape(n),
            train_loss=np.asarray([r["train_loss"] for r in runs], np.float64).reshape(-1, n),
            test=curves("test"),
            complete=bool(doc["complete"]),
            train_eval=curves("train_eval"),
        )


def _nbytes(tree: Any) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _compiled_bytes(compiled: Any) -> int | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if m is None:
        return None
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return int(total - m.alias_size_in_bytes)


def _default_memory_limit(device: Any) -> int:
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _digest(arrays: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _name(f: Any) -> str | None:
    if f is None:
        return None
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"


def sweep(
    optimizer_factory: Callable[..., optax.GradientTransformation],
    init_fn: Callable[[jax.Array], Any],
    loss_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    data: tuple[Any, Any, Any, Any],
    *,
    grid: Mapping[str, Sequence[float]],
    seeds: Sequence[int],
    steps: int,
    batch_size: int,
    eval_every: int,
    static: Mapping[str, Any] | None = None,
    eval_fn: Callable[[Any, jax.Array, jax.Array], Any] | None = None,
    train_eval_size: int = 0,
    loss_key: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    until: int | None = None,
    memory_limit_bytes: int | None = None,
    progress: bool = True,
    shard: bool = False,
) -> SweepResult:
    """Trains ``product(grid) x seeds`` runs of one optimizer as one jitted program.

    Args:
      optimizer_factory: e.g. ``optax_signvar.adam``; it is wrapped in
        ``optax.inject_hyperparams`` and called with ``**static`` and the grid's
        hyperparameters.
      init_fn: ``init_fn(key)`` -> the initial parameters of a run.
      loss_fn: ``loss_fn(params, x, y)`` -> the mean loss of a mini-batch.
      data: ``(x_train, y_train, x_test, y_test)``, arrays with a leading
        example axis; they are shared by all runs (stored once).
      grid: hyperparameter name -> values (numbers). May be empty.
      seeds: the seeds; every grid point is trained with every seed.
      steps: number of updates of every run.
      batch_size: mini-batch size (``<=`` the number of training examples).
      eval_every: evaluate on the full test set after every ``eval_every``
        steps (and after the last).
      static: other keyword arguments of the factory, the same for all runs.
      eval_fn: ``eval_fn(params, x_test, y_test)`` -> a scalar or a dict of
        scalars (e.g. ``{"loss": ..., "accuracy": ...}``); default
        ``{"loss": loss_fn(params, x_test, y_test)}``.
      train_eval_size: if positive, also evaluate (``eval_fn`` or its default)
        on the first ``train_eval_size`` training examples, a fixed portion the
        same for every run (``<=`` the number of training examples); the curves
        are ``SweepResult.train_eval``. ``0``: no such evaluation.
      loss_key: call ``loss_fn(params, x, y, key)`` with a key of its own for
        every run and step (dropout): ``fold_in(fold_in(key(seed), 2), t)``.
        Evaluations call ``eval_fn`` without it (so it is required then).
      checkpoint_dir: save there and resume from there (see the module doc).
      checkpoint_every: save after every ``checkpoint_every`` evaluations.
      until: stop (and checkpoint) after this step, a multiple of
        ``eval_every``; a later call resumes. The result then has
        ``complete=False``.
      memory_limit_bytes: refuse sweeps whose estimated memory exceeds this;
        default the device's memory where jax knows it, else 80% of the host's.
      progress: show a tqdm progress bar over evaluations (if tqdm is installed).
      shard: place the runs on a 1-D mesh of the local devices.

    Returns:
      A :class:`SweepResult`.

    Raises:
      ValueError: bad arguments; a checkpoint of another configuration in
        ``checkpoint_dir``; an estimated memory above the limit (the message says
        how many runs would fit).

    Example:
      >>> import jax, jax.numpy as jnp, optax_signvar as osv
      >>> from optax_signvar.research.sweeps import sweep
      >>> x = jax.random.normal(jax.random.key(0), (64, 3)); y = x @ jnp.ones(3)
      >>> res = sweep(osv.adam, lambda k: jax.random.normal(k, (3,)),
      ...             lambda w, x, y: jnp.mean((x @ w - y) ** 2), (x, y, x, y),
      ...             grid={"learning_rate": [0.01, 0.1]}, seeds=[0, 1], steps=20,
      ...             batch_size=16, eval_every=10, progress=False)
      >>> [h["learning_rate"] for h in res.hyperparams], res.seeds
      ([0.01, 0.01, 0.1, 0.1], [0, 1, 0, 1])
      >>> res.steps.tolist(), res.test["loss"].shape
      ([10, 20], (4, 2))
    """
    static = dict(static or {})
    if loss_key and eval_fn is None:
        raise ValueError("loss_key=True needs an eval_fn: loss_fn then takes a key.")
    counts = (steps, batch_size, eval_every, checkpoint_every, until, train_eval_size, loss_key)
    plan = _plan(grid, seeds, static, data, *counts)
    runs = len(plan.run_seeds)
    first = {k: plan.run_hps[0][k] for k in plan.names}
    opt = optax.inject_hyperparams(optimizer_factory)(**static, **first)
    seeds_arr = jnp.asarray(plan.run_seeds, jnp.uint32)
    hp_arr = {k: jnp.asarray([h[k] for h in plan.run_hps], jnp.float32) for k in plan.names}
    arrays = tuple(jnp.asarray(a) for a in data)
    arrays, seeds_arr, hp_arr, run_sharding = _place(shard, runs, arrays, seeds_arr, hp_arr)
    init_run, chunk_run, evaluate = _program(opt, plan, init_fn, loss_fn, eval_fn, arrays)

    # the shapes first: the configuration check and the compilation need no memory
    abstract = jax.eval_shape(jax.vmap(init_run), seeds_arr, hp_arr)
    if run_sharding is not None:
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=run_sharding), abstract
        )
    groups = jax.eval_shape(lambda p: evaluate(jax.tree.map(lambda a: a[0], p)), abstract[0])
    nan = functools.partial(np.full, (runs, len(plan.evals)), np.nan, np.float32)
    curves = {"train_loss": nan(), **{g: {k: nan() for k in m} for g, m in groups.items()}}
    config = None
    if checkpoint_dir is not None:
        identity = (optimizer_factory, init_fn, loss_fn, eval_fn, static, grid)
        config = _checked_config(os.fspath(checkpoint_dir), identity, plan, arrays, abstract)

    t_compile = time.perf_counter()
    compiled = _compile(chunk_run, plan.evals, seeds_arr, abstract)
    t_compile = time.perf_counter() - t_compile
    _memory_guard(compiled, arrays, abstract, runs, shard, memory_limit_bytes)

    done, params, state, curves = _start(
        checkpoint_dir, abstract, curves, plan.evals, run_sharding, init_run, seeds_arr, hp_arr
    )
    stop = len(plan.evals) if until is None else plan.evals.index(until) + 1
    bar = _progress_bar(progress, len(plan.evals), done, runs)
    t_train = time.perf_counter()
    try:
        for j in range(done, stop):
            start = plan.evals[j - 1] if j else 0
            run_chunk = compiled[plan.evals[j] - start]
            params, state, tl, ev = run_chunk(seeds_arr, params, state, jnp.int32(start))
            curves["train_loss"][:, j] = np.asarray(tl)
            for g, m in ev.items():
                for k, v in m.items():
                    curves[g][k][:, j] = np.asarray(v)
            if bar is not None:
                bar.update(1)
            if checkpoint_dir is not None and ((j + 1) % checkpoint_every == 0 or j + 1 == stop):
                _save(os.fspath(checkpoint_dir), config, plan.evals[j], params, state, curves)
    finally:
        if bar is not None:
            bar.close()
    t_train = time.perf_counter() - t_train

    def done_curves(group):
        return {k: v[:, :stop].astype(np.float64) for k, v in curves.get(group, {}).items()}

    return SweepResult(
        names=plan.names,
        hyperparams=[{k: float(v) for k, v in h.items()} for h in plan.run_hps],
        seeds=plan.run_seeds,
        steps=np.asarray(plan.evals[:stop], np.int64),
        train_loss=curves["train_loss"][:, :stop].astype(np.float64),
        test=done_curves("test"),
        complete=stop == len(plan.evals),
        params=params,
        seconds={"compile": t_compile, "train": t_train},
        train_eval=done_curves("train_eval"),
    )


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The runs of a sweep (grid major, seeds minor) and its evaluation steps."""

    names: list[str]
    run_hps: list[dict[str, float]]
    run_seeds: list[int]
    seeds: list[int]
    steps: int
    batch_size: int
    eval_every: int
    evals: list[int]
    num_train: int
    train_eval_size: int = 0
    loss_key: bool = False

    @property
    def per_epoch(self) -> int:
        return self.num_train // self.batch_size


def _plan(
    grid,
    seeds,
    static,
    data,
    steps,
    batch_size,
    eval_every,
    checkpoint_every,
    until,
    train_eval_size=0,
    loss_key=False,
):
    """The sweep's arguments, checked, as a :class:`_Plan`."""
    names = list(grid)
    points = list(itertools.product(*(list(grid[k]) for k in names)))
    seeds = [int(s) for s in seeds]
    if not seeds or not points:
        raise ValueError("seeds and every list of grid values must be non-empty.")
    if steps < 1 or batch_size < 1 or eval_every < 1 or checkpoint_every < 1:
        raise ValueError("steps, batch_size, eval_every and checkpoint_every must be positive.")
    if overlap := set(names) & set(static):
        raise ValueError(f"{sorted(overlap)} are both in grid and static.")
    x_train, y_train, x_test, y_test = data
    num_train = int(np.shape(x_train)[0])
    if np.shape(y_train)[0] != num_train or np.shape(x_test)[0] != np.shape(y_test)[0]:
        raise ValueError("x and y of a split need the same number of examples.")
    if batch_size > num_train:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_train} training examples.")
    if not 0 <= train_eval_size <= num_train:
        raise ValueError(
            f"train_eval_size={train_eval_size} must be between 0 and the {num_train} "
            "training examples."
        )
    evals = list(range(eval_every, steps, eval_every)) + [steps]
    if until is not None and until not in evals:
        raise ValueError(f"until={until} must be one of the evaluation steps {evals[:5]}...")
    run_hps = [dict(zip(names, p, strict=True)) for p in points for _ in seeds]
    run_seeds = [s for _ in points for s in seeds]
    return _Plan(
        names,
        run_hps,
        run_seeds,
        seeds,
        steps,
        batch_size,
        eval_every,
        evals,
        num_train,
        int(train_eval_size),
        bool(loss_key),
    )


def _program(opt, plan: _Plan, init_fn, loss_fn, eval_fn, arrays):
    """``init_run(seed, hp)``, ``chunk_run(seed, params, state, start, length)`` and
    ``evaluate(params)`` -> ``{"test": metrics, "train_eval": metrics}`` (the latter
    only with ``train_eval_size``) of one run (to be vmapped over runs)."""
    x_train, y_train, x_test, y_test = arrays
    per_epoch, batch_size, n_eval = plan.per_epoch, plan.batch_size, plan.train_eval_size

    def metrics(params, x, y):
        if eval_fn is None:
            return {"loss": loss_fn(params, x, y)}
        out = eval_fn(params, x, y)
        return dict(out) if isinstance(out, Mapping) else {"eval": out}

    def evaluate(params):
        groups = {"test": metrics(params, x_test, y_test)}
        if n_eval:  # sliced in the program: no second copy of the data on the device
            groups["train_eval"] = metrics(params, x_train[:n_eval], y_train[:n_eval])
        return groups

    def init_run(seed, hp):
        init_key, _ = jax.random.split(jax.random.key(seed))
        params = init_fn(init_key)
        state: Any = opt.init(params)
        hyper = dict(state.hyperparams)
        for k in plan.names:
            hyper[k] = hp[k].astype(hyper[k].dtype)
        return params, state._replace(hyperparams=hyper)

    def chunk_run(seed, params, state, start, length):
        _, data_key = jax.random.split(jax.random.key(seed))
        dropout_key = jax.random.fold_in(jax.random.key(seed), 2)

        def order(epoch):
            return jax.random.permutation(jax.random.fold_in(data_key, epoch), plan.num_train)

        def step(carry, t):
            params, state, perm = carry
            # a new order once per epoch, not a sort of the whole training set every step
            perm = jax.lax.cond(t % per_epoch == 0, lambda: order(t // per_epoch), lambda: perm)
            idx = jax.lax.dynamic_slice_in_dim(perm, (t % per_epoch) * batch_size, batch_size)
            batch = (x_train[idx], y_train[idx])
            if plan.loss_key:
                batch = (*batch, jax.random.fold_in(dropout_key, t))
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state, perm), loss

        ts = start + jnp.arange(length, dtype=jnp.int32)
        carry = (params, state, order(start // per_epoch))
        (params, state, _), losses = jax.lax.scan(step, carry, ts)
        return params, state, jnp.mean(losses), evaluate(params)

    return init_run, chunk_run, evaluate


def _place(shard: bool, runs: int, arrays, seeds_arr, hp_arr):
    """With ``shard``, the runs on a 1-D mesh of the local devices and the data replicated."""
    if not shard:
        return arrays, seeds_arr, hp_arr, None
    devices = jax.local_devices()
    if runs % len(devices):
        raise ValueError(
            f"shard=True needs the number of runs ({runs}) to be a multiple of the "
            f"number of local devices ({len(devices)})."
        )
    mesh = jax.sharding.Mesh(np.asarray(devices), ("runs",))
    run_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    arrays = jax.device_put(arrays, replicated)
    seeds_arr, hp_arr = jax.device_put((seeds_arr, hp_arr), run_sharding)
    return arrays, seeds_arr, hp_arr, run_sharding


def _checked_config(checkpoint_dir: str, identity, plan: _Plan, arrays, abstract) -> dict:
    """The sweep's configuration (with its hash); refuses a checkpoint of another one."""
    optimizer_factory, init_fn, loss_fn, eval_fn, static, grid = identity
    config: dict[str, Any] = {
        "factory": _name(optimizer_factory),
        "init_fn": _name(init_fn),
        "loss_fn": _name(loss_fn),
        "eval_fn": _name(eval_fn),
        "static": {k: repr(v) for k, v in sorted(static.items())},
        "grid": {k: [float(v) for v in grid[k]] for k in plan.names},
        "seeds": plan.seeds,
        "steps": plan.steps,
        "batch_size": plan.batch_size,
        "eval_every": plan.eval_every,
        "data_sha256": _digest(arrays),
        "params": repr(jax.tree.map(lambda a: (a.shape, str(a.dtype)), abstract[0])),
        "opt_state": repr(jax.tree.structure(abstract[1])),
    }
    if plan.train_eval_size:  # absent when 0: checkpoints written before it still resume
        config["train_eval_size"] = plan.train_eval_size
    if plan.loss_key:
        config["loss_key"] = True
    config["hash"] = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    config_path = os.path.join(checkpoint_dir, _CONFIG_FILE)
    if os.path.exists(config_path):
        with open(config_path) as f:
            old = json.load(f)
        if old.get("hash") != config["hash"]:
            diff = sorted(k for k in {**old, **config} if old.get(k) != config.get(k))
            diff = [k for k in diff if k != "hash"] or ["hash"]
            raise ValueError(
                f"{checkpoint_dir} holds a sweep of another configuration (differing: "
                f"{', '.join(diff)}); use another checkpoint_dir or delete it."
            )
    return config


def _compile(chunk_run, evals: list[int], seeds_arr, abstract) -> dict[int, Any]:
    """One compiled, vmapped program per chunk length between two evaluations."""

    def compile_chunk(length):
        f = jax.jit(jax.vmap(lambda s, p, o, t: chunk_run(s, p, o, t, length), (0, 0, 0, None)))
        return f.lower(seeds_arr, *abstract, jnp.int32(0)).compile()

    lengths = sorted({b - a for a, b in zip([0, *evals[:-1]], evals, strict=True)})
    return {n: compile_chunk(n) for n in lengths}


def _memory_guard(compiled, arrays, abstract, runs: int, shard: bool, limit: int | None) -> None:
    """Refuses a sweep whose compiled program would not fit, saying how many runs would."""
    shared = _nbytes(arrays)
    measured = [_compiled_bytes(c) for c in compiled.values()]
    if all(m is not None for m in measured):
        total = max(m for m in measured if m is not None)
    else:  # params, grads, updates, state and the inputs of one batch per run
        total = shared + 3 * _nbytes(abstract[0]) + _nbytes(abstract[1])
    per_run = max(1, (total - shared) // runs)
    ndev = len(jax.local_devices()) if shard else 1
    if limit is None:
        limit = _default_memory_limit(jax.local_devices()[0])
    if total > limit:
        fit = max(0, (limit - shared) // per_run) * ndev
        raise ValueError(
            f"the sweep of {runs} runs needs about {total / 2**20:.1f} MiB per device "
            f"({per_run} bytes per run plus {shared} bytes of data), more than the limit of "
            f"{limit / 2**20:.1f} MiB ({limit} bytes): about {fit} runs would fit. "
            "Use fewer grid points or seeds, or split the sweep."
        )


def _start(checkpoint_dir, abstract, curves, evals, run_sharding, init_run, seeds_arr, hp_arr):
    """``(evaluations done, params, state, curves)``: from the checkpoint if there is one."""
    path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, _STATE_DIR)
    if path is None or not os.path.exists(path):
        params, state = jax.jit(jax.vmap(init_run))(seeds_arr, hp_arr)
        return 0, params, state, curves
    from optax_signvar.checkpoint import restore_state

    template = {"step": jnp.zeros((), jnp.int32), "params": abstract[0], "opt_state": abstract[1]}
    restored = restore_state(path, {**template, **curves})
    params, state = restored["params"], restored["opt_state"]
    if run_sharding is not None:
        params, state = jax.device_put((params, state), run_sharding)
    groups = [g for g in curves if g != "train_loss"]  # "test" and maybe "train_eval"
    curves = {
        "train_loss": np.array(restored["train_loss"]),
        **{g: {k: np.array(v) for k, v in restored[g].items()} for g in groups},
    }
    return evals.index(int(restored["step"])) + 1, params, state, curves


def _save(checkpoint_dir: str, config, step: int, params, state, curves) -> None:
    """The configuration (once) and ``{step, params, opt_state, curves}``, atomically
    (``curves``: ``train_loss``, ``test`` and, with ``train_eval_size``, ``train_eval``)."""
    from optax_signvar.checkpoint import save_state

    os.makedirs(checkpoint_dir, exist_ok=True)
    config_path = os.path.join(checkpoint_dir, _CONFIG_FILE)
    if not os.path.exists(config_path):
        tmp = config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=1)
        os.replace(tmp, config_path)
    tree = {"step": jnp.asarray(step, jnp.int32), "params": params, "opt_state": state, **curves}
    save_state(os.path.join(checkpoint_dir, _STATE_DIR), tree, overwrite=True)


def _progress_bar(progress: bool, total: int, done: int, runs: int) -> Any:
    """A tqdm bar over evaluations, or ``None`` (not asked for, or tqdm missing)."""
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, desc=f"sweep ({runs} runs)", unit="eval")


def _mlp_problem(num_train: int = 4096, num_test: int = 1024, dim: int = 32, hidden: int = 64):
    key = jax.random.key(123)
    kx, kt, kw = jax.random.split(key, 3)
    w_true = jax.random.normal(kw, (dim, 10))
    x_train = jax.random.normal(kx, (num_train, dim))
    x_test = jax.random.normal(kt, (num_test, dim))
    data = (x_train, jnp.argmax(x_train @ w_true, -1), x_test, jnp.argmax(x_test @ w_true, -1))

    def init_fn(key):
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, (dim, hidden)) / math.sqrt(dim),
            "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, 10)) / math.sqrt(hidden),
            "b2": jnp.zeros(10),
        }

    def logits(p, x):
        return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()

    def eval_fn(p, x, y):
        acc = jnp.mean((jnp.argmax(logits(p, x), -1) == y).astype(jnp.float32))
        return {"loss": loss_fn(p, x, y), "accuracy": acc}

    return init_fn, loss_fn, eval_fn, data


def benchmark_throughput(
    runs: int = 8, steps: int = 400, batch_size: int = 64, repeats: int = 5
) -> dict:
    """Steps per second of ``runs`` Adam runs as one sweep vs one jitted run at a time.

    Both sides train the same 2-layer MLP (32-64-10, tanh) on 4096 random
    examples with the same data order and a final evaluation on 1024 test
    examples; the sequential side is one ``jax.jit`` of a ``lax.scan`` over the
    steps per run (compiled once, the learning rate an argument), the sweep
    one :func:`sweep` with ``eval_every=steps``. Times exclude compilation
    (``SweepResult.seconds["train"]``; the sequential function runs once to
    warm up); each side is timed ``repeats`` times and the fastest counts (the
    machine may be shared). Returns
    ``{"sweep_steps_per_s", "sequential_steps_per_s", "ratio"}`` counting the
    steps of all runs.
    """
    from optax_signvar import adam

    init_fn, loss_fn, eval_fn, data = _mlp_problem()
    rates = [1e-3 * 2**i for i in range(runs)]

    t_sweep = math.inf
    for _ in range(repeats):
        result = sweep(
            adam,
            init_fn,
            loss_fn,
            data,
            grid={"learning_rate": rates},
            seeds=[0],
            steps=steps,
            batch_size=batch_size,
            eval_every=steps,
            eval_fn=eval_fn,
            progress=False,
        )
        t_sweep = min(t_sweep, result.seconds["train"])

    # the sequential side runs the sweep's own per-run program, one run per call
    opt = optax.inject_hyperparams(adam)(learning_rate=rates[0])
    plan = _plan({"learning_rate": rates}, [0], {}, data, steps, batch_size, steps, 1, None)
    init_run, chunk_run, _ = _program(opt, plan, init_fn, loss_fn, eval_fn, data)

    @jax.jit
    def one(seed, lr):
        params, state = init_run(seed, {"learning_rate": lr})
        return chunk_run(seed, params, state, jnp.int32(0), steps)

    jax.block_until_ready(one(jnp.uint32(0), jnp.float32(rates[0])))
    t_seq = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for lr in rates:
            jax.block_until_ready(one(jnp.uint32(0), jnp.float32(lr)))
        t_seq = min(t_seq, time.perf_counter() - t0)
    total = runs * steps
    return {
        "sweep_steps_per_s": total / t_sweep,
        "sequential_steps_per_s": total / t_seq,
        "ratio": t_seq / t_sweep,
    }


if __name__ == "__main__":
    print(benchmark_throughput())
