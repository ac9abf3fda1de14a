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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_signvar._tree import abs_sq, real_dtype

__all__ = ["per_example_grad_moments"]


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


def _mean_and_m2(grads: Any) -> tuple[Any, Any]:
    """Mean over axis 0 and the sum of squared deviations from it, per leaf.

    The centred sum (two passes over the per-example gradients, which are in
    memory anyway) keeps the variance accurate where it is tiny next to the
    squared mean; ``sum(G**2) - B * mean**2`` would cancel to noise there in
    float32, or go negative.
    """
    mean = jax.tree.map(lambda g: jnp.mean(g.astype(_accumulator_dtype(g.dtype)), axis=0), grads)
    m2 = jax.tree.map(lambda g, m: jnp.sum(abs_sq(g.astype(m.dtype) - m), axis=0), grads, mean)
    return mean, m2


def per_example_grad_moments(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    *,
    axis_name: Hashable | None = None,
    chunk_size: int | None = None,
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

    The per-example gradients are ``jax.vmap(jax.grad(loss_fn), in_axes=(None,
    0))``. The variance is computed from deviations from the mean (merged
    across chunks and devices with Chan et al.'s pairwise update), not as the
    difference of the two means above, which cancels catastrophically in
    float32 where the variance is small next to :math:`\bar g^2` (chunked, the
    running mean is rounded once per chunk, so there the result is a little
    less accurate than in one pass, ~1e-3 relative at a mean 1e5 times the
    spread, against no correct digit for the difference of means). Sums are
    kept in float32 at least (float64 for float64 gradients); the results are
    cast back to the parameters' dtypes.

    Memory: the per-example gradients take :math:`B` (or ``chunk_size``) times
    the size of ``params``, plus two parameter-sized accumulators (the mean and
    the sum of squared deviations, in the accumulation dtype; chunked, two more
    for the chunk's own).

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

    Returns:
      ``(grad_mean, grad_variance)``: two pytrees with the structure and the
      dtypes of ``params``; for a complex parameter the variance is
      :math:`E|G - \bar G|^2/(B-1)` in the real dtype (float32 for complex64).

    Raises:
      ValueError: if the batch leaves have no common axis-0 size, if
        ``chunk_size`` is not a positive divisor of the local batch size, or if
        the global batch size is 1 (the variance is undefined).

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
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, sec. 4.1 and
      supplement D, ICML 2018.

      Chan, Golub & LeVeque, `Algorithms for Computing the Sample Variance:
      Analysis and Recommendations <https://doi.org/10.1080/00031305.1983.10483115>`_,
      The American Statistician, 1983.
    """
    local_size = _batch_size(batch)
    chunk_size = _checked_chunk_size(chunk_size, local_size)
    # psum of a Python int is a Python int: the global size is known statically.
    size = local_size if axis_name is None else jax.lax.psum(local_size, axis_name)
    if isinstance(size, int) and size < 2:
        where = "" if axis_name is None else f" over axis {axis_name!r}"
        raise ValueError(
            f"the variance of the mini-batch gradient needs a batch of at least 2 examples; "
            f"got B == {size}{where}."
        )

    per_example_grads = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))
    dtypes = jax.tree.map(jnp.result_type, params)
    if axis_name is not None:
        params = _varying(params, axis_name)
    if chunk_size is None or chunk_size == local_size:
        mean, m2 = _mean_and_m2(per_example_grads(params, batch))
    else:
        mean, m2 = _chunked_mean_and_m2(per_example_grads, params, batch, chunk_size)
    if axis_name is not None:
        mean, m2 = _global_mean_and_m2(mean, m2, local_size, size, axis_name)

    grad_mean = jax.tree.map(lambda d, m: m.astype(d), dtypes, mean)
    # the variance of a complex gradient is E|G - mean|^2, real
    grad_variance = jax.tree.map(
        lambda d, q: (q / (size * (size - 1))).astype(real_dtype(d)), dtypes, m2
    )
    return grad_mean, grad_variance


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
    per_example_grads: Callable[[Any, Any], Any], params: Any, batch: Any, chunk_size: int
) -> tuple[Any, Any]:
    """:func:`_mean_and_m2` over the batch, ``chunk_size`` examples at a time."""
    n_chunks = _batch_size(batch) // chunk_size
    chunks = jax.tree.map(lambda x: jnp.reshape(x, (n_chunks, chunk_size) + np.shape(x)[1:]), batch)

    def zeros(p, real=False):
        # zeros_like, not zeros: the carry must be as varying as the params
        dtype = _accumulator_dtype(jnp.result_type(p))
        return jnp.zeros_like(p, dtype=real_dtype(dtype) if real else dtype)

    def body(carry, chunk):
        index, mean, m2 = carry
        c_mean, c_m2 = _mean_and_m2(per_example_grads(params, chunk))
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
            jax.tree.map(new_mean, mean, c_mean),
            jax.tree.map(new_m2, m2, mean, c_mean, c_m2),
        )
        return carry, None

    m2 = jax.tree.map(lambda p: zeros(p, real=True), params)
    init = (jnp.zeros((), jnp.int32), jax.tree.map(zeros, params), m2)
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
    mean = jax.tree.map(lambda m: jax.lax.psum(m * local_size, axis_name) / size, local_mean)
    m2 = jax.tree.map(
        lambda q, lm, gm: jax.lax.psum(q + local_size * abs_sq(lm - gm), axis_name),
        m2,
        local_mean,
        mean,
    )
    return mean, m2
