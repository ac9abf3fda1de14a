r"""Gradient noise from one batch: the simple noise scale, signal-to-noise, batch gamma.

:func:`gradient_noise_statistics` turns the mean gradient :math:`\bar g` of a
batch and the variance :math:`s` of that mini-batch gradient (both as
:func:`~optax_signvar.per_example_grad_moments` returns them) into a few
scalars cheap enough to log every step: McCandlish et al.'s simple gradient
noise scale :math:`B_\mathrm{simple} = \operatorname{tr}\Sigma/|G|^2` and its
two unbiased parts, the signal-to-noise ratio of the mini-batch gradient, and
the mean of M-SVAG's variance-adaptation factor with the batch's own variance
estimate, globally and per leaf of the parameter tree.
:func:`~optax_signvar.diagnostics` adds them to its dict when given
``grad_variance=`` and ``batch_size=``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from optax_signvar import blocks
from optax_signvar._checks import concrete_value
from optax_signvar._tree import abs_sq, is_complex, real_dtype
from optax_signvar.layout import unpacked

__all__ = ["gradient_noise_statistics"]

_F32 = jnp.dtype(jnp.float32)


def _is_none(x: Any) -> bool:
    return x is None


def _path_name(path: Sequence[Any]) -> str:
    """A leaf's path as ``/``-joined names: ``params/Dense_0/kernel``.

    The names are those of Flax's ``flatten_dict(..., sep="/")``; the
    ``.value`` of a Flax ``nnx`` variable is dropped (``linear/kernel``, not
    ``linear/kernel/value``).
    """
    parts = []
    for i, key in enumerate(path):
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name == "value" and i == len(path) - 1 and i > 0:
                continue
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return "/".join(parts)


def _leaf_names(paths: list[Any]) -> list[str]:
    names = [_path_name(p) for p in paths]
    if len(set(names)) != len(names):  # e.g. a dict key "a/b" beside a nested a -> b
        names = [jax.tree_util.keystr(p) for p in paths]
    return names


def _flat_pairs(grad_mean: Any, grad_variance: Any) -> tuple[list[str], list[Any], list[Any]]:
    """The non-``None`` leaves of both trees, paired, with their names; checked."""
    grad_mean, grad_variance = unpacked(grad_mean), unpacked(grad_variance)
    mean_leaves, mean_def = jax.tree_util.tree_flatten_with_path(grad_mean, is_leaf=_is_none)
    var_leaves, var_def = jax.tree_util.tree_flatten_with_path(grad_variance, is_leaf=_is_none)
    if mean_def != var_def:
        raise ValueError(
            "gradient_noise_statistics: grad_variance does not have the structure of "
            f"grad_mean.\n  grad_mean:     {mean_def}\n  grad_variance: {var_def}"
        )
    paths, means, variances = [], [], []
    for (path, g), (_, s) in zip(mean_leaves, var_leaves, strict=True):
        if g is None and s is None:
            continue
        where = jax.tree_util.keystr(path) or "the root"  # a tree that is one leaf
        if g is None or s is None:
            raise ValueError(
                f"gradient_noise_statistics: at {where}, grad_mean is {g!r} and grad_variance is "
                f"{s!r}; a None leaf (no gradient) must be None in both."
            )
        g, s = jnp.asarray(g), jnp.asarray(s)
        if g.shape != s.shape:
            raise ValueError(
                f"gradient_noise_statistics: at {where}, grad_variance has shape {s.shape} but "
                f"grad_mean has shape {g.shape}; the variance is elementwise, of the same shape."
            )
        if is_complex(s):
            raise ValueError(
                f"gradient_noise_statistics: at {where}, grad_variance is complex ({s.dtype}); "
                "the variance of a complex gradient is the real E|G - mean|^2 (as "
                "per_example_grad_moments returns it)."
            )
        paths.append(path)
        means.append(g)
        variances.append(s)
    if not means:
        raise ValueError(
            "gradient_noise_statistics: grad_mean has no array leaves (all None or empty); "
            "there is no gradient to summarise."
        )
    return _leaf_names(paths), means, variances


def _checked_batch_size(batch_size: Any) -> Any:
    """``batch_size``, an integer >= 2 where concrete (``ValueError`` naming it)."""
    if isinstance(batch_size, jax.core.Tracer) and not jnp.ndim(batch_size):
        return batch_size
    numeric = isinstance(batch_size, (int, np.integer, np.ndarray, jax.Array))
    ok = numeric and not isinstance(batch_size, bool) and not np.ndim(batch_size)
    value = concrete_value(batch_size) if ok else None
    if value is None or value != int(value) or value < 2:
        raise ValueError(
            "gradient_noise_statistics: batch_size must be an integer >= 2 (the number of "
            f"examples the variance was estimated from), got {batch_size!r}."
        )
    return batch_size


def _wide(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.inexact) and real_dtype(dtype).itemsize >= 8


# Elements per row of the one-pass reduction: each row is summed in one sequential loop
# (float32 rounding grows with the row's length), the row sums by XLA's own sum.
_ROW = 1024


def _rows(x: jax.Array, width: int) -> jax.Array:
    """``x`` flattened into rows of ``width``, the last padded with zeros."""
    flat = x.reshape(-1)
    pad = -flat.size % width
    return (jnp.pad(flat, (0, pad)) if pad else flat).reshape(-1, width)


def _add(a: tuple[jax.Array, ...], b: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _leaf_sums(g: jax.Array, s: jax.Array) -> tuple[jax.Array, ...]:
    """Sum of |g|^2, of s, of gamma and the count of active coordinates, in one pass.

    One variadic reduction reads ``g`` and ``s`` once for all four sums (four
    ``jnp.sum`` are four passes on a CPU, ~4x slower on large leaves), row by row
    (a zero padding adds nothing: there g^2 = s = gamma = 0 and the coordinate is
    inactive). In float32 for 16-bit and 32-bit leaves (complex64 included), in
    float64 where either is 64-bit.
    """
    wide = _wide(g.dtype) or _wide(s.dtype)
    acc = jnp.dtype(jnp.float64) if wide else _F32
    if not g.size:
        return tuple(jnp.zeros([], acc) for _ in range(4))
    width = min(_ROW, g.size)
    g = _rows(
        g.astype((jnp.complex128 if wide else jnp.complex64) if is_complex(g) else acc), width
    )
    s = _rows(s.astype(acc), width)
    g2 = abs_sq(g)
    # M-SVAG's factor g2 / (g2 + s), 0 where g2 = s = 0 (blocks.variance_factor's convention);
    # a coordinate is active where g2 + s > 0 (s >= 0): sign() is that indicator, and cheaper
    # than a boolean sum
    terms = (g2, s, blocks.variance_factor(g, s), jnp.sign(g2 + s))
    zeros = tuple(jnp.zeros([], acc) for _ in terms)
    per_row = jax.lax.reduce(terms, zeros, _add, (1,))
    return tuple(jnp.sum(x) for x in per_row)


def gradient_noise_statistics(
    grad_mean: Any,
    grad_variance: Any,
    batch_size: Any,
    *,
    per_leaf: bool = True,
) -> dict[str, jax.Array]:
    r"""The simple gradient noise scale, signal-to-noise ratios and batch gamma of one batch.

    With :math:`G_k` the gradient of example :math:`k` of a batch of :math:`B`,
    :math:`\bar g = \frac1B\sum_k G_k` and, elementwise, the unbiased variance
    of the mini-batch gradient
    :math:`s = \frac{1}{B(B-1)}\sum_k (G_k - \bar g)^2` (what
    :func:`~optax_signvar.per_example_grad_moments` returns), the true gradient
    :math:`G = E[G_k]` and the per-example covariance
    :math:`\Sigma = \operatorname{Cov}[G_k]` are estimated without bias by

    .. math::
      \widehat{\operatorname{tr}\Sigma} = B \sum_i s_i, \qquad
      \widehat{|G|^2} = |\bar g|^2 - \sum_i s_i
        = |\bar g|^2 - \widehat{\operatorname{tr}\Sigma}/B,

    since :math:`E[s_i] = \Sigma_{ii}/B` and
    :math:`E|\bar g|^2 = |G|^2 + \operatorname{tr}\Sigma/B`. These are
    McCandlish et al.'s unbiased estimators (appendix A.1),

    .. math::
      |G|^2 \approx \frac{B_\mathrm{big}|G_{B_\mathrm{big}}|^2
        - B_\mathrm{small}|G_{B_\mathrm{small}}|^2}{B_\mathrm{big} - B_\mathrm{small}},
      \qquad
      \operatorname{tr}\Sigma \approx \frac{|G_{B_\mathrm{small}}|^2
        - |G_{B_\mathrm{big}}|^2}{1/B_\mathrm{small} - 1/B_\mathrm{big}},

    with :math:`B_\mathrm{big} = B` and :math:`B_\mathrm{small} = 1`,
    :math:`|G_{B_\mathrm{small}}|^2` averaged over the :math:`B` examples (the
    smallest batch there is, which makes them the most precise of that
    family). The returned dict holds (:math:`|x|^2` is ``abs(x)**2`` for a
    complex leaf):

    * ``b_simple``: the simple noise scale (McCandlish et al., eq. 2.9),

      .. math::
        B_\mathrm{simple} = \frac{\operatorname{tr}\Sigma}{|G|^2}
          \approx \frac{\widehat{\operatorname{tr}\Sigma}}{\widehat{|G|^2}}
          = \frac{B}{\mathrm{SNR} - 1},

      the batch size above which larger batches stop paying off (roughly, the
      critical batch size). Where :math:`\widehat{|G|^2} \le 0`
      (:math:`\mathrm{SNR} \le 1`: this batch's mean gradient is no larger
      than its noise, the signal is not resolved at this batch size) it is
      **+inf**, the limit of the ratio as the estimate falls to 0 from above,
      which compares as "larger than any batch" (a negative value would be
      meaningless); NaN where there is no gradient at all
      (:math:`\bar g = 0` and :math:`s = 0`) or an input is NaN.
    * ``trace_sigma``: :math:`\widehat{\operatorname{tr}\Sigma}`, and
      ``grad_sq_unbiased``: :math:`\widehat{|G|^2}` (may be negative). The
      ratio of two unbiased estimates is not unbiased, and it is heavy-tailed
      where :math:`\widehat{|G|^2}` is near 0; McCandlish et al. average the
      two separately over steps (exponential moving averages) and divide the
      averages. Log these two and do the same.
    * ``grad_snr``: the signal-to-noise ratio of the mini-batch gradient,
      :math:`\mathrm{SNR} = |\bar g|^2 / \sum_i s_i` (inf where the batch has
      no spread but a nonzero mean, NaN where both are 0). It is 1 in
      expectation where the true gradient is 0 and grows like
      :math:`1 + B|G|^2/\operatorname{tr}\Sigma` (in expectation of the
      numerator) as the signal emerges.
    * ``batch_gamma_mean``: the mean over the active coordinates
      (:math:`\bar g_i \ne 0` or :math:`s_i > 0`) of M-SVAG's
      variance-adaptation factor with the batch's variance estimate,
      :math:`\gamma_i = \bar g_i^2/(\bar g_i^2 + s_i) \in [0, 1]` (what
      ``m_svag``'s update multiplies the gradient by when given
      ``grad_variance=s``, without momentum); NaN where no coordinate is
      active. It is the bounded per-coordinate counterpart of ``grad_snr``:
      :math:`\gamma_i = r_i/(1 + r_i)` with :math:`r_i = \bar g_i^2/s_i`,
      whose plain mean (Cockpit's ``MeanGSNR``, which divides by the
      per-example variance :math:`(B-1)s_i` instead) is dominated by the
      coordinates where :math:`s_i` is nearly 0.

    With ``per_leaf``, ``grad_snr/<path>`` and ``batch_gamma_mean/<path>``
    for every leaf, ``<path>`` its key path joined by ``/`` as Flax's
    ``flatten_dict(params, sep="/")`` names it (``params/Dense_0/kernel``;
    ``linear/kernel`` for an ``nnx`` state, without the variable's
    ``.value``; the full ``jax.tree_util.keystr`` where two paths would join
    to the same name). Per leaf rather than per module: a kernel and its bias
    see very different noise (the bias gradient sums over every position of
    the layer's output), so a module's ratio would be the kernel's; a plain
    dict of arrays (``{"w0": ..., "b0": ...}``) has no modules to group by;
    and per-parameter is how Cockpit and BackPACK report layers. A module's
    aggregate is this function applied to its subtrees,
    ``gradient_noise_statistics(g["params"]["Dense_0"], s["params"]["Dense_0"],
    B, per_leaf=False)``. A tree that is a single array has no per-leaf keys
    (they would repeat the global ones). The keys depend only on the tree's
    structure, so they are the same every step.

    Cost: one pass over each leaf (a variadic reduction reading :math:`\bar g`
    and :math:`s` once for the four sums it needs); the expensive part is
    :math:`s`, from the per-example gradients. Sums are taken
    in float32 for 16-bit and 32-bit leaves and in float64 for float64 ones.
    Jittable (``batch_size`` may be traced; it is then not checked); no
    Python branch depends on a value.

    Args:
      grad_mean: the mean gradient :math:`\bar g` of the batch, a pytree;
        ``None`` leaves (no gradient) are skipped. Real or complex.
      grad_variance: the variance :math:`s` of that mini-batch gradient (the
        per-example variance divided by :math:`B`), in the structure and
        shapes of ``grad_mean``, real, ``None`` where ``grad_mean`` is.
      batch_size: :math:`B`, the number of examples :math:`\bar g` and
        :math:`s` were computed from (the global batch under data
        parallelism), an integer >= 2.
      per_leaf: also return ``grad_snr/<path>`` and
        ``batch_gamma_mean/<path>`` for every leaf.

    Returns:
      A dict of scalars, keys as above: float32 (float64 where a leaf is
      float64 or complex128).

    Raises:
      ValueError: if the two trees differ in structure, in the place of a
        ``None`` leaf or in a leaf's shape (naming ``grad_variance`` and the
        leaf), if ``grad_variance`` is complex, if there is no array leaf, or
        if a concrete ``batch_size`` is not an integer >= 2.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax_signvar as osv
      >>> def loss_fn(params, example):  # one example
      ...     x, y = example
      ...     return 0.5 * (x @ params["w"] + params["b"] - y) ** 2
      >>> x = jax.random.normal(jax.random.key(0), (64, 3))
      >>> y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1 * jax.random.normal(jax.random.key(1), (64,))
      >>> params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
      >>> g, s = osv.per_example_grad_moments(loss_fn, params, (x, y))
      >>> stats = jax.jit(osv.gradient_noise_statistics, static_argnums=2)(g, s, 64)
      >>> print(sorted(stats))  # doctest: +NORMALIZE_WHITESPACE
      ['b_simple', 'batch_gamma_mean', 'batch_gamma_mean/b', 'batch_gamma_mean/w',
       'grad_snr', 'grad_snr/b', 'grad_snr/w', 'grad_sq_unbiased', 'trace_sigma']
      >>> b = float(stats["b_simple"])  # = 64 / (SNR - 1)
      >>> print(round(b, 3) == round(64 / (float(stats["grad_snr"]) - 1), 3), 0 < b < 64)
      True True
      >>> # noise but no mean: the estimate of |G|^2 is <= 0, the noise scale unresolved
      >>> print(osv.gradient_noise_statistics(jnp.zeros(3), jnp.ones(3), 8)["b_simple"])
      inf

    References:
      McCandlish, Kaplan, Amodei & the OpenAI Dota Team, `An Empirical Model
      of Large-Batch Training <https://arxiv.org/abs/1812.06162>`_, 2018
      (sec. 2.2, eq. 2.9, and appendix A.1).

      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, ICML 2018
      (M-SVAG's factor, sec. 3; the mini-batch variance, sec. 4.1).

      Schneider, Dangel & Hennig, `Cockpit: A Practical Debugging Tool for the
      Training of Deep Neural Networks <https://arxiv.org/abs/2102.06604>`_,
      NeurIPS 2021.
    """
    names, means, variances = _flat_pairs(grad_mean, grad_variance)
    batch_size = _checked_batch_size(batch_size)
    sums = [_leaf_sums(g, s) for g, s in zip(means, variances, strict=True)]
    out_dtype = jnp.dtype(jnp.float64) if any(x[0].dtype != _F32 for x in sums) else _F32

    def total(j: int) -> jax.Array:
        return sum((x[j].astype(out_dtype) for x in sums), jnp.zeros([], out_dtype))

    g2, var, gamma, active = (total(j) for j in range(4))
    b = jnp.asarray(batch_size).astype(out_dtype)
    trace = b * var
    signal = g2 - var
    inf, nan = jnp.array(jnp.inf, out_dtype), jnp.array(jnp.nan, out_dtype)
    safe = jnp.where(signal > 0, signal, 1)
    b_simple = jnp.where(signal > 0, trace / safe, jnp.where((signal <= 0) & (trace > 0), inf, nan))
    out = {
        "b_simple": b_simple,
        "trace_sigma": trace,
        "grad_sq_unbiased": signal,
        "grad_snr": g2 / var,
        "batch_gamma_mean": gamma / active,
    }
    if per_leaf and not (len(names) == 1 and names[0] == ""):
        for name, (l_g2, l_var, l_gamma, l_active) in zip(names, sums, strict=True):
            out[f"grad_snr/{name}"] = (l_g2 / l_var).astype(out_dtype)
            out[f"batch_gamma_mean/{name}"] = (l_gamma / l_active).astype(out_dtype)
    return out
