"""Data-parallel training of the digits MLP with M-SVAG, fed the global mini-batch variance.

The 64-64-10 tanh MLP of :mod:`optax_signvar.demo.digits` (same data, split, init
and loss) is trained with ``osv.m_svag`` on a 1-D mesh ``("data",)`` over every
device of every process: the parameters and the optimizer state are
replicated, each global mini-batch is split over the devices, and inside
``jax.shard_map`` every device computes the per-example gradients of its share,
whose sums are ``jax.lax.psum``-ed over the data axis into the global mean
gradient and the global mini-batch variance
(:func:`optax_signvar.minibatch.per_example_grad_moments` with
``axis_name="data"``)::

    g = mean_k G_k,    s = sum_k (G_k - g)^2 / (B (B - 1))

(Dissecting Adam, sec. 4.1 and supplement D). They are fed to the optimizer as
``opt.update(g, state, params, grad_variance=s)``, which replaces M-SVAG's
moving-average variance estimate (``--no-grad-variance``: M-SVAG's own estimate).

The global batches depend only on ``--seed`` and ``--batch-size``, never on the
number of devices or processes, so a data-parallel run follows the
single-device run up to the order of float summation.

Usage::

    python -m optax_signvar.demo.data_parallel --devices 8 --steps 200   # 8 simulated CPU devices
    python -m optax_signvar.demo.data_parallel --devices 1 --steps 200   # the same, on one device
    # two processes (here on one machine, 2 CPU devices each), e.g. one per host of a cluster:
    python -m optax_signvar.demo.data_parallel --devices 2 --coordinator 127.0.0.1:12345 \\
        --num-processes 2 --process-id 0 &
    python -m optax_signvar.demo.data_parallel --devices 2 --coordinator 127.0.0.1:12345 \\
        --num-processes 2 --process-id 1

``--devices N`` makes jax see N simulated host (CPU) devices per process and
selects the CPU platform (``jax.config.update("jax_num_cpu_devices", N)`` and
``jax.config.update("jax_platforms", "cpu")``, which take effect as long as jax
has not initialised its backends yet, that is before the first computation);
without it every device jax finds is used. With ``--coordinator`` the processes
join through ``jax.distributed.initialize`` and the CPU collectives across
processes are gloo's (``jax_cpu_collectives_implementation="gloo"``); on GPUs
or TPUs jax uses its own. Process 0 prints the loss curve (the loss of each global mini-batch,
before its step) and writes ``--save-params``; the processes check at the end
that their replicas of the parameters agree.

Needs scikit-learn (the digits data): ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import optax_signvar as osv
from optax_signvar.demo.digits import accuracy, init_mlp, load_data, loss_fn
from optax_signvar.minibatch import per_example_grad_moments

__all__ = ["global_batches", "main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m optax_signvar.demo.data_parallel",
        description=(__doc__ or "").split("\n")[0],
    )
    p.add_argument("--devices", type=int, help="simulated CPU devices per process")
    p.add_argument("--steps", type=int, default=200, help="(default: 200)")
    p.add_argument("--batch-size", type=int, default=64, help="global batch (default: 64)")
    p.add_argument("--lr", type=float, default=0.3, help="M-SVAG's rate (default: 0.3)")
    p.add_argument("--beta", type=float, default=0.9, help="M-SVAG's decay (default: 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init and the batch order")
    p.add_argument(
        "--grad-variance",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="feed the global mini-batch variance to M-SVAG (default: on)",
    )
    p.add_argument(
        "--chunk-size", type=int, help="per-example gradients this many at a time (memory)"
    )
    p.add_argument("--log-every", type=int, help="print every k-th loss (default: ~20 lines)")
    p.add_argument("--save-params", metavar="FILE", help="write the params and losses (.npz)")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="jax.distributed coordinator")
    p.add_argument("--num-processes", type=int, help="processes in the job (with --coordinator)")
    p.add_argument("--process-id", type=int, help="this process's index (with --coordinator)")
    args = p.parse_args(argv)
    if args.devices is not None and args.devices < 1:
        p.error("--devices must be positive")
    if args.steps < 1 or args.batch_size < 2:
        p.error("--steps must be positive and --batch-size at least 2 (for a variance)")
    multi = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in multi) and any(v is None for v in multi):
        p.error("--coordinator, --num-processes and --process-id go together")
    if args.log_every is None:
        args.log_every = max(1, args.steps // 20)
    return args


def _simulate_host_devices(n: int) -> None:
    """Makes jax see ``n`` CPU devices (and only the CPU platform).

    jax is imported by now (this module is part of the package), but both settings
    are read only when jax initialises its backends, at the first computation.
    """
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError("--devices must be set before jax initialises its backends")
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", n)


def _setup(args: argparse.Namespace) -> None:
    """Devices and processes, before the first computation initialises jax's backends."""
    if args.devices is not None:
        _simulate_host_devices(args.devices)
    if args.coordinator is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )


def _log(*a: object) -> None:
    if jax.process_index() == 0:
        print(*a, flush=True)


def global_batches(n_train: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """Index arrays of the global mini-batches: epochs of a shuffled order, the ragged
    end of each epoch dropped. Host numpy, the same in every process."""
    if batch_size > n_train:
        raise SystemExit(f"--batch-size must be at most {n_train} (the train set)")
    rng = np.random.default_rng(seed)
    per_epoch = n_train // batch_size
    out = []
    while len(out) < steps:
        order = rng.permutation(n_train)[: per_epoch * batch_size]
        out.extend(order.reshape(per_epoch, batch_size))
    return out[:steps]


def _put(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """``a`` as a global array; works when not every device is this process's."""
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _example_loss(params: Any, example: tuple[jax.Array, jax.Array]) -> jax.Array:
    x, y = example
    return loss_fn(params, x[None], y[None])


def make_step(
    args: argparse.Namespace, mesh: Mesh, opt: optax.GradientTransformation
) -> Callable[..., Any]:
    """The training step on the global batch: moments in ``shard_map``, then the update."""
    batch = args.batch_size

    def moments(params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, Any, Any]:
        """On one device's share of the batch: the global loss, mean gradient and variance."""
        grad_mean, grad_variance = per_example_grad_moments(
            _example_loss, params, (x, y), axis_name="data", chunk_size=args.chunk_size
        )
        losses = jax.vmap(_example_loss, in_axes=(None, 0))(params, (x, y))
        return jax.lax.psum(jnp.sum(losses), "data") / batch, grad_mean, grad_variance

    global_moments = jax.shard_map(
        moments, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P(), P())
    )

    def step(params: Any, state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grad_mean, grad_variance = global_moments(params, x, y)
        extra = {"grad_variance": grad_variance} if args.grad_variance else {}
        updates, state = opt.update(grad_mean, state, params, **extra)
        return optax.apply_updates(params, updates), state, loss

    return step


def _train(
    mesh: Mesh,
    opt: optax.GradientTransformation,
    step: Callable[..., Any],
    params0: dict[str, np.ndarray],
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    batches: Sequence[np.ndarray],
) -> tuple[dict[str, jax.Array], np.ndarray, float, float]:
    """Runs the steps; returns the (global) params, the losses and the compile and train s."""
    replicated = NamedSharding(mesh, P())
    split = NamedSharding(mesh, P("data"))
    with jax.set_mesh(mesh):
        params = jax.tree.map(lambda a: _put(a, replicated), params0)
        state = jax.jit(opt.init)(params)
        step_fn = jax.jit(step, donate_argnums=(0, 1))

        def batch_arrays(idx: np.ndarray) -> tuple[jax.Array, jax.Array]:
            return _put(x_tr[idx], split), _put(y_tr[idx], split)

        start = time.perf_counter()
        step_fn = step_fn.lower(params, state, *batch_arrays(batches[0])).compile()
        compile_s = time.perf_counter() - start
        # On CPU, XLA runs every device's share of a step on one thread pool sized by
        # the cores; with several steps in flight, the threads of a later step can
        # occupy the pool while an all-reduce of an earlier one waits for its last
        # participant, and the rendezvous times out and aborts the process (seen with
        # 2 to 8 simulated devices pinned to 2 cores, not with 16 cores). Waiting for
        # each step on CPU avoids that; accelerators keep the steps pipelined.
        sync = jax.devices()[0].platform == "cpu"
        losses = []
        start = time.perf_counter()
        for idx in batches:
            params, state, loss = step_fn(params, state, *batch_arrays(idx))
            if sync:
                jax.block_until_ready((params, state, loss))
            losses.append(loss)
        loss_curve = np.array([float(np.asarray(v.addressable_data(0))) for v in losses])
        train_s = time.perf_counter() - start
    return params, loss_curve, compile_s, train_s


def main(argv: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Trains and returns ``(params, losses)`` as numpy (params: a dict of arrays)."""
    args = parse_args(argv)
    _setup(args)
    n_dev = jax.device_count()
    batch = args.batch_size
    if batch % n_dev:
        raise SystemExit(f"--batch-size {batch} is not a multiple of the {n_dev} devices")
    x_tr, y_tr, x_te, y_te = (np.asarray(a) for a in load_data())
    batches = global_batches(x_tr.shape[0], batch, args.steps, args.seed)
    params0 = jax.tree.map(np.asarray, init_mlp(jax.random.PRNGKey(args.seed)))

    mesh = jax.make_mesh((n_dev,), ("data",))
    opt = osv.m_svag(args.lr, beta=args.beta)
    _log(
        f"{jax.process_count()} process(es), {n_dev} {jax.devices()[0].platform} devices "
        f"({jax.local_device_count()} local); mesh {dict(mesh.shape)}; m_svag(lr={args.lr}, "
        f"beta={args.beta}), global batch {batch} ({batch // n_dev} per device), "
        f"grad_variance={'global mini-batch' if args.grad_variance else 'off (EMA)'}"
    )
    step = make_step(args, mesh, opt)
    global_params, losses, compile_s, train_s = _train(
        mesh, opt, step, params0, x_tr, y_tr, batches
    )
    # every device holds a replica: this process's first is its copy
    params = {k: np.asarray(v.addressable_data(0)) for k, v in global_params.items()}
    if jax.process_count() > 1:
        multihost_utils.assert_equal(params, "the replicas of the parameters diverged")

    for i, loss in enumerate(losses, start=1):
        if i % args.log_every == 0 or i in (1, len(losses)):
            _log(f"step {i:5d}  loss {loss:.6f}")
    replica = {k: jnp.asarray(v) for k, v in params.items()}
    train_loss = float(loss_fn(replica, jnp.asarray(x_tr), jnp.asarray(y_tr)))
    test_acc = float(accuracy(replica, jnp.asarray(x_te), jnp.asarray(y_te)))
    _log(
        f"after {args.steps} steps: train loss {train_loss:.4f}, test accuracy {test_acc:.2%}; "
        f"compile {compile_s:.2f} s, {args.steps / train_s:.0f} steps/s"
    )
    if args.save_params and jax.process_index() == 0:
        arrays: dict[str, Any] = {"loss_curve": losses, **params}
        np.savez(args.save_params, **arrays)
        _log(f"saved {args.save_params}")
    if args.coordinator is not None:
        jax.distributed.shutdown()
    return params, losses


if __name__ == "__main__":
    main()
