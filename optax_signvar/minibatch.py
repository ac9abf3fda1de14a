r"""Per-example gradient moments: the mini-batch gradient and its variance.

Dissecting Adam's variance adaptation needs the variance of the stochastic
gradient. Its optimizers estimate it with moving averages by default; with
per-example gradients the variance of the mini-batch gradient can instead be
estimated from the batch itself (Balles & Hennig 2018, sec. 4.1 and
supplement D), and passed to ``svag``, ``m_svag``, ``m_vassd`` or
``dissect(..., variance="minibatch")`` as ``update(..., grad_variance=tree)``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from optax_signvar import _moment_rules
from optax_signvar._tree import abs_sq, real_dtype

__all__ = ["grad_moments_paths", "per_example_grad_moments"]

Method = Literal["auto", "vmap"]
METHODS: tuple[str, ...] = ("auto", "vmap")
_HIGHEST = jax.lax.Precision.HIGHEST


def _accumulator_dtype(dtype: Any) -> jnp.dtype:
    # Squares of 16-bit gradients overflow (float16) or lose most of their
    # digits (bfloat16); float64 gradients keep float64. Spelled out rather
    # than promote_types, which refuses bfloat16 + float32 under strict promotion.
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype.itemsize < 4 else dtype


def _varying(params: Any, axis_name: Any) -> Any:
    """``params`` marked as varying over ``axis_name`` inside ``shard_map``.

    Parameters replicated over the data axis are *invariant* there, and the
    gradient with respect to an invariant input is summed over the axis (the
    transpose of the implicit broadcast is a ``psum``): ``jax.grad`` would hand
    back cross-device sums, not the local per-example gradients. Marking them
    varying first keeps every device's gradients its own.
    """
    pcast = getattr(jax.lax, "pcast", None)
    if pcast is None:  # older jax, with no varying-ness to track
        return params
    axes = axis_name if isinstance(axis_name, tuple) else (axis_name,)

    def leaf(p):
        p = jnp.asarray(p)
        mat = getattr(jax.typeof(p), "mat", None)
        varying = getattr(mat, "varying", frozenset())
        missing = tuple(a for a in axes if a not in varying)
        return pcast(p, missing, to="varying") if missing else p

    return jax.tree.map(leaf, params)


def _batch_size(batch: Any) -> int:
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ValueError("batch has no array leaves: there is no batch axis to take examples from.")
    sizes = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(
                f"every leaf of batch needs the batch on axis 0; got a scalar leaf ({leaf!r})."
            )
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(
            "the leaves of batch disagree on the batch size (axis 0): "
            f"{jax.tree.map(lambda x: np.shape(x)[0], batch)}."
        )
    return sizes.pop()


def _mean_and_m2(g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean over axis 0 and the sum of squared deviations from it, of one leaf.

    The centred sum (two passes over the per-example gradients) keeps the
    variance accurate where it is tiny next to the squared mean;
    ``sum(G**2) - B * mean**2`` would cancel to noise there in float32, or go
    negative. Both sums over the batch axis are products with a vector of
    ones: XLA:CPU hands reductions over a major axis to a library that is 6-8x
    slower than a matrix-vector product (the ``method="vmap"`` moments of a
    784-512-512-10 MLP at batch 128: 1.36 s against 0.27 s). One case goes the
    other way: where a per-example gradient is itself a fused sum (an RNN
    unrolled in Python, ``method="vmap"``), XLA recomputes it inside both
    products (0.57 s against 0.09 s); ``method="auto"`` does not form it so.
    """
    acc = _accumulator_dtype(g.dtype)
    n, shape = g.shape[0], g.shape[1:]
    flat = g.astype(acc).reshape(n, int(np.prod(shape, dtype=int)))
    mean = jnp.dot(jnp.ones((n,), acc), flat, precision=_HIGHEST) / n
    deviations = abs_sq(flat - mean)
    m2 = jnp.dot(jnp.ones((n,), deviations.dtype), deviations, precision=_HIGHEST)
    return mean.reshape(shape), m2.reshape(shape)


def per_example_grad_moments(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    *,
    axis_name: Hashable | None = None,
    chunk_size: int | None = None,
    method: Method = "auto",
) -> tuple[Any, Any]:
    r"""Mean gradient of a batch and the variance of that mini-batch gradient.

    With :math:`G_k = \nabla_\theta \ell(\theta, x_k)` the gradient of example
    :math:`k` of a batch of size :math:`B`, elementwise per leaf:

    .. math::
      \bar g = \frac{1}{B} \sum_k G_k, \qquad
      s = \frac{1}{B - 1} \Big( \frac{1}{B} \sum_k G_k^2 - \bar g^2 \Big),

    :math:`s` being the unbiased estimate of the variance of the mini-batch
    gradient :math:`\bar g` (the per-example variance divided by :math:`B`), as
    in Dissecting Adam, sec. 4.1. It is what ``svag``, ``m_svag``, ``m_vassd``
    and ``dissect(..., variance="minibatch")`` take as
    ``update(..., grad_variance=s)`` in place of their moving-average estimate.

    **How** (``method="auto"``, the default): ``loss_fn`` is traced for one
    example and evaluated on the batch; where a parameter meets the example (a
    matrix product, a convolution, an embedding lookup, an elementwise scale
    or shift) its per-example gradient is formed from that operation's inputs
    and the per-example gradient of the loss with respect to its output, all of
    which one backward pass of the summed loss gives (the output perturbation
    trick of BackPACK and Goodfellow's per-example norms). A dense layer
    applied to a vector forms no per-example gradient at all: its gradient is
    the outer product :math:`x_k\delta_k^\top`, so
    :math:`\sum_k G_k^2 = (x^{2})^\top \delta^{2}` is one more matrix product;
    an embedding lookup sums its output gradients per (example, row) instead.
    The cost is about that of one gradient of the mean loss (1.2-2x on the
    models of ``python -m benchmarks.moments``) instead of :math:`B`
    backward passes. :func:`grad_moments_paths` reports the path of each
    leaf; a parameter that reaches the loss without meeting the example falls
    back to ``method="vmap"`` for that leaf. ``method="vmap"``: every leaf by
    ``jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))``, the reference.

    **Accuracy.** The variance comes from deviations from the mean, not as
    the difference of the two means above, which cancels catastrophically in
    float32 where the variance is small next to :math:`\bar g^2`: per-example
    gradients are centred directly; factored dense leaves centre their inputs
    and output gradients first (three products instead of two), lookups their
    per-(example, row) sums. Chunks and devices are merged with Chan et al.'s
    pairwise update (chunked, the running mean is rounded once per chunk, ~1e-3
    relative at a mean 1e5 times the spread, against no correct digit for the
    difference of means). Sums are kept in float32 at least (float64 for
    float64 gradients); the results are cast back to the parameters' dtypes.

    Memory: one backward pass, plus :math:`B` (or ``chunk_size``) times the
    size of each leaf whose per-example gradients are formed (biases,
    convolution kernels, norms, weights applied along a sequence), plus two
    parameter-sized accumulators. ``method="vmap"``: :math:`B` times the size
    of ``params``.

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar``, the loss of *one*
        example.
      params: a pytree of real floating-point arrays; ``None`` leaves are
        kept as ``None``.
      batch: a pytree whose leaves all have the batch on axis 0, with the same
        size :math:`B`; example :math:`k` is the pytree of the leaves sliced at
        index :math:`k` (``x[k]``, the batch axis removed). Put per-example
        randomness (keys) in the batch too, or close over it in ``loss_fn``.
      axis_name: inside ``jax.shard_map`` (or ``jax.pmap``) over a
        data-parallel axis, its name (or a tuple of names): counts, means and
        squared deviations are summed over it (``jax.lax.psum``), so the mean
        and the variance are those of the *global* batch, replicated on every
        device. ``batch`` is then the local shard.
      chunk_size: compute the per-example gradients ``chunk_size`` at a time
        (``jax.lax.scan`` over chunks), so that only ``chunk_size`` of them are
        in memory instead of :math:`B`. Must divide the (local) batch size.
        ``None``: all at once.
      method: ``"auto"`` (default): per-operation rules, with the per-example
        path only for the leaves no rule covers; ``"vmap"``: the per-example
        path (``jax.vmap`` of ``jax.grad``) for every leaf.

    Returns:
      ``(grad_mean, grad_variance)``: two pytrees with the structure and the
      dtypes of ``params``; for a complex parameter the variance is
      :math:`E|G - \bar G|^2/(B-1)` in the real dtype (float32 for complex64).

    Raises:
      ValueError: if the batch leaves have no common axis-0 size, if
        ``chunk_size`` is not a positive divisor of the local batch size, or if
        the global batch size is 1 (the variance is undefined), or if
        ``method`` is not one of ``"auto"``, ``"vmap"``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import optax_signvar
      >>> from optax_signvar.minibatch import per_example_grad_moments
      >>> def loss_fn(params, example):  # one example: x of shape (3,), y a scalar
      ...     pred = example["x"] @ params["w"] + params["b"]
      ...     return 0.5 * (pred - example["y"]) ** 2
      >>> params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
      >>> batch = {"x": jnp.arange(12.0).reshape(4, 3), "y": jnp.array([1.0, -1.0, 2.0, 0.0])}
      >>> grad_mean, grad_variance = per_example_grad_moments(loss_fn, params, batch)
      >>> print(grad_mean["b"], f"{grad_variance['b']:.4f}")  # G_b = -y
      -0.5 0.4167
      >>> opt = optax_signvar.m_svag(learning_rate=0.1)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(grad_mean, state, params, grad_variance=grad_variance)
      >>> print(f"{updates['b']:.5f}")  # -0.1 * m * m**2 / (m**2 + s) at t = 1
      0.01875
      >>> params = optax.apply_updates(params, updates)

      Over a data-parallel mesh (global batch sharded on ``"data"``)::

        mesh = jax.make_mesh((n_devices,), ("data",))
        moments = jax.shard_map(
            lambda p, b: per_example_grad_moments(loss_fn, p, b, axis_name="data"),
            mesh=mesh, in_specs=(P(), P("data")), out_specs=P(),
        )

    References:
      Dangel, Kunstner & Hennig, `BackPACK: Packing more into Backprop
      <https://arxiv.org/abs/1912.10985>`_, ICLR 2020.

      Goodfellow, `Efficient Per-Example Gradient Computations
      <https://arxiv.org/abs/1510.01799>`_, 2015.

      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 4.1 and
      supplement D, ICML 2018.

      Chan, Golub & LeVeque, `Algorithms for Computing the Sample Variance:
      Analysis and Recommendations <https://doi.org/10.1080/00031305.1983.10483115>`_,
      The American Statistician, 1983.
    """
    local_size = _batch_size(batch)
    chunk_size = _checked_chunk_size(chunk_size, local_size)
    _checked_method(method)
    # psum of a Python int is a Python int: the global size is known statically.
    size = local_size if axis_name is None else jax.lax.psum(local_size, axis_name)
    if isinstance(size, int) and size < 2:
        where = "" if axis_name is None else f" over axis {axis_name!r}"
        raise ValueError(
            f"the variance of the mini-batch gradient needs a batch of at least 2 examples; "
            f"got B == {size}{where}."
        )

    leaves, treedef = jax.tree.flatten(params)
    dtypes = [jnp.result_type(x) for x in leaves]
    vary = (lambda t: t) if axis_name is None else (lambda t: _varying(t, axis_name))
    leaves = vary(leaves)
    moments = _moments_function(loss_fn, treedef, leaves, batch, method, vary)
    if chunk_size is None or chunk_size == local_size:
        mean, m2 = moments(batch)
    else:
        mean, m2 = _chunked_mean_and_m2(moments, leaves, batch, chunk_size)
    if axis_name is not None:
        mean, m2 = _global_mean_and_m2(mean, m2, local_size, size, axis_name)

    grad_mean = [m.astype(d) for d, m in zip(dtypes, mean, strict=True)]
    # the variance of a complex gradient is E|G - mean|^2, real
    grad_variance = [
        (q / (size * (size - 1))).astype(real_dtype(d)) for d, q in zip(dtypes, m2, strict=True)
    ]
    return jax.tree.unflatten(treedef, grad_mean), jax.tree.unflatten(treedef, grad_variance)


def _checked_method(method: Any) -> None:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def _moments_function(
    loss_fn: Callable, treedef: Any, leaves: list, batch: Any, method: str, vary: Callable
) -> Callable[[Any], tuple[list, list]]:
    """``batch -> (means, m2s)`` per leaf, by the rules or by ``jax.vmap``."""

    def per_example_grads(indices, batch):
        def loss(chosen, example):
            full = list(leaves)
            for i, v in zip(indices, chosen, strict=True):
                full[i] = v
            return loss_fn(jax.tree.unflatten(treedef, full), example)

        chosen = [leaves[i] for i in indices]
        return jax.vmap(jax.grad(loss), in_axes=(None, 0))(chosen, batch)

    everything = list(range(len(leaves)))
    if method == "vmap":
        return lambda batch: _unzip(map(_mean_and_m2, per_example_grads(everything, batch)))
    program = _moment_rules.trace(loss_fn, treedef, leaves, batch)

    def moments(batch):
        mean, m2 = _moment_rules.moments(
            program,
            leaves,
            jax.tree.leaves(batch),
            size=_batch_size(batch),
            acc_dtype=_accumulator_dtype,
            mean_and_m2=_mean_and_m2,
            vary=vary,
        )
        fallback = sorted(program.unbatched)
        if fallback:
            for i, g in zip(fallback, per_example_grads(fallback, batch), strict=True):
                mean[i], m2[i] = _mean_and_m2(g)
        return mean, m2

    return moments


def _unzip(pairs: Any) -> tuple[list, list]:
    pairs = list(pairs)
    return [a for a, _ in pairs], [b for _, b in pairs]


def _checked_chunk_size(chunk_size: Any, local_size: int) -> int | None:
    if chunk_size is None:
        return None
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
        or local_size % chunk_size
    ):
        raise ValueError(
            f"chunk_size must be a positive integer dividing the batch size {local_size} "
            f"(axis 0 of the batch leaves), got {chunk_size!r}."
        )
    return int(chunk_size)


def _chunked_mean_and_m2(
    moments: Callable[[Any], tuple[list, list]], leaves: list, batch: Any, chunk_size: int
) -> tuple[list, list]:
    """``moments`` over the batch, ``chunk_size`` examples at a time, merged."""
    n_chunks = _batch_size(batch) // chunk_size
    chunks = jax.tree.map(lambda x: jnp.reshape(x, (n_chunks, chunk_size) + np.shape(x)[1:]), batch)

    def zeros(p, real=False):
        # zeros_like, not zeros: the carry must be as varying as the params
        dtype = _accumulator_dtype(jnp.result_type(p))
        return jnp.zeros_like(p, dtype=real_dtype(dtype) if real else dtype)

    def body(carry, chunk):
        index, mean, m2 = carry
        c_mean, c_m2 = moments(chunk)
        # Chan et al.'s merge of (n, mean, m2) with a chunk of c examples:
        # only deviations are squared, so nothing cancels against mean**2.
        n_seen = index * chunk_size

        def new_mean(mean, c_mean):
            n = n_seen.astype(mean.dtype)
            return mean + chunk_size / (n + chunk_size) * (c_mean - mean)

        def new_m2(m2, mean, c_mean, c_m2):
            n = n_seen.astype(m2.dtype)
            return m2 + c_m2 + n * chunk_size / (n + chunk_size) * abs_sq(c_mean - mean)

        carry = (
            index + 1,
            list(map(new_mean, mean, c_mean)),
            list(map(new_m2, m2, mean, c_mean, c_m2)),
        )
        return carry, None

    m2 = [zeros(p, real=True) for p in leaves]
    init = (jnp.zeros((), jnp.int32), [zeros(p) for p in leaves], m2)
    (_, mean, m2), _ = jax.lax.scan(body, init, chunks)
    return mean, m2


def _global_mean_and_m2(
    mean: Any, m2: Any, local_size: int, size: Any, axis_name: Hashable
) -> tuple[Any, Any]:
    """The local moments summed over a data-parallel axis into the global batch's.

    Two rounds (the global mean first, then deviations from it) rather than one
    psum of sum(G) and sum(G**2), which would cancel as :func:`_mean_and_m2` says.
    """
    local_mean = mean
    mean = [jax.lax.psum(m * local_size, axis_name) / size for m in local_mean]
    m2 = [
        jax.lax.psum(q + local_size * abs_sq(lm - gm), axis_name)
        for q, lm, gm in zip(m2, local_mean, mean, strict=True)
    ]
    return mean, m2


def grad_moments_paths(loss_fn: Callable[[Any, Any], jax.Array], params: Any, batch: Any) -> Any:
    r"""How :func:`per_example_grad_moments` forms each leaf's moments.

    ``method="auto"`` traces ``loss_fn`` for one example and finds where each
    parameter meets the example (a matrix product, a convolution, a lookup, an
    elementwise scale). This reports what it found, per leaf, without computing
    anything:

    * ``"factored: dot_general"``: a dense layer on a vector, where the
      per-example gradient is the outer product :math:`x_n \delta_n^\top`; the
      sums :math:`\sum_n G_n` and :math:`\sum_n G_n^2` are two matrix products
      of the batch's inputs and output gradients (of their squares for the
      second), and no per-example gradient is formed.
    * ``"factored: gather"``: an embedding lookup ``table[ids]`` (or
      ``jnp.take(table, ids, axis=0)``): example :math:`n`'s gradient of a row
      is the sum of its output gradients where it looked that row up; those
      sums are formed per (example, id) pair by a sort of the batch's ids, not
      as a ``[B, rows, width]`` array.
    * ``"per-example: <primitives>"``: the per-example gradients of the leaf
      are formed (``B`` times its size in memory) from the inputs and output
      gradients of the operations named, each by its own vector-Jacobian
      product batched over the examples: one backward pass of the whole loss,
      not ``B``. A leaf used by several operations (a weight shared across time
      steps, a tied embedding) sums them per example; a weight multiplying a
      new input at every step (an RNN unrolled in Python) is one batched
      product over the steps. A ``jax.lax.scan`` whose body uses parameters
      (Flax's ``nn.RNN``) is one operation, ``"per-example: scan"``, whose
      per-example gradients cost about what ``method="vmap"`` pays for it.
    * ``"vmap: <reason>"``: the leaf's per-example gradients come from
      ``jax.vmap(jax.grad(loss_fn))``, as with ``method="vmap"``.
    * ``"unused: ..."``: the loss does not depend on the leaf; its mean and
      variance are 0.

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar``, as for
        :func:`per_example_grad_moments`.
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``).
      batch: a batch (arrays or ``jax.ShapeDtypeStruct``), batch on axis 0.

    Returns:
      A pytree with the structure of ``params``: one string per leaf, ``None``
      leaves kept as ``None``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar.minibatch import grad_moments_paths
      >>> def loss_fn(params, example):
      ...     hidden = jnp.tanh(example["x"] @ params["w"])
      ...     return jnp.sum((hidden * params["scale"] - example["y"]) ** 2)
      >>> params = {"w": jnp.zeros((3, 2)), "scale": jnp.ones(2)}
      >>> batch = {"x": jnp.zeros((4, 3)), "y": jnp.zeros((4, 2))}
      >>> paths = grad_moments_paths(loss_fn, params, batch)
      >>> print(paths["w"], "|", paths["scale"])
      factored: dot_general | per-example: mul
    """
    _batch_size(batch)
    leaves, treedef = jax.tree.flatten(params)
    program = _moment_rules.trace(loss_fn, treedef, leaves, batch)
    return jax.tree.unflatten(treedef, _moment_rules.paths(program))
