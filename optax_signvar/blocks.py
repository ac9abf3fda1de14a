"""Building blocks: small pure functions on pytrees.

Every update rule of the package is a composition of the functions in this
module; none of the optimizers writes its own arithmetic. The functions

* accept any pytree of arrays, with ``None`` leaves passed through as ``None``
  (as optax does for masked or frozen parameters);
* are jit-able and contain no Python branching on traced values;
* return leaves of the dtype of the accumulator they update (or of their first
  tree argument), casting the per-step scalars to that dtype explicitly, so they
  also run under ``jax.numpy_dtype_promotion("strict")``.

Per-step scalars (bias corrections, ``rho(beta, t)``, the AdaBound bounds) are
separate functions so that the transformations compute them once per step, not
once per leaf.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from optax_signvar import _deprecation
from optax_signvar._tree import abs_sq, as_dtype, is_complex, per_dtype, real_dtype, tree_map

__all__ = [
    "bias_correction",
    "clip_rate",
    "debias_denominator",
    "dynamic_bounds",
    "ema",
    "relative_variance_rho",
    "running_max",
    "sign",
    "sign_variance_factor",
    "step_float",
    "tree_map",
    "variance_estimate",
    "variance_factor",
    "variance_scale",
    "momentum_variance_scale",
    "adabound_step",
    "multiply",
    "scale",
    "rms_normalize",
    "adaptive_rate",
]

Tree = Any
Scalar = Any  # a Python number or a 0-d jax array (possibly a tracer)


# --------------------------------------------------------------------------- #
# Per-step scalars.
# --------------------------------------------------------------------------- #


def step_float(count: jax.Array, like: Scalar = 0.0) -> jax.Array:
    """The step count as a float of the dtype of ``like`` (a hyperparameter).

    Casting the int32 count explicitly keeps ``beta ** t`` well defined under
    strict dtype promotion and in float64 when ``like`` is float64.

    Args:
      count: the int32 step count.
      like: a hyperparameter whose floating dtype to use (the default float
        dtype when it is not floating).

    Returns:
      ``count`` as a 0-d float array.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.step_float(jnp.int32(3), 0.9)
      Array(3., dtype=float32)
    """
    dtype = jnp.result_type(like)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return jnp.asarray(count).astype(dtype)


def _log(decay: Scalar) -> Any:
    """``log(decay)``: in float64 for a Python number, in its dtype for an array."""
    if isinstance(decay, (int, float)):
        return math.log(decay) if decay > 0 else -math.inf
    return jnp.log(decay)


def debias_denominator(decay: Scalar, count: jax.Array) -> jax.Array:
    r"""The bias-correction denominator :math:`1 - \beta^t` of an EMA.

    Computed as ``-expm1(t * log(beta))``: ``1 - beta**t`` in float32 rounds
    ``beta = 0.999`` first and is then off by up to about 1e-5 relative (6.6e-6
    at ``t = 1``), which the reference implementations, computing in float64
    on the host, are not.

    Args:
      decay: the EMA decay :math:`\beta`, in [0, 1).
      count: the step count :math:`t \geq 1` (after the increment).

    Returns:
      A scalar.

    Example:
      >>> from optax_signvar import blocks
      >>> print(blocks.debias_denominator(0.5, 2))
      0.75
    """
    t = step_float(count, decay)
    return -jnp.expm1(t * _log(decay))


def relative_variance_rho(beta: Scalar, count: jax.Array) -> jax.Array:
    r"""Dissecting Adam's :math:`\rho(\beta, t)`, the variance of the debiased EMA
    of i.i.d. unit-variance samples.

    .. math::
      \rho_t = \frac{(1-\beta)(1+\beta^t)}{(1+\beta)(1-\beta^t)},
      \qquad \rho_1 = 1, \quad \rho_t \to \frac{1-\beta}{1+\beta}.

    Args:
      beta: the EMA decay.
      count: the step count :math:`t \geq 1`.

    Returns:
      A scalar.

    References:
      Balles & Hennig, `Dissecting Adam: The Sign, Magnitude and Variance of
      Stochastic Gradients <https://arxiv.org/abs/1705.07774>`_, eq. 21, 2018.
    """
    one_minus_bt = debias_denominator(beta, count)
    return (1.0 - beta) * (2.0 - one_minus_bt) / ((1.0 + beta) * one_minus_bt)


def variance_scale(beta: Scalar, count: jax.Array) -> jax.Array:
    r"""The factor :math:`1/(1-\rho_t)` that turns ``vh - mh**2`` into an unbiased
    variance estimate; 0 where it is undefined.

    At :math:`t = 1` (one sample) and for :math:`\beta = 0` there is no second
    sample to estimate a variance from, :math:`\rho_t = 1`, and the estimate is
    defined as 0 (Dissecting Adam: the first M-SVAG step is an SGD step).

    Args:
      beta: the EMA decay.
      count: the step count :math:`t \geq 1`.

    Returns:
      A scalar.
    """
    return _guarded_ratio(1.0, relative_variance_rho(beta, count), count)


def _guarded_ratio(numerator: Any, rho: jax.Array, count: jax.Array) -> jax.Array:
    """``numerator / (1 - rho)`` where a variance is defined (t >= 2, rho < 1), else 0.

    The division is the last op on purpose: XLA copies a scalar's cheap tail (selects,
    products) into every leaf's kernel that reads it, which costs compile time per leaf,
    but leaves a division in a kernel of its own, computed once per step.
    """
    one_minus_rho = 1.0 - rho
    defined = (jnp.asarray(count) >= 2) & (one_minus_rho > 0)
    return jnp.where(defined, numerator, 0.0) / jnp.where(defined, one_minus_rho, 1.0)


def momentum_variance_scale(beta: Scalar, count: jax.Array) -> jax.Array:
    r"""The factor :math:`\rho_t / (1 - \rho_t)` that turns ``vh - mh**2`` into the
    variance of the debiased momentum, :math:`\rho_t s_t`; 0 at ``t = 1``.

    Args:
      beta: the EMA decay.
      count: the step count :math:`t \geq 1`.

    Returns:
      A scalar: :func:`relative_variance_rho` times :func:`variance_scale`.

    Example:
      >>> from optax_signvar import blocks
      >>> print(blocks.momentum_variance_scale(0.9, 1))
      0.0
    """
    rho = relative_variance_rho(beta, count)
    return _guarded_ratio(rho, rho, count)


def adabound_step(b1: Scalar, b2: Scalar, count: jax.Array) -> jax.Array:
    r"""AdaBound's bias corrections folded into one scalar step size (at unit rate).

    .. math:: s_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}

    Args:
      b1: decay of the first moment.
      b2: decay of the second moment.
      count: the step count :math:`t \geq 1`.

    Returns:
      A scalar, the ``step`` of :func:`adaptive_rate`.

    Example:
      >>> from optax_signvar import blocks
      >>> print(f"{blocks.adabound_step(0.5, 0.75, 1):.3f}")
      1.000
    """
    return jnp.sqrt(debias_denominator(b2, count)) / debias_denominator(b1, count)


def dynamic_bounds(scale: Scalar, gamma: Scalar, count: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""AdaBound's lower and upper bound of the per-element rate at step ``t``.

    .. math::
      \eta_l(t) = f\,\Big(1 - \frac{1}{\gamma t + 1}\Big), \qquad
      \eta_u(t) = f\,\Big(1 + \frac{1}{\gamma t}\Big).

    Args:
      scale: the final rate :math:`f` (the SGD rate both bounds tend to).
      gamma: the convergence speed of the bounds, in [0, 1); at 0 the bounds
        are :math:`[0, \infty)` for every ``t`` (no clip: Adam), the limit
        :math:`\gamma \to 0`.
      count: the step count :math:`t \geq 1`.

    Returns:
      ``(lower, upper)`` scalars.

    References:
      Luo et al., `Adaptive Gradient Methods with Dynamic Bound of Learning Rate
      <https://openreview.net/forum?id=Bkg3g2R9FX>`_, 2019.
    """
    gt = gamma * step_float(count, gamma)
    # gt / (gt + 1) is 1 - 1 / (gt + 1) without the cancellation that costs
    # float32 four digits at small gamma * t.
    upper = scale * (1.0 + 1.0 / gt)
    if not (isinstance(gamma, (int, float)) and gamma > 0):
        # gamma = 0: no upper bound, also where scale = 0 (not 0 * inf = NaN)
        upper = jnp.where(gt > 0, upper, jnp.inf)
    return scale * (gt / (gt + 1.0)), upper


# --------------------------------------------------------------------------- #
# Tree functions.
# --------------------------------------------------------------------------- #


def ema(updates: Tree, moment: Tree, decay: Scalar, order: int = 1) -> Tree:
    r"""Exponential moving average of the ``order``-th power of the updates.

    .. math:: m_t = \beta\, m_{t-1} + (1-\beta)\, g_t^{k}

    The arithmetic runs in the dtype of ``moment`` (the accumulator), so a
    float32 second moment of bfloat16/float16 gradients squares them in float32
    and does not overflow. For a complex gradient the second power is
    :math:`|g_t|^2` (real), as in optax: the second moment is a magnitude.

    Args:
      updates: the gradients :math:`g_t`.
      moment: the previous average :math:`m_{t-1}`.
      decay: :math:`\beta`.
      order: the power :math:`k` (1 or 2).

    Returns:
      The new average, of the dtype of ``moment``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.ema(jnp.array([2.0]), jnp.array([1.0]), 0.5, order=2)
      Array([2.5], dtype=float32)
    """

    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}.")

    def leaf(g, m):
        if order == 1 and is_complex(g) and not is_complex(m):
            raise ValueError(
                f"a complex gradient ({g.dtype}) for a real first moment ({m.dtype}): the "
                "state was initialised from real params, or mu_dtype is real."
            )
        # (1 - decay) is formed before the cast, as optax does, so a bfloat16
        # accumulator gets the same weights as optax's.
        return keep(m) * m + new(m) * (
            _square_in(g, m.dtype) if order == 2 else as_dtype(g, m.dtype)
        )

    keep, new = per_dtype(decay), per_dtype(1 - decay)

    return tree_map(leaf, updates, moment)


def _square_in(x: jax.Array, dtype: Any) -> jax.Array:
    """``|x|**2`` in ``dtype``: a real ``x`` is cast first (a bfloat16 square rounds
    to 8 bits), a complex one after (``|x|**2`` of a complex64 is float32)."""
    if is_complex(x):
        return as_dtype(abs_sq(x), dtype)
    x = as_dtype(x, dtype)
    return x * x


def bias_correction(moment: Tree, denominator: Scalar) -> Tree:
    r"""Divides every leaf by a bias-correction denominator.

    .. math:: \hat m_t = \frac{m_t}{1 - \beta^t}

    The denominator is computed once per step (:func:`debias_denominator`), in
    the precision of the hyperparameter, and cast to the moment's dtype only
    here: :math:`\beta^t` in bfloat16 would round to 1. The leaves are
    multiplied by its reciprocal, formed once: a per-element division costs
    several multiplications on a CPU, and XLA does not make this rewrite itself
    (it is not exact; the difference is one rounding).

    Args:
      moment: an EMA tree.
      denominator: :math:`1 - \beta^t`.

    Returns:
      The debiased tree, of the dtype of ``moment``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.bias_correction(jnp.array([0.5]), blocks.debias_denominator(0.5, 1))
      Array([1.], dtype=float32)
    """
    inverse = per_dtype(1.0 / jnp.asarray(denominator))
    return tree_map(lambda m: m * inverse(m), moment)


def sign(tree: Tree) -> Tree:
    """Elementwise sign (0 at 0), dtype preserved; :math:`g/|g|` for a complex :math:`g`.

    Args:
      tree: a pytree of arrays.

    Returns:
      The tree of signs, each leaf in its own dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.sign(jnp.array([-2.0, 0.0, 3.0]))
      Array([-1.,  0.,  1.], dtype=float32)
    """
    return tree_map(jnp.sign, tree)


def running_max(previous: Tree, current: Tree) -> Tree:
    r"""Max-tracking (AMSGrad): :math:`\hat v_t = \max(\hat v_{t-1}, v_t)`.

    Args:
      previous: the running max so far.
      current: the new second moment.

    Returns:
      The elementwise max, in the dtype of ``previous``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.running_max(jnp.array([1.0, 3.0]), jnp.array([2.0, 2.0]))
      Array([2., 3.], dtype=float32)
    """
    return tree_map(lambda p, c: jnp.maximum(p, as_dtype(c, p.dtype)), previous, current)


def variance_estimate(mu_hat: Tree, nu_hat: Tree, scale: Scalar) -> Tree:
    r"""Dissecting Adam's estimate of the gradient variance from the two moments.

    .. math:: s_t = \frac{\max(\hat v_t - |\hat m_t|^2,\, 0)}{1 - \rho_t}

    (for a complex gradient, :math:`E|g - Eg|^2`, real).

    Args:
      mu_hat: debiased first moment :math:`\hat m_t`.
      nu_hat: debiased second moment :math:`\hat v_t`.
      scale: :math:`1/(1-\rho_t)`, from :func:`variance_scale` (0 at ``t = 1``).

    Returns:
      The elementwise variance estimate, of the dtype of ``nu_hat``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.variance_estimate(jnp.array([1.0]), jnp.array([2.0]), 2.0)
      Array([2.], dtype=float32)
    """

    def leaf(m, v):
        return jnp.maximum(v - _square_in(m, v.dtype), 0) * cast_scale(v)

    cast_scale = per_dtype(scale)

    return tree_map(leaf, mu_hat, nu_hat)


def variance_factor(direction: Tree, variance: Tree) -> Tree:
    r"""Variance adaptation of a raw direction (SVAG, M-SVAG).

    .. math:: \gamma = \frac{|d|^2}{|d|^2 + \sigma^2} \in [0, 1]

    where :math:`\sigma^2 \ge 0` is the variance of the direction :math:`d`
    (:math:`E|d - Ed|^2` for a complex one: the derivation, the factor that
    minimises :math:`E|\gamma d - Ed|^2`, holds as it stands).
    Where :math:`d = \sigma^2 = 0` the factor is 0 (the coordinate does not
    move), as in the authors' code; no ``eps`` is added.

    Args:
      direction: the direction :math:`d` (e.g. :math:`\hat m_t` or :math:`g_t`).
      variance: its variance :math:`\sigma^2`, non-negative (a negative entry
        would give a factor above 1).

    Returns:
      The factor, of the dtype of ``variance``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.variance_factor(jnp.array([1.0, 0.0]), jnp.array([1.0, 0.0]))
      Array([0.5, 0. ], dtype=float32)
    """

    def leaf(d, s):
        d2 = _square_in(d, s.dtype) if is_complex(d) else jnp.square(as_dtype(d, s.dtype))
        # 0 <= d2 <= d2 + s, so flooring the denominator at the smallest normal
        # number turns 0/0 into 0 and changes nothing else: one max instead of
        # a compare and two selects, in the hottest loop of the package. With
        # s >= 0 the rounded quotient cannot leave [0, 1] (fl(d2 + s) >= d2),
        # so no clip: each elementwise op is ~3% of this step on a CPU.
        tiny = jnp.finfo(s.dtype).tiny
        return d2 / jnp.maximum(d2 + s, tiny)

    return tree_map(leaf, direction, variance)


SIGN_ADAPTATIONS = ("optimal", "adam")

COMPLEX_SIGN_ERF = (
    "the optimal variance factor of a sign, erf(1/(sqrt(2) eta)), is defined for real "
    "numbers only: it is 2P(sign g = sign E[g]) - 1 for a real Gaussian g, and the sign of "
    "a complex number is its phase, whose factor Dissecting Adam does not derive. Use "
    "variance_adaptation='adam' (Adam's (1 + eta^2)^(-1/2), defined for moduli) with "
    "complex parameters."
)


@_deprecation.renamed_arguments(form=("variance_adaptation", {"erf": "optimal"}))
def sign_variance_factor(
    direction: Tree, variance: Tree, variance_adaptation: str = "optimal"
) -> Tree:
    r"""Variance adaptation of a sign (variance-adapted sign descent).

    With :math:`\eta^2 = \sigma^2 / d^2` the relative variance of the direction,
    the optimal factor for ``sign(d)`` (``variance_adaptation="optimal"``) is
    the expected sign agreement

    .. math:: \gamma_s = \operatorname{erf}\Big(\frac{1}{\sqrt{2}\,\eta}\Big),

    and Adam's implicit approximation of it (``variance_adaptation="adam"``) is

    .. math:: \gamma_s = (1 + \eta^2)^{-1/2}.

    The names are those of :func:`optax_signvar.dissect`'s
    ``variance_adaptation`` (``form="erf"`` is the old spelling of
    ``"optimal"``).

    ``"adam"`` is defined for complex directions (from :math:`|d|^2`);
    ``"optimal"`` raises ``ValueError`` for them: the erf is the sign agreement of
    a real Gaussian, and a complex sign is a phase.

    Where :math:`d = \sigma^2 = 0` the factor is 0 (as for a direction whose
    square underflows, :math:`|d| < 10^{-19}` in float32); where :math:`\sigma^2
    = 0 < d^2` it is exactly 1.

    The optimal factor in float32 on a CPU evaluates, on leaves of :math:`2^{16}`
    elements or more, the rational approximation of XLA's own ``erf`` inline in
    :math:`d^2/\sigma^2` (XLA:CPU calls ``erf`` out of line, which made it the
    bottleneck of M-VASSD's step); elsewhere it uses
    :func:`jax.scipy.special.erf`. Both are within 5e-7 of the exact value and
    never exceed 1.

    Args:
      direction: the direction :math:`d`.
      variance: its variance :math:`\sigma^2`, non-negative.
      variance_adaptation: ``"optimal"`` (the erf) or ``"adam"``.

    Returns:
      The factor in [0, 1], of the dtype of ``variance``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.sign_variance_factor(jnp.array([1.0]), jnp.array([1.0]), "adam")
      Array([0.70710677], dtype=float32)
    """
    adaptation = _deprecation.renamed_value(
        "sign_variance_factor", "variance_adaptation", variance_adaptation, {"erf": "optimal"}
    )
    if adaptation == "adam":
        return tree_map(jnp.sqrt, variance_factor(direction, variance))
    if adaptation != "optimal":
        raise ValueError(
            f"variance_adaptation must be one of {SIGN_ADAPTATIONS}, got {variance_adaptation!r}."
        )

    def leaf(d, s):
        if is_complex(d):
            raise ValueError(COMPLEX_SIGN_ERF)
        d2 = jnp.square(as_dtype(d, s.dtype))
        # The factor is erf(sqrt(r / 2)) with r = d^2 / s = 1 / eta^2. Flooring s at
        # the smallest normal number sends s = 0 < d^2 to an infinite r (the factor 1)
        # and 0/0 to 0 (the factor 0) with one max instead of a compare and a select.
        r = d2 / jnp.maximum(s, jnp.finfo(s.dtype).tiny)
        if s.dtype != jnp.float32 or s.size < _INLINE_ERF_MIN_SIZE:
            return _erf_of_sqrt_half(r)
        # XLA:CPU evaluates erf out of line, 2.5x slower than the inline polynomial;
        # on a GPU XLA's own erf keeps the step at memory speed (H100: M-VASSD at
        # 1.02x optax.adam), where the polynomial would only lengthen the compile.
        return jax.lax.platform_dependent(r, cpu=_erf_of_sqrt_half_f32, default=_erf_of_sqrt_half)

    return tree_map(leaf, direction, variance)


# erf(x) = x P(x^2) / Q(x^2): the float32 rational approximation of XLA and Eigen
# (XLA's EmitErfF32), here in r = 2 x^2 = d^2 / s, the quotient the factor starts
# from. Its coefficients are XLA's times powers of 1/2 (exact), P's also times
# 1/sqrt(2), so erf(sqrt(r / 2)) = sqrt(r) P(r) / Q(r) costs no root of a quotient,
# no squaring back and no multiply by 2. XLA:CPU's own erf is an out-of-line
# intrinsic 2.5x slower than this inline polynomial; on the M-VASSD step the
# difference is 10-15% at 10M parameters (python -m benchmarks.speed); see
# _INLINE_ERF_MIN_SIZE for its compile cost. Accuracy as jax.scipy.special.erf:
# 3e-7 absolute (4.4e-7 op by op, without FMA contraction).
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
_ERF_P_HALF = tuple(c * 0.5 ** (len(_ERF_P) - 1 - i) / math.sqrt(2.0) for i, c in enumerate(_ERF_P))
_ERF_Q_HALF = tuple(c * 0.5 ** (len(_ERF_Q) - 1 - i) for i, c in enumerate(_ERF_Q))
# Beyond x^2 = 13.7 erf rounds to within 2e-7 of 1.0f, and at r = 27.444 the float32
# rational rounds to 1.0000001 both op by op and fused: clamping r there and capping
# at 1 makes the factor exactly 1 for every r >= 27.444 (s = 0 included: M-VASSD
# without noise is sign descent) and never above 1, at the price of one min.
_ERF_R_CLAMP = 27.444


# The inline polynomial costs ~25 more HLO ops than XLA's erf, which XLA:CPU compiles
# in ~5 ms per leaf, and saves ~0.1-0.2 ns per element per step: about 5e7 / n steps
# to pay for itself on a leaf of n elements (~500 steps at 2^16, ~30 at 2^20). The
# many small leaves of a model (biases, norms) keep XLA's erf. The two agree to 7e-7.
_INLINE_ERF_MIN_SIZE = 2**16


def _erf_of_sqrt_half(r: jax.Array) -> jax.Array:
    """``erf(sqrt(r / 2))`` with XLA's erf, capped at 1 (its float32 form can round above)."""
    return jnp.minimum(erf(jnp.sqrt(r * jnp.asarray(0.5, r.dtype))), jnp.ones((), r.dtype))


def _horner(coefficients: tuple[float, ...], x: jax.Array) -> jax.Array:
    acc = jnp.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        acc = acc * x + jnp.asarray(c, x.dtype)
    return acc


def _erf_of_sqrt_half_f32(r: jax.Array) -> jax.Array:
    """``erf(sqrt(r / 2))`` for float32 ``r >= 0`` (NaN stays NaN)."""
    r = jnp.minimum(r, jnp.asarray(_ERF_R_CLAMP, r.dtype))
    y = jnp.sqrt(r) * _horner(_ERF_P_HALF, r) / _horner(_ERF_Q_HALF, r)
    return jnp.minimum(y, jnp.ones((), r.dtype))


def multiply(factor: Tree, direction: Tree) -> Tree:
    """Elementwise ``factor * direction``, in the dtype of ``factor``.

    Args:
      factor: per-element factors (e.g. a variance factor or a clipped rate).
      direction: a tree of the same structure.

    Returns:
      The product, in the dtype of ``factor`` (its complex counterpart for a
      complex ``direction``).

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.multiply(jnp.array([0.5]), jnp.array([4.0]))
      Array([2.], dtype=float32)
    """

    def leaf(f, d):
        if is_complex(d):
            # a real factor scales a complex direction: the product keeps its phase
            # (by hand: strict promotion has no float32 -> complex64 path)
            wide = f.dtype.itemsize > real_dtype(d.dtype).itemsize
            out = jnp.dtype(jnp.complex128) if wide else d.dtype
            return as_dtype(f, out) * as_dtype(d, out)
        return f * as_dtype(d, f.dtype)

    return tree_map(leaf, factor, direction)


def scale(tree: Tree, factor: Scalar) -> Tree:
    """Every leaf times one scalar, cast to the leaf's dtype.

    Args:
      tree: a pytree of arrays.
      factor: a scalar.

    Returns:
      The scaled tree, each leaf in its own dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.scale(jnp.array([1.0, -2.0]), 0.5)
      Array([ 0.5, -1. ], dtype=float32)
    """
    cast = per_dtype(factor)
    return tree_map(lambda x: x * cast(x), tree)


def clip_rate(rate: Tree, lower: Scalar, upper: Scalar) -> Tree:
    r"""Clips a per-element rate into ``[lower, upper]`` (AdaBound).

    Args:
      rate: per-element rates.
      lower: the scalar lower bound.
      upper: the scalar upper bound.

    Returns:
      The clipped rates, in their own dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.clip_rate(jnp.array([0.0, 0.5, 9.0]), 0.1, 1.0)
      Array([0.1, 0.5, 1. ], dtype=float32)
    """
    lo, hi = per_dtype(lower), per_dtype(upper)
    # minimum(maximum()) rather than jnp.clip, a jitted function traced per leaf
    return tree_map(lambda r: jnp.minimum(jnp.maximum(r, lo(r)), hi(r)), rate)


def rms_normalize(direction: Tree, nu: Tree, eps: Scalar) -> Tree:
    r"""Adam's normalisation of a direction by the root of a second moment.

    .. math:: u = \frac{d}{\sqrt{v} + \epsilon}

    Args:
      direction: the numerator :math:`d` (e.g. :math:`\hat m_t`).
      nu: the second moment :math:`v` (e.g. :math:`\hat v_t` or AMSGrad's max).
      eps: :math:`\epsilon`, added outside the root.

    Returns:
      The normalised direction, computed in the wider of the two dtypes (in
      ``d``'s for a complex ``d``).

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.rms_normalize(jnp.array([2.0]), jnp.array([4.0]), 0.0)
      Array([1.], dtype=float32)
    """

    def leaf(d, v):
        if is_complex(d):
            # v is real (|g|^2): the root in its dtype, the quotient keeps d's phase
            return d / as_dtype(jnp.sqrt(v) + cast_eps(v), d.dtype)
        # the wider of the two, picked by hand: strict promotion has no
        # implicit bfloat16 -> float32 path
        dt = d.dtype if d.dtype.itemsize > v.dtype.itemsize else v.dtype
        v = as_dtype(v, dt)
        return as_dtype(d, dt) / (jnp.sqrt(v) + cast_eps(v))

    cast_eps = per_dtype(eps)

    return tree_map(leaf, direction, nu)


def adaptive_rate(nu: Tree, eps: Scalar, step: Scalar) -> Tree:
    r"""AdaBound's per-element rate before clipping.

    .. math:: r = \frac{s_t}{\sqrt{v} + \epsilon}, \qquad
      s_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\ (\times \text{the rate})

    Args:
      nu: the raw (not debiased) second moment, or its running max.
      eps: :math:`\epsilon`.
      step: the scalar :math:`s_t`.

    Returns:
      The per-element rate, of the dtype of ``nu``.

    Example:
      >>> import jax.numpy as jnp
      >>> from optax_signvar import blocks
      >>> blocks.adaptive_rate(jnp.array([4.0]), 0.0, 1.0)
      Array([0.5], dtype=float32)
    """
    cast_step, cast_eps = per_dtype(step), per_dtype(eps)
    return tree_map(lambda v: cast_step(v) / (jnp.sqrt(v) + cast_eps(v)), nu)
