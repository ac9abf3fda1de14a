"""Run several points of the optimizer space on one problem, with shared seeds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_signvar.factory import dissect

__all__ = ["ablate", "summarize"]

Config = Mapping[str, Any] | optax.GradientTransformation


def _optimizer(config: Config) -> optax.GradientTransformation:
    if isinstance(config, optax.GradientTransformation):
        return config
    return dissect(**config)


def ablate(
    configs: Mapping[str, Config],
    loss_fn: Callable[[Any, Any], jax.Array],
    init_params: Any,
    *,
    steps: int,
    seeds: Iterable[int] = (0,),
    log_every: int = 1,
    eval_fn: Callable[[Any], Any] | None = None,
    inputs: Any = None,
    project: Callable[[Any], Any] | None = None,
    moments_fn: Callable[[Any, Any], tuple[Any, Any]] | None = None,
) -> list[dict]:
    """Trains every configuration on one problem and returns a tidy table of curves.

    Every configuration sees the same initial parameters and the same sequence
    of random keys (or ``inputs``) for a given seed, so differences come from
    the update rule alone. Seeds run in parallel (``jax.vmap``) and steps in
    one ``lax.scan``: one compilation per configuration.

    Args:
      configs: name -> keyword arguments of :func:`optax_signvar.dissect`
        (``learning_rate`` included), or name -> an optax transformation (e.g.
        a named optimizer or an optax baseline).
      loss_fn: ``loss_fn(params, key)``, the (stochastic) training loss; the
        key draws the mini-batch or the noise of the step. With ``inputs``,
        ``loss_fn(params, inputs[t])`` instead.
      init_params: a pytree, or a function of a key returning one.
      steps: number of updates.
      seeds: the seeds; seed ``s`` gives the keys of both ``init_params`` and
        the steps.
      log_every: record every ``log_every``-th step (and the last).
      eval_fn: optional ``eval_fn(params)``, e.g. the full-batch loss or a test
        accuracy, recorded next to the training loss; a scalar (column
        ``"eval"``) or a dict of scalars (one column per key). It runs at the
        recorded steps only, so it may be as expensive as a test-set pass.
      inputs: optional pytree whose leaves have a leading axis of length
        ``steps``, e.g. the round ``t`` of an online problem or fixed
        mini-batch indices; the same for every seed.
      project: optional ``project(params)`` applied after every update, for
        constrained problems (projected online gradient descent).
      moments_fn: optional ``moments_fn(params, x) -> (grads, grad_variance)``
        (e.g. :func:`~optax_signvar.per_example_grad_moments` of the step's
        mini-batch): the update then is ``update(grads, state, params,
        grad_variance=grad_variance)``, for optimizers fed the mini-batch
        variance (``m_svag``, ``m_vassd``, ``dissect(...,
        variance="minibatch")``); ``loss_fn`` only gives the recorded loss.

    Returns:
      A list of rows ``{"config", "seed", "step", "loss", "mean_loss"[,
      "eval" or the keys of eval_fn's dict]}``, where ``loss`` is the training
      loss at the parameters *before* update ``step`` (``step`` counts from
      0), ``mean_loss`` the mean of ``loss`` over steps ``0..step`` (the
      average regret, when ``loss_fn`` is a regret) and the eval columns are
      ``eval_fn`` at the same parameters. ``pandas.DataFrame(rows)`` makes it a
      data frame.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from optax_signvar import research
      >>> def loss_fn(x, key):  # a noisy quadratic
      ...   g = 0.5 * jax.random.normal(key, x.shape)
      ...   return 0.5 * jnp.sum(x**2) + jnp.sum(g * x)
      >>> rows = research.ablate(
      ...     {"M-SGD": dict(learning_rate=0.1),
      ...      "M-SVAG": dict(learning_rate=0.1, variance_adaptation="optimal")},
      ...     loss_fn, jnp.ones(10), steps=100, seeds=[0, 1], log_every=50)
      >>> sorted({(r["config"], r["step"]) for r in rows})
      [('M-SGD', 0), ('M-SGD', 50), ('M-SGD', 99), ('M-SVAG', 0), ('M-SVAG', 50), ('M-SVAG', 99)]
    """
    seeds = [int(s) for s in seeds]
    if steps < 1 or log_every < 1 or not seeds:
        raise ValueError("steps and log_every must be positive and seeds non-empty.")
    if inputs is not None:
        lengths = {
            int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in jax.tree.leaves(inputs)
        }
        if lengths != {steps}:
            raise ValueError(f"every leaf of inputs needs a leading axis of length steps={steps}.")
    logged = np.unique(np.r_[np.arange(0, steps, log_every), steps - 1])
    rows = []
    for name, config in configs.items():
        opt = _optimizer(config)
        curves = _run(
            opt, loss_fn, init_params, eval_fn, steps, seeds, logged, inputs, project, moments_fn
        )
        for i, seed in enumerate(seeds):
            for t in logged:
                row = {"config": name, "seed": seed, "step": int(t)}
                row.update({k: float(v[i, t]) for k, v in curves.items()})
                rows.append(row)
    return rows


def _run(
    opt: optax.GradientTransformation,
    loss_fn: Callable[..., Any],
    init_params: Any,
    eval_fn: Callable[[Any], Any] | None,
    steps: int,
    seeds: Iterable[int],
    logged: np.ndarray,
    inputs: Any,
    project: Callable[[Any], Any] | None,
    moments_fn: Callable[[Any, Any], tuple[Any, Any]] | None = None,
) -> dict[str, np.ndarray]:
    is_logged = np.zeros(steps, bool)
    is_logged[logged] = True

    def evaluate(params):
        out = eval_fn(params)  # pyright: ignore[reportOptionalCall]
        return dict(out) if isinstance(out, Mapping) else {"eval": out}

    def one_seed(key):
        init_key, step_key = jax.random.split(key)
        params: Any = init_params(init_key) if callable(init_params) else init_params
        blank = None
        if eval_fn is not None:
            blank = jax.tree.map(jnp.zeros_like, jax.eval_shape(evaluate, params))

        def step(carry, xs):
            params, state = carry
            x, record_now = xs
            extra = {}
            if moments_fn is None:
                loss, grads = jax.value_and_grad(loss_fn)(params, x)
            else:
                loss = loss_fn(params, x)
                grads, extra["grad_variance"] = moments_fn(params, x)
            record = {"loss": loss}
            if eval_fn is not None:
                # The predicate is the same for every seed, so under vmap this stays a
                # branch: the (expensive) evaluation runs at the recorded steps only.
                record.update(jax.lax.cond(record_now, evaluate, lambda _: blank, params))
            updates, state = opt.update(grads, state, params, **extra)
            params = optax.apply_updates(params, updates)
            if project is not None:
                params = project(params)
            return (params, state), record

        xs = jax.random.split(step_key, steps) if inputs is None else inputs
        _, records = jax.lax.scan(step, (params, opt.init(params)), (xs, jnp.asarray(is_logged)))
        return records

    keys = jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    run = jax.jit(jax.vmap(lambda k: one_seed(jax.random.wrap_key_data(k))))
    curves = {k: np.asarray(v) for k, v in run(keys).items()}
    loss = curves["loss"].astype(np.float64)
    curves["mean_loss"] = np.cumsum(loss, axis=1) / np.arange(1, steps + 1)
    return curves


def summarize(rows: Iterable[Mapping[str, Any]], value: str = "loss") -> list[dict]:
    """Mean and standard deviation over seeds, per configuration and step.

    Args:
      rows: the output of :func:`ablate`.
      value: the column to summarise (``"loss"`` or ``"eval"``).

    Returns:
      Rows ``{"config", "step", "mean", "std", "n"}`` in the order first seen.

    Example:
      >>> from optax_signvar.research import summarize
      >>> summarize([{"config": "a", "seed": 0, "step": 0, "loss": 1.0},
      ...            {"config": "a", "seed": 1, "step": 0, "loss": 3.0}])
      [{'config': 'a', 'step': 0, 'mean': 2.0, 'std': 1.0, 'n': 2}]
    """
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["config"], row["step"]), []).append(row[value])
    return [
        {"config": c, "step": t, "mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)}
        for (c, t), v in groups.items()
    ]
