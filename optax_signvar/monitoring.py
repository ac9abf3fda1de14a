"""Per-step diagnostics of an optimizer state: a few scalars worth logging.

:func:`diagnostics` reads the :class:`~optax_signvar.DissectedState` inside any
optax state (a named optimizer's chain, ``optax.inject_hyperparams``,
``optax.MultiSteps``, ``optax.masked``, ``optax.apply_if_finite``, Flax's
``nnx.Optimizer``) and summarises what Dissecting Adam's machinery sees in it:
how much the variance adaptation shrinks the steps, how noisy the momentum is
relative to its size, how likely its sign is right, and, for AdaBound, where
the bounds are and how many per-element rates they clip; given the variance of
the mini-batch gradient as well, the gradient noise of the batch
(:mod:`optax_signvar.noise_scale`: the simple noise scale, signal-to-noise
ratios, the batch's variance-adaptation factor). Every formula is the
package's own (:mod:`optax_signvar.blocks`), and the hyperparameters are the
optimizer's own (read from the optimizer's record, :mod:`optax_signvar._hyperparams`,
or from an ``inject_hyperparams`` state, never assumed), so the numbers are the
ones the update used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optax_signvar import _deprecation, _hyperparams, _rates, blocks
from optax_signvar._checks import check_decay, check_range, check_rate, concrete_value
from optax_signvar._tree import abs_sq, is_complex
from optax_signvar.dissection import Bounds
from optax_signvar.layout import unpacked
from optax_signvar.noise_scale import gradient_noise_statistics
from optax_signvar.transform import DissectedState

__all__ = ["diagnostics"]

_F32 = jnp.float32


def _is_dissected(x: Any) -> bool:
    return isinstance(x, DissectedState)


def _find_state(state: Any) -> DissectedState:
    found = [x for x in jax.tree.leaves(state, is_leaf=_is_dissected) if _is_dissected(x)]
    if not found:
        raise ValueError(
            "diagnostics: no optax_signvar.DissectedState in this optimizer state; it reads the "
            "state of the package's optimizers (osv.m_svag, osv.adam, osv.dissect(...), ...), "
            f"possibly wrapped by optax. Got a {type(state).__name__}."
        )
    if len(found) > 1:
        raise ValueError(
            f"diagnostics: found {len(found)} DissectedStates (e.g. optax.multi_transform or a "
            "chain of two of the package's transformations); pass the part of the state that "
            "holds one, e.g. state.inner_states['adam']."
        )
    return found[0]


def _leaves(tree: Any) -> list[jax.Array] | None:
    """The tree's arrays as a flat list (``None`` for no buffer).

    Flattening drops ``None`` leaves and optax's ``MaskedNode`` and unwraps
    Flax ``nnx`` variables, so the rest of the module works on plain arrays.
    """
    if tree is None:
        return None
    # a packed state (layout="packed") is summarised as the tree it packs, so the
    # statistics do not depend on the layout
    return _arrays(unpacked(tree))


def _arrays(tree: Any) -> list[jax.Array]:
    """The arrays of a tree that is not ``None``, as :func:`_leaves` flattens them."""
    return [jnp.asarray(x) for x in jax.tree.leaves(tree)]


def _widen(leaves: list[jax.Array]) -> list[jax.Array]:
    """Leaves in at least float32 (bfloat16/float16 moments are summarised in float32)."""
    return [x if x.dtype.itemsize >= 4 else x.astype(_F32) for x in leaves]


def _total(leaves: list[jax.Array]) -> jax.Array:
    return sum((jnp.sum(x, dtype=_F32) for x in leaves), jnp.zeros([], _F32))


def _masked_mean(
    values: list[jax.Array], active: list[jax.Array], n_active: jax.Array
) -> jax.Array:
    """Mean of ``values`` over the active coordinates (NaN when there are none)."""
    pairs = zip(values, active, strict=True)
    total = _total([jnp.where(a, v.astype(_F32), 0.0) for v, a in pairs])
    return total / n_active


def _common_dtype(leaves: list[jax.Array]) -> list[jax.Array]:
    wide = max((x.dtype for x in leaves), key=lambda d: d.itemsize)
    return [x.astype(wide) for x in leaves]


def _sample(leaves_by_tree: list[list[jax.Array]], max_coordinates: int | None) -> list[jax.Array]:
    """The coordinates the quantiles are taken over, one flat array per tree.

    All of them when there are at most ``max_coordinates``; otherwise about
    ``max_coordinates`` drawn uniformly with replacement (each leaf contributes in
    proportion to its size), at the same positions in every tree and at the same
    positions every step (a fixed key), so consecutive steps are comparable.
    """
    # one dtype per tree (the widest): a state may mix float64 and float32 leaves under x64
    leaves_by_tree = [_common_dtype(leaves) for leaves in leaves_by_tree]
    sizes = [x.size for x in leaves_by_tree[0]]
    n = sum(sizes)
    if max_coordinates is None or n <= max_coordinates:
        return [jnp.concatenate([x.reshape(-1) for x in leaves]) for leaves in leaves_by_tree]
    picks = []
    for i, size in enumerate(sizes):
        k = round(max_coordinates * size / n)
        key = jax.random.fold_in(jax.random.key(0), i)
        picks.append(jax.random.randint(key, (k,), 0, size) if k else None)
    return [
        jnp.concatenate(
            [x.reshape(-1)[p] for x, p in zip(leaves, picks, strict=True) if p is not None]
        )
        for leaves in leaves_by_tree
    ]


def _interpolate(sorted_values, n, position, *, reverse=False, transform=None):
    """The first ``n`` of ``sorted_values`` at a fractional position, linear as ``numpy.quantile``.

    ``reverse`` reads them from the ``n``-th backwards; ``transform`` is applied to the two
    neighbours before interpolating. Exact (no ``inf - inf``) where both neighbours are equal
    or the position is whole.
    """
    last = n - 1
    lo = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, last)
    hi = jnp.minimum(lo + 1, last)
    frac = position - jnp.floor(position)
    if reverse:
        lo, hi = last - lo, last - hi
    x_lo, x_hi = sorted_values[lo], sorted_values[hi]
    if transform is not None:
        x_lo, x_hi = transform(x_lo), transform(x_hi)
    mixed = x_lo + (x_hi - x_lo) * frac
    return jnp.where((frac == 0) | (x_lo == x_hi), x_lo, mixed)


def _order_statistics(eta2, active, quantiles, q_keys, max_coordinates) -> dict:
    """The gamma quantiles and the median of eta^2 over the active (sampled) coordinates.

    One sort serves both: gamma = 1 / (1 + eta^2) falls as eta^2 rises, so the
    gamma order statistics are those of eta^2 read backwards.
    """
    nan = jnp.full([], jnp.nan, _F32)
    if not any(x.size for x in active):
        return {key: nan for key in [*q_keys, "eta2_median"]}
    e_s, a_s = _sample([eta2, active], max_coordinates)
    e_sorted = jax.lax.sort(jnp.where(a_s, e_s, jnp.nan).astype(_F32))  # NaNs (inactive) last
    n = jnp.sum(a_s, dtype=jnp.int32)
    last = (n - 1).astype(_F32)

    def gamma(e):
        return 1.0 / (1.0 + e)

    out = {}
    for key, q in zip(q_keys, quantiles, strict=True):
        value = _interpolate(e_sorted, n, q * last, reverse=True, transform=gamma)
        out[key] = jnp.where(n > 0, value, nan)
    out["eta2_median"] = jnp.where(n > 0, _interpolate(e_sorted, n, 0.5 * last), nan)
    return out


def _quantile_keys(quantiles: Sequence[float]) -> list[str]:
    keys = []
    for q in quantiles:
        if not 0.0 <= float(q) <= 1.0:
            raise ValueError(f"diagnostics: quantiles must lie in [0, 1], got {q!r}.")
        keys.append(f"gamma_q{100 * float(q):g}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"diagnostics: repeated quantiles {tuple(quantiles)!r}.")
    return keys


@_deprecation.renamed_arguments(beta="b1", beta2="b2")
def diagnostics(
    state: optax.OptState,
    optimizer: optax.GradientTransformation | None = None,
    *,
    b1: Any = None,
    b2: Any = None,
    grads: optax.Updates | None = None,
    bounds: Bounds | dict | None = None,
    learning_rate: optax.ScalarOrSchedule | None = None,
    eps: Any = None,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    max_coordinates: int | None = 16_384,
    grad_variance: optax.Updates | None = None,
    batch_size: Any = None,
    per_leaf: bool = True,
    rates: bool = False,
    rate_thresholds: tuple[float, float] = (0.01, 1000.0),
) -> dict[str, jax.Array]:
    r"""Scalars worth logging every step, read from an optimizer state.

    The state after step :math:`t` holds :math:`m_t` and :math:`v_t`; with
    :math:`\hat m = m_t/(1-\beta_1^t)`, :math:`\hat v = v_t/(1-\beta_2^t)` (the
    running max instead of :math:`v_t` when the state keeps one) and Dissecting
    Adam's variance of :math:`\hat m`,
    :math:`\sigma^2 = \rho_t s_t = \rho_t \max(\hat v - \hat m^2, 0)/(1-\rho_t)`
    (0 at :math:`t = 1`), each coordinate has

    .. math::
      \gamma = \frac{\hat m^2}{\hat m^2 + \sigma^2} \in [0, 1], \qquad
      \eta^2 = \frac{\sigma^2}{\hat m^2}, \qquad
      P\big(\operatorname{sign}\hat m = \operatorname{sign}\nabla f\big)
        = \frac{1}{2}\Big(1 + \operatorname{erf}\frac{1}{\sqrt2\,\eta}\Big),

    M-SVAG's variance-adaptation factor, the relative variance of the momentum
    and the probability that its sign is the true gradient's under a Gaussian
    model (Balles & Hennig, 2018, sec. 3-4). The returned dict summarises them
    over the *active* coordinates of all leaves, those with :math:`m \neq 0` or
    :math:`v > 0` (a parameter that never had a gradient, where
    :math:`\gamma = 0` by convention and nothing moves, would only dilute the
    summaries). Every value is a float32 scalar; NaN where a summary has no
    coordinate to summarise (e.g. before the first update).

    Keys, always:

    * ``count``: the step count :math:`t` (exact up to :math:`2^{24}`).

    With both moments (``m_svag``, ``svag``, ``m_vassd``, ``adam``, ``amsgrad``,
    ``adabound``, ...):

    * ``active_fraction``: share of coordinates that are active.
    * ``gamma_mean``: mean of :math:`\gamma`; ``gamma_q10``, ``gamma_q50``,
      ``gamma_q90`` (one per entry of ``quantiles``, named by the percentage):
      its quantiles, interpolated linearly as ``numpy.quantile``.
    * ``gamma_below_half``: share with :math:`\gamma < 0.5`
      (:math:`\eta^2 > 1`: the momentum's noise exceeds its size).
    * ``eta2_median``: the *median* of :math:`\eta^2` (the mean is useless: it
      is infinite wherever :math:`\hat m = 0 < \sigma^2` and huge near it).
    * ``sign_agreement``: mean of the sign-agreement probability (0.5 is a coin
      flip, 1 a noise-free sign), over the real leaves (a complex coordinate
      has a phase, not a sign; NaN when every leaf is complex).

    With AdaBound's bounds (an AdaBound-family ``optimizer``, or ``bounds`` and
    the rate from any of the sources below):

    * ``lower_bound``, ``upper_bound``: :math:`\eta_l(t)`, :math:`\eta_u(t)`,
      the bounds on the per-element rate
      :math:`a_t\sqrt{1-\beta_2^t}/((1-\beta_1^t)(\sqrt{v_t}+\epsilon))` of step
      :math:`t` (as the optimizer formed them, :math:`a_t` read at count
      :math:`t-1`).
    * ``clipped_lower``, ``clipped_upper``: share of active coordinates whose
      rate the bound clipped (strictly below / above it).

    With ``rates=True`` (the rate from any of the sources below), the
    per-element rate :math:`r` of step :math:`t`, the factor the update
    applies to :math:`m_t` (Luo et al.'s :math:`\eta_t`, with Adam's bias
    corrections folded in as the authors' code folds them; :math:`a_t` read
    at count :math:`t-1`):

    .. math::
      r = \frac{a_t}{(1-\beta_1^t)(\sqrt{\hat v_t} + \epsilon)},

    so that Adam's update :math:`-a_t \hat m_t/(\sqrt{\hat v_t}+\epsilon)`
    is :math:`-r \odot m_t`; with AdaBound's bounds, the rate they clip,
    :math:`r = a_t\sqrt{1-\beta_2^t}/((1-\beta_1^t)(\sqrt{v_t}+\epsilon))`
    (:math:`\epsilon` on the root of the raw :math:`v_t`; the two differ
    only where :math:`\sqrt{\hat v_t}` is within a few :math:`\epsilon`).
    :math:`v_t` is the running max for AMSGrad and AMSBound. Over the active
    coordinates:

    * ``rate_q10``, ``rate_q50``, ``rate_q90`` (one per entry of
      ``quantiles``): the quantiles of :math:`r` (sampled as the
      :math:`\gamma` quantiles are); ``rate_min``, ``rate_max``: its extremes
      (exact).
    * ``rate_below_0.01``, ``rate_above_1000`` (named by ``rate_thresholds``,
      ``(low, high)``, as ``f"rate_below_{low:g}"``, ``f"rate_above_{high:g}"``):
      the shares with :math:`r < \text{low}` and :math:`r > \text{high}`
      (exact), Luo et al.'s extreme rates (their Fig. 1: below 0.01 and above
      1000).
    * with AdaBound's bounds, the same keys prefixed ``bounded_``
      (``bounded_rate_q50``, ``bounded_rate_below_0.01``, ...) for the rate
      the update applies, :math:`\operatorname{clip}(r, \eta_l(t), \eta_u(t))`.

    With ``grads`` (the gradient of this step, in the structure of the
    parameters the state tracks):

    * ``grad_norm``: its global L2 norm.
    * ``grad_cosine`` (when the state has a momentum): its cosine similarity
      with :math:`m_t` (equal to that with :math:`\hat m`; 0 if either is 0).

    With ``grad_variance`` (the variance of the mini-batch gradient ``grads``,
    as :func:`~optax_signvar.per_example_grad_moments` returns it with the mean
    gradient) and ``batch_size``, the gradient noise of the batch, as
    :func:`~optax_signvar.gradient_noise_statistics` defines it:

    * ``b_simple``: McCandlish et al.'s simple noise scale
      :math:`\operatorname{tr}\Sigma/|G|^2` from the unbiased estimates
      ``trace_sigma`` (:math:`B\sum_i s_i`) and ``grad_sq_unbiased``
      (:math:`|g|^2 - \sum_i s_i`); +inf where the latter is <= 0 (the signal
      is not resolved at this batch size).
    * ``grad_snr``: :math:`|g|^2/\sum_i s_i`, the signal-to-noise ratio of the
      mini-batch gradient.
    * ``batch_gamma_mean``: the mean of :math:`g_i^2/(g_i^2 + s_i)` over the
      coordinates with :math:`g_i \ne 0` or :math:`s_i > 0`, M-SVAG's factor
      with the batch's variance (beside ``gamma_mean``, the momentum's).
    * with ``per_leaf`` (the default), ``grad_snr/<path>`` and
      ``batch_gamma_mean/<path>`` for every leaf of ``grads``, ``<path>`` its
      key path joined by ``/`` (``params/Dense_0/kernel``).

    A state without moments (``ssd``) gives ``count`` (and ``grad_norm``) only;
    one with a momentum but no second moment (``m_sgd``, ``m_ssd``) adds
    ``grad_cosine``; neither needs a hyperparameter. :math:`\rho_t` and
    :math:`1-\rho_t` are those of :math:`\beta_1` (the momentum's decay), which
    is right under Dissecting Adam's stationarity assumption for any
    :math:`\beta_2`, since then :math:`E[\hat v - \hat m^2] = (1-\rho_t)\sigma_g^2`.
    The moments are always debiased, also for a state built with
    ``bias_correction=False``.

    **The hyperparameters are the optimizer's.** The statistics of a state with
    both moments depend on the decays its update used, AdaBound's also on its
    bounds, rate and :math:`\epsilon`, and the package's optimizers do not all
    share them (Adam's ``b2`` is 0.999, Dissecting Adam's methods use ``b1`` for
    both moments). Each is taken from the first of:

    1. this call's ``b1``, ``b2``, ``eps``, ``bounds``, ``learning_rate``;
    2. ``optimizer``'s record: every transformation the package returns (the
       named optimizers, :func:`~optax_signvar.dissect`, the ``scale_by_*``)
       records what it was built with: ``b1``, ``b2`` as the update uses it
       (the optimizer's ``b2``, 0.999 by default, with RMS normalisation; ``b1``
       otherwise, also when this call passes ``b1``), ``eps``, the rate and, for
       the AdaBound family, the bounds;
    3. the ``hyperparams`` of an ``optax.inject_hyperparams`` state around the
       :class:`~optax_signvar.DissectedState` (keys ``b1``, ``beta``, ``b2``,
       ``eps``, ``learning_rate``, and ``final_lr`` with ``gamma`` for the
       bounds), read in the step like any other part of the state.

    If ``b2`` is still unknown it is ``b1``, Dissecting Adam's one decay, only
    where ``b1`` is that decay: this call's ``b1`` (pass ``b2`` too for an
    Adam-family state) or an injected ``beta``; an injected ``b1`` without
    ``b2`` (``dissect`` under ``inject_hyperparams``) could be either, and
    raises. ``eps`` is otherwise 1e-8 (every optimizer's default; only the
    bounds use it). Nothing else is assumed: a state with both moments whose
    ``b1`` none of the three gives raises ``ValueError`` (earlier releases
    assumed ``b1=0.9``, ``b2=b1``, which is wrong for every Adam-family state).
    This call's values and the injected ones are checked where concrete
    (``b1``, ``b2`` in [0, 1), ``eps``, ``learning_rate`` and ``final_lr`` >= 0,
    ``gamma`` in [0, 1)); traced ones are not, and the optimizer's were checked
    when it was built.

    Cost: a few fused elementwise passes and reductions over the moments (one
    to two updates' worth), plus one sort of at most ``max_coordinates`` values
    for the quantiles and the median; XLA's CPU sort is slow (2-core CPU:
    ~3 ms for 16,384 values, ~13 ms for 65,536, ~0.25 s for 1M), on an
    accelerator it is negligible. Measured on a 2-core CPU, jitted, defaults:
    0.8 ms for the 4,810 parameters of a small MLP, 6 ms for 1M parameters
    (an M-SVAG update: 2 ms), 55 ms for 10M (update: 32 ms). Means and shares
    are always exact over all coordinates; with more than ``max_coordinates``
    coordinates the quantiles and the median are estimated from that many
    coordinates drawn uniformly with replacement (rank error about
    :math:`\sqrt{q(1-q)/k}`, under 0.4% at the default), the same ones every
    step (a fixed key), so consecutive steps are comparable. ``rates=True``
    adds a few elementwise passes and one more such sort (the clipped rates'
    order statistics are read from the same one).

    Jittable: close over ``optimizer`` and the keyword arguments (they fix the
    keys), e.g. ``jax.jit(lambda s, g: diagnostics(s, opt, grads=g))``, and
    pass ``state`` and ``grads`` as arguments; ``learning_rate``, ``b1``,
    ``b2`` and ``eps`` may also be traced arrays.

    Args:
      state: an optax state containing exactly one
        :class:`~optax_signvar.DissectedState` (or that state itself).
      optimizer: the transformation of the package whose state this is (a
        named optimizer, ``dissect(...)`` or a ``scale_by_*``), not a wrapper
        around it; its hyperparameters are read from it.
      b1: decay of the first moment: the optimizer's ``b1`` (Adam family) or
        ``beta`` (Dissecting Adam's methods); overrides the other sources.
      b2: decay of the second moment: the optimizer's ``b2``; overrides the
        other sources. ``beta``/``beta2`` are the old spellings of ``b1``/``b2``
        (deprecated).
      grads: the current gradient, optional.
      bounds: AdaBound's :class:`~optax_signvar.Bounds` (or a dict of its
        fields), for AdaBound-family states (``normalization="rms"``).
      learning_rate: the optimizer's rate (float or schedule); only used with
        bounds or ``rates``, and an error without either.
      eps: AdaBound's :math:`\epsilon` (only used with bounds).
      quantiles: levels in [0, 1] of the :math:`\gamma` quantiles to report.
      max_coordinates: most coordinates the quantiles and the median are taken
        over (``None``: all of them, exact, at the price of sorting them all).
      grad_variance: the variance of the mini-batch gradient ``grads`` (the
        per-example variance over the batch divided by its size), in the
        structure of ``grads``; needs ``grads`` (their mean) and
        ``batch_size``.
      batch_size: the number of examples ``grads`` and ``grad_variance`` were
        computed from (the global batch under data parallelism), an integer
        >= 2; only with ``grad_variance``.
      per_leaf: with ``grad_variance``, also the per-leaf ``grad_snr/<path>``
        and ``batch_gamma_mean/<path>``.
      rates: also the per-element rates' summaries (``rate_*``, and
        ``bounded_rate_*`` with bounds); needs a state with both moments, the
        rate (``learning_rate``, or the optimizer's record, or an injected
        one) and ``normalization="rms"`` (Adam's family, where the update is a
        rate times :math:`m_t`). Always formed with Adam's bias corrections,
        also for a state built with ``bias_correction=False``.
      rate_thresholds: ``(low, high)``, the levels of ``rate_below_<low>`` and
        ``rate_above_<high>``.

    Returns:
      A dict of float32 scalars, keys as above (fixed by the state's structure,
      the hyperparameters' sources and the arguments, so they do not change
      from step to step).

    Raises:
      ValueError: a state with both moments and no ``b1`` (or, from an injected
        ``b1``, no ``b2``) in any source; an ``optimizer`` that is not one of
        the package's; a hyperparameter out of its range (named); bounds
        without a rate, or a rate without bounds or ``rates``; ``rates``
        without a rate or a second moment, or for an optimizer whose
        normalization is not ``"rms"``; ``grad_variance`` without
        ``grads`` or ``batch_size``, ``batch_size`` without
        ``grad_variance``, or a ``grad_variance`` that does not match
        ``grads`` (see :func:`~optax_signvar.gradient_noise_statistics`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import optax_signvar as osv
      >>> from optax_signvar.monitoring import diagnostics
      >>> opt = osv.adam(0.1)  # b1=0.9, b2=0.999
      >>> params = jnp.zeros(1000)
      >>> state = opt.init(params)
      >>> for i in range(20):
      ...   noise = jax.random.normal(jax.random.key(i), (1000,))
      ...   grads = jnp.linspace(-1.0, 1.0, 1000) + 0.5 * noise
      ...   _, state = opt.update(grads, state)
      >>> d = jax.jit(lambda s: diagnostics(s, opt))(state)  # b1, b2 from opt
      >>> print(sorted(d))  # doctest: +NORMALIZE_WHITESPACE
      ['active_fraction', 'count', 'eta2_median', 'gamma_below_half', 'gamma_mean',
       'gamma_q10', 'gamma_q50', 'gamma_q90', 'sign_agreement']
      >>> print(int(d["count"]), 0.0 <= float(d["gamma_q10"]) <= float(d["gamma_q90"]) <= 1.0)
      20 True
      >>> diagnostics(state)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: diagnostics: b1 is unknown; ...

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, 2018;
      Luo et al., `Adaptive Gradient Methods with Dynamic Bound of Learning
      Rate <https://openreview.net/forum?id=Bkg3g2R9FX>`_, 2019;
      McCandlish et al., `An Empirical Model of Large-Batch Training
      <https://arxiv.org/abs/1812.06162>`_, 2018.
    """
    q_keys = _quantile_keys(quantiles)
    rate_keys = _rate_keys(q_keys, rate_thresholds) if rates else None
    _check_noise_arguments(grads, grad_variance, batch_size)
    if max_coordinates is not None and max_coordinates < 1:
        raise ValueError(f"diagnostics: max_coordinates must be >= 1, got {max_coordinates!r}.")
    record = _record_of(optimizer)
    found = _find_state(state)
    given = _Hyper(b1, b2, eps, _as_bounds(bounds), learning_rate)
    injected = _injected(state, found)
    # what this call passes and what the state holds; the record passed the checks when
    # the optimizer was built
    _check_values({"b1": b1, "b2": b2, "eps": eps, "learning_rate": learning_rate})
    if given.bounds is not None:
        final_lr, gamma = given.bounds
        _check_values({"bounds.final_lr": final_lr, "bounds.gamma": gamma})
    _check_values(injected)
    hp = _resolve(given, record, injected)
    _check_pairing(hp, explicit_rate=learning_rate is not None, rates=rates)
    if rates:
        _check_rms(record)
    count = jnp.asarray(jax.tree.leaves(found.count)[0])
    mu, nu, nu_max = _leaves(found.mu), _leaves(found.nu), _leaves(found.nu_max)
    second = nu_max if nu_max is not None else nu  # the buffer the update used
    out = {"count": count.astype(_F32)}
    for wanted, what in ((hp.bounds is not None, "bounds"), (rates, "rates")):
        if wanted and (mu is None or second is None):
            raise ValueError(
                f"diagnostics: {what} need Adam's or AdaBound's state, with both moments; this "
                "state keeps " + ("no second moment." if mu is not None else "no momentum.")
            )
    if mu is not None and second is not None:
        b1, b2 = _decays(hp)
        mu32, second32 = _widen(mu), _widen(second)
        active = [(m != 0) | (v > 0) for m, v in zip(mu32, second32, strict=True)]
        n_active = _total(active)
        out.update(
            _moment_statistics(
                mu32, second32, active, n_active, count, b1, b2, quantiles, q_keys, max_coordinates
            )
        )
        eps = _DEFAULT_EPS if hp.eps is None else hp.eps
        if hp.bounds is not None:  # with a rate (checked above)
            rate_args = (hp.bounds, hp.learning_rate, eps, b1, b2)
            out.update(_bound_statistics(second32, active, n_active, count, *rate_args))
        if rate_keys is not None:  # with a rate (checked above)
            rate_args = (hp.bounds, hp.learning_rate, eps, b1, b2)
            summary_args = (quantiles, rate_keys, max_coordinates, rate_thresholds)
            rate_stats = _rate_statistics(
                second32, active, n_active, count, *rate_args, *summary_args
            )
            out.update(rate_stats)
    if grads is not None:
        out.update(_gradient_statistics(grads, mu))
    if grad_variance is not None:
        noise = gradient_noise_statistics(grads, grad_variance, batch_size, per_leaf=per_leaf)
        out.update(noise)
    return {k: jnp.asarray(v).astype(_F32) for k, v in out.items()}


def _check_noise_arguments(grads: Any, grad_variance: Any, batch_size: Any) -> None:
    """``grad_variance`` comes with ``grads`` and ``batch_size``, and ``batch_size`` with it."""
    if grad_variance is not None and grads is None:
        raise ValueError(
            "diagnostics: grad_variance needs grads, the mean gradient of the same batch "
            "(both from osv.per_example_grad_moments)."
        )
    if grad_variance is not None and batch_size is None:
        raise ValueError(
            "diagnostics: grad_variance needs batch_size, the number of examples it was "
            "estimated from (the noise scale's tr(Sigma) is batch_size * sum(grad_variance))."
        )
    if batch_size is not None and grad_variance is None:
        raise ValueError(
            "diagnostics: batch_size is only used with grad_variance (the gradient noise "
            "statistics); pass grad_variance=... too."
        )


# eps where no source gives one: the default of every optimizer of the package
_DEFAULT_EPS = 1e-8

# the hyperparameters an inject_hyperparams state may hold that diagnostics reads
_INJECTED_KEYS = ("b1", "beta", "b2", "eps", "learning_rate", "final_lr", "gamma")

_INJECT_STATES = tuple(
    cls
    for cls in (
        getattr(optax, "InjectHyperparamsState", None),
        getattr(optax, "InjectStatefulHyperparamsState", None),
    )
    if isinstance(cls, type)
)


class _Hyper(NamedTuple):
    """The hyperparameters diagnostics uses; ``None`` where unknown.

    ``tied`` says that ``b2`` is ``b1`` by construction where no source gives
    ``b2`` (Dissecting Adam's one decay).
    """

    b1: Any = None
    b2: Any = None
    eps: Any = None
    bounds: Bounds | None = None
    learning_rate: Any = None
    tied: bool = False


def _as_bounds(bounds: Bounds | dict | None) -> Bounds | None:
    if bounds is None or isinstance(bounds, Bounds):
        return bounds
    return Bounds(**dict(bounds))


def _record_of(optimizer: Any) -> _hyperparams.Hyperparameters | None:
    """The optimizer's record of its hyperparameters (``None`` for no optimizer)."""
    if optimizer is None:
        return None
    if not callable(getattr(optimizer, "update", None)):
        raise TypeError(
            "diagnostics: optimizer must be the optimizer (an optax GradientTransformation) "
            f"whose state this is, got {optimizer!r}; pass decays as keywords, b1=..., b2=...."
        )
    record = _hyperparams.lookup(optimizer)
    if record is None:
        raise ValueError(
            "diagnostics: optimizer is not one of optax_signvar's transformations, so its "
            "hyperparameters are unknown here (an optax optimizer such as optax.adam, or a "
            "wrapper around one of the package's: optax.chain, MultiSteps, inject_hyperparams). "
            "Pass the package's optimizer itself (e.g. the osv.adam(...) inside the chain, or "
            "the tx given to flax's nnx.Optimizer), or its decays as b1=..., b2=...; an "
            "inject_hyperparams state needs neither."
        )
    return record


def _injected(state: Any, target: DissectedState) -> dict[str, Any]:
    """The numeric hyperparameters of the ``inject_hyperparams`` states around ``target``.

    Nested ones are merged, the innermost (the closest to the update) winning.
    """
    if not _INJECT_STATES:
        return {}

    def is_inject(x: Any) -> bool:
        return isinstance(x, _INJECT_STATES)

    def holds_target(tree: Any) -> bool:
        return any(x is target for x in jax.tree.leaves(tree, is_leaf=_is_dissected))

    out: dict[str, Any] = {}
    for x in jax.tree.leaves(state, is_leaf=is_inject):
        if is_inject(x) and holds_target(x.inner_state):
            out.update({k: v for k, v in x.hyperparams.items() if k in _INJECTED_KEYS})
            out.update(_injected(x.inner_state, target))
    return out


def _resolve(
    given: _Hyper, record: _hyperparams.Hyperparameters | None, injected: dict[str, Any]
) -> _Hyper:
    """Each hyperparameter from the call, else the optimizer's record, else the injected ones."""
    b1, b2, eps, bounds, rate = given.b1, given.b2, given.eps, given.bounds, given.learning_rate
    # an explicit b1 is Dissecting Adam's one decay unless the optimizer says otherwise
    tied = b1 is not None
    if record is not None:
        b1 = record.b1 if b1 is None else b1
        tied = record.one_decay  # the record's b2 is b1 by construction, or its own
        if b2 is None and not tied:
            b2 = record.b2
        eps = record.eps if eps is None else eps
        bounds = record.bounds if bounds is None else bounds
        rate = record.learning_rate if rate is None else rate
    if b1 is None and "b1" in injected:
        b1 = injected["b1"]
    if b1 is None and "beta" in injected:
        b1, tied = injected["beta"], True  # Dissecting Adam's one decay
    if b2 is None and not (record is not None and tied) and "b2" in injected:
        b2 = injected["b2"]
    eps = injected.get("eps") if eps is None else eps
    rate = injected.get("learning_rate") if rate is None else rate
    if bounds is None and "final_lr" in injected and "gamma" in injected:
        bounds = Bounds(injected["final_lr"], injected["gamma"])
    return _Hyper(b1, b2, eps, bounds, rate, tied=tied)


def _check_values(values: dict[str, Any]) -> None:
    """Concrete hyperparameters in range, ``ValueError`` naming them; traced ones pass.

    ``values`` maps a name (``"b1"``, ``"bounds.gamma"``, an injected key, ...) to
    its value; what a name's last part is decides the range.
    """
    for name, value in values.items():
        if value is None or (not callable(value) and concrete_value(value) is None):
            continue  # unknown, or traced (e.g. inject_hyperparams' under jit)
        kind = name.rsplit(".", 1)[-1]
        if kind in ("b1", "beta", "b2"):
            check_decay(name, value)
        elif kind == "eps":
            check_range(name, value, 0.0)
        elif kind == "gamma":
            check_range(name, value, 0.0, 1.0, high_open=True)
        elif kind in ("learning_rate", "final_lr"):
            check_rate(name, value)


def _check_pairing(hp: _Hyper, *, explicit_rate: bool, rates: bool) -> None:
    """AdaBound's bounds and the rate statistics need the rate; an explicit rate needs either."""
    if hp.bounds is not None and hp.learning_rate is None:
        raise ValueError(
            "diagnostics: bounds need the learning rate (AdaBound's bounds are on the "
            "per-element rate a_t * r_t); pass learning_rate=..., or optimizer=, which records it."
        )
    if rates and hp.learning_rate is None:
        raise ValueError(
            "diagnostics: rates=True needs the learning rate (the per-element rate is "
            "a_t / ((1 - b1^t) (sqrt(v_hat) + eps))); pass learning_rate=..., or optimizer=, "
            "which records it."
        )
    if explicit_rate and hp.bounds is None and not rates:
        raise ValueError(
            "diagnostics: learning_rate is only used with AdaBound's bounds or rates=True; pass "
            "bounds=... too, or the AdaBound-family optimizer (whose record holds both), or "
            "rates=True for the per-element rates' quantiles."
        )


def _check_rms(record: _hyperparams.Hyperparameters | None) -> None:
    """The per-element rates are Adam's: the optimizer, if known, divides by sqrt(v)."""
    if record is not None and record.dissection.normalization != "rms":
        raise ValueError(
            "diagnostics: rates=True summarises Adam's per-element rates a_t / (sqrt(v_hat) + "
            "eps); this optimizer's update does not divide by sqrt(v) (normalization="
            f"{record.dissection.normalization!r}), so it has no such rate."
        )


def _rate_keys(q_keys: list[str], thresholds: tuple[float, float]) -> list[str]:
    """The keys of the rate statistics, unprefixed, in the order _rate_summary makes them."""
    low, high = (float(x) for x in thresholds)
    if not 0.0 <= low <= high:
        raise ValueError(
            f"diagnostics: rate_thresholds must be (low, high) with 0 <= low <= high, got "
            f"{tuple(thresholds)!r}."
        )
    qs = [k.replace("gamma_", "rate_", 1) for k in q_keys]
    return [*qs, "rate_min", "rate_max", f"rate_below_{low:g}", f"rate_above_{high:g}"]


def _decays(hp: _Hyper) -> tuple[Any, Any]:
    """``b1`` and ``b2`` for a state with both moments; ``ValueError`` where unknown."""
    if hp.b1 is None:
        raise ValueError(
            "diagnostics: b1 is unknown; the statistics depend on the optimizer's decays, and "
            "there is no default that is right for every optimizer (Adam's b2 is 0.999, "
            "Dissecting Adam's methods use b1 for both moments). Either pass the optimizer, "
            "diagnostics(state, opt) with opt = osv.adam(...), osv.m_svag(...), ...; or pass "
            "its decays, b1=... and b2=... (b1=beta alone for Dissecting Adam's methods); or "
            "build it with optax.inject_hyperparams, whose state holds them."
        )
    if hp.b2 is not None:
        return hp.b1, hp.b2
    if hp.tied:
        return hp.b1, hp.b1
    # only an injected b1 gets here: dissect's b2=None is no number inject_hyperparams keeps
    raise ValueError(
        "diagnostics: b2 is unknown: the inject_hyperparams state holds b1 but no b2. It is b1 "
        "for Dissecting Adam's methods and 0.999 by default with normalization='rms'; pass "
        "b2=..., or the optimizer built with the same arguments, diagnostics(state, opt)."
    )


def _moment_statistics(
    mu32, second32, active, n_active, count, b1, b2, quantiles, q_keys, max_coordinates
) -> dict[str, jax.Array]:
    """The variance-adaptation statistics of a state with both moments."""
    n_all = sum(x.size for x in mu32)
    mh = blocks.bias_correction(mu32, blocks.debias_denominator(b1, count))
    vh = blocks.bias_correction(second32, blocks.debias_denominator(b2, count))
    # sigma^2 = rho_t * s_t, the variance of mh, exactly as M-SVAG forms it
    var = blocks.variance_estimate(mh, vh, blocks.momentum_variance_scale(b1, count))
    gamma = blocks.variance_factor(mh, var)
    eta2 = [_relative_variance(m, s) for m, s in zip(mh, var, strict=True)]
    out = {
        "active_fraction": n_active / n_all if n_all else jnp.full([], jnp.nan, _F32),
        "gamma_mean": _masked_mean(gamma, active, n_active),
    }
    out.update(_order_statistics(eta2, active, quantiles, q_keys, max_coordinates))
    out["gamma_below_half"] = _masked_mean([g < 0.5 for g in gamma], active, n_active)
    out["sign_agreement"] = _sign_agreement(mh, var, active)
    return out


def _relative_variance(m: jax.Array, s: jax.Array) -> jax.Array:
    m2 = abs_sq(m).astype(s.dtype)
    return jnp.where(m2 > 0, s / m2, jnp.inf)


def _sign_agreement(mh, var, active) -> jax.Array:
    """Mean sign-agreement probability over the active coordinates of the real leaves.

    A complex coordinate has a phase, not a sign; its agreement is not the
    erf of a real Gaussian (see ``blocks.sign_variance_factor``), so complex
    leaves are left out (NaN when every leaf is complex).
    """
    real = [i for i, m in enumerate(mh) if not is_complex(m)]
    erf_factor = blocks.sign_variance_factor([mh[i] for i in real], [var[i] for i in real])
    agreement = [(1.0 + f) / 2.0 for f in erf_factor]
    real_active = [active[i] for i in real]
    return _masked_mean(agreement, real_active, _total(real_active))


def _bound_statistics(
    second32, active, n_active, count, bounds, learning_rate, eps, b1, b2
) -> dict[str, jax.Array]:
    """AdaBound's bounds of step t and the shares of rates they clip."""
    a_t, rate, (lower, upper) = _adabound_rate(second32, count, bounds, learning_rate, eps, b1, b2)
    below = [r < lower.astype(r.dtype) for r in rate]
    above = [r > upper.astype(r.dtype) for r in rate]
    return {
        "lower_bound": jnp.asarray(a_t * lower),
        "upper_bound": jnp.asarray(a_t * upper),
        "clipped_lower": _masked_mean(below, active, n_active),
        "clipped_upper": _masked_mean(above, active, n_active),
    }


def _adabound_rate(second32, count, bounds, learning_rate, eps, b1, b2):
    """``(a_t, r, (lower, upper))`` of step t as scale_by_dissection forms them: the rate, the
    per-element rate at unit rate, ``sqrt(1 - b2^t) / ((1 - b1^t) (sqrt(v) + eps))``, and the
    bounds at unit rate."""
    before = jnp.maximum(count - 1, 0)
    ratio = _rates.value_at(_rates.rate_ratio(bounds.final_lr, learning_rate, "final_lr"), before)
    a_t = _rates.value_at(learning_rate, before)
    unit = blocks.adaptive_rate(second32, eps, blocks.adabound_step(b1, b2, count))
    return a_t, unit, blocks.dynamic_bounds(ratio, bounds.gamma, count)


def _rate_statistics(
    second32,
    active,
    n_active,
    count,
    bounds,
    learning_rate,
    eps,
    b1,
    b2,
    quantiles,
    keys,
    max_coordinates,
    thresholds,
) -> dict[str, jax.Array]:
    """The per-element rates' quantiles, extremes and extreme shares (and clipped, with bounds).

    Formed as the update forms them: at unit rate, times a_t; the clipped ones as
    a_t * clip(r, l, u), which is clip(a_t r, a_t l, a_t u) to the last bit (the product is
    monotone), so one sort serves both.
    """
    clip = None
    if bounds is None:  # Adam: 1 / ((1 - b1^t) (sqrt(v_hat) + eps))
        a_t = _rates.value_at(learning_rate, jnp.maximum(count - 1, 0))
        vh = blocks.bias_correction(second32, blocks.debias_denominator(b2, count))
        unit = blocks.adaptive_rate(vh, eps, 1.0 / blocks.debias_denominator(b1, count))
    else:  # AdaBound: the rate the bounds clip
        a_t, unit, (lower, upper) = _adabound_rate(
            second32, count, bounds, learning_rate, eps, b1, b2
        )
        clip = (a_t * jnp.asarray(lower), a_t * jnp.asarray(upper))
    rate = [jnp.asarray(a_t).astype(r.dtype) * r for r in unit]
    low, high = (float(x) for x in thresholds)
    return _rate_summary(rate, active, n_active, quantiles, keys, max_coordinates, low, high, clip)


def _rate_summary(
    rate, active, n_active, quantiles, keys, max_coordinates, low, high, clip
) -> dict[str, jax.Array]:
    """Quantiles (one sort of the sampled coordinates), exact extremes and shares of ``rate``,
    and with ``clip = (lower, upper)`` the same of the clipped rate (keys ``bounded_...``)."""
    nan = jnp.full([], jnp.nan, _F32)
    *q_keys, min_key, max_key, below_key, above_key = keys
    variants = {"": lambda r: r}
    if clip is not None:
        lower, upper = clip

        def clipped(r: jax.Array) -> jax.Array:
            return jnp.clip(
                r, jnp.asarray(lower).astype(r.dtype), jnp.asarray(upper).astype(r.dtype)
            )

        variants["bounded_"] = clipped
    pairs = [(r, a) for r, a in zip(rate, active, strict=True) if r.size]
    if not pairs:
        return {prefix + key: nan for prefix in variants for key in keys}
    r_s, a_s = _sample([[r.astype(_F32) for r in rate], active], max_coordinates)
    # NaNs (inactive) last; a clip keeps them NaN and the order of the rest
    ranked = jax.lax.sort(jnp.where(a_s, r_s, jnp.nan))
    n = jnp.sum(a_s, dtype=jnp.int32)
    last = (n - 1).astype(_F32)
    some = n_active > 0
    smallest = jnp.min(
        jnp.stack([jnp.min(jnp.where(a, r, jnp.inf)).astype(_F32) for r, a in pairs])
    )
    largest = jnp.max(
        jnp.stack([jnp.max(jnp.where(a, r, -jnp.inf)).astype(_F32) for r, a in pairs])
    )
    out: dict[str, jax.Array] = {}
    for prefix, f in variants.items():
        for key, q in zip(q_keys, quantiles, strict=True):
            out[prefix + key] = jnp.where(n > 0, _interpolate(f(ranked), n, q * last), nan)
        out[prefix + min_key] = jnp.where(some, f(smallest), nan)
        out[prefix + max_key] = jnp.where(some, f(largest), nan)
        out[prefix + below_key] = _masked_mean([f(r) < low for r in rate], active, n_active)
        out[prefix + above_key] = _masked_mean([f(r) > high for r in rate], active, n_active)
    return out


def _gradient_statistics(grads: optax.Updates, mu: list[jax.Array] | None) -> dict[str, jax.Array]:
    """The gradient's norm and its cosine with the momentum."""
    g = _widen(_arrays(grads))
    g_norm = jnp.sqrt(_total([abs_sq(x) for x in g]))
    out = {"grad_norm": g_norm}
    if mu is not None:
        m32 = _widen(mu)
        if [x.shape for x in g] != [x.shape for x in m32]:
            raise ValueError(
                "diagnostics: grads do not match the momentum the state tracks (leaf shapes "
                f"{[x.shape for x in g]} vs {[x.shape for x in m32]}); under optax.masked "
                "pass the gradients of the optimized parameters only."
            )
        # Re<g, m>: the cosine of the angle between them, also for complex leaves
        dot = _total([jnp.real(jnp.conj(x) * m) for x, m in zip(g, m32, strict=True)])
        m_norm = jnp.sqrt(_total([abs_sq(m) for m in m32]))
        den = g_norm * m_norm
        out["grad_cosine"] = jnp.where(den > 0, dot / jnp.where(den > 0, den, 1.0), 0.0)
    return out
