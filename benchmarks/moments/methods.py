"""What is timed: the gradient of the mean loss, and the moments by each method.

``method="auto"`` and ``"vmap"`` are :func:`optax_signvar.minibatch.per_example_grad_moments`'s;
``"vmap (old reductions)"`` is the vmap path with the reductions of the package as of
git 5257cba (``_mean_and_m2``: ``mean(axis=0)`` and a centred ``sum(axis=0)``), copied
here so that the report keeps the before-and-after of part 1 of issue 17. Where the
installed package has no ``method=`` argument yet (or no ``grad_moments_paths``), the
method rows that need it are left out and the report says why.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optax_signvar import minibatch

__all__ = ["METHODS", "api_missing", "baseline", "moments_fn", "paths"]

METHODS = ("auto", "vmap", "vmap_old")
LABELS = {"auto": 'method="auto"', "vmap": 'method="vmap"', "vmap_old": "vmap (old reductions)"}


def api_missing() -> str | None:
    """Why ``method=`` / ``grad_moments_paths`` cannot be measured, or ``None``."""
    params = inspect.signature(minibatch.per_example_grad_moments).parameters
    if "method" not in params:
        return "per_example_grad_moments has no method= argument in the installed package"
    if not hasattr(minibatch, "grad_moments_paths"):
        return "optax_signvar.minibatch has no grad_moments_paths"
    return None


def baseline(loss_fn: Callable[[Any, Any], jax.Array]) -> Callable[[Any, Any], Any]:
    """``jax.grad`` of the mean over the batch of ``vmap(loss_fn, (None, 0))``."""

    def mean_loss(params, batch):
        return jnp.mean(jax.vmap(loss_fn, (None, 0))(params, batch))

    return jax.grad(mean_loss)


def _old_mean_and_m2(grads: Any) -> tuple[Any, Any]:
    # optax_signvar.minibatch._mean_and_m2 at 5257cba, for float32 gradients.
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    m2 = jax.tree.map(lambda g, m: jnp.sum((g - m) ** 2, axis=0), grads, mean)
    return mean, m2


def old_vmap_moments(loss_fn: Callable, params: Any, batch: Any) -> tuple[Any, Any]:
    """The vmap path of 5257cba, unchunked, one device, float32."""
    b = jax.tree.leaves(batch)[0].shape[0]
    grads = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)
    mean, m2 = _old_mean_and_m2(grads)
    return mean, jax.tree.map(lambda q: q / (b * (b - 1)), m2)


def moments_fn(method: str, loss_fn: Callable) -> Callable[[Any, Any], Any]:
    """``(params, batch) -> (grad_mean, grad_variance)`` by ``method`` (one of METHODS)."""
    if method == "vmap_old":
        return lambda p, b: old_vmap_moments(loss_fn, p, b)
    if api_missing() is not None and method == "vmap":
        # today's path: per_example_grad_moments without method= is the vmap path
        return lambda p, b: minibatch.per_example_grad_moments(loss_fn, p, b)
    fn: Any = minibatch.per_example_grad_moments
    return lambda p, b: fn(loss_fn, p, b, method=method)


def paths(loss_fn: Callable, params: Any, batch: Any) -> Any:
    """``grad_moments_paths``: a pytree like params of the path of each leaf."""
    return minibatch.grad_moments_paths(loss_fn, params, batch)  # type: ignore[attr-defined]
