"""Pure-JAX image classifiers for the reproductions: ``Net(init, apply)`` pairs, NHWC.

* :func:`net_2c2d`: DeepOBS' ``fmnist_2c2d`` (Dissecting Adam's P1 network).
* :func:`net_3c3d`: DeepOBS' ``cifar10_3c3d`` (P2), on 28x28x1 inputs instead of 32x32x3.
* :func:`wide_resnet`: a pre-activation wide ResNet WRN-d-k (P3; AdaBound's CIFAR runs use a
  ResNet-34), with **GroupNorm instead of BatchNorm**: the optimizers are compared through a
  pure ``loss_fn(params, key)`` (:func:`optax_signvar.research.ablate`), which has no place for the
  running statistics BatchNorm keeps, and GroupNorm needs none (it normalizes each example on
  its own, identically in training and evaluation).

No Flax: parameters are nested dicts of arrays, so any optax transformation applies as is.
Initializers: Glorot normal weights with DeepOBS' constant biases for 2c2d/3c3d (as their
TensorFlow code), He normal convolutions and a Glorot head for the ResNet (as Zagoruyko &
Komodakis). DeepOBS' L2 regularization of 3c3d (0.002) is not part of the loss here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.custom_batching import custom_vmap

Params = dict[str, Any]
_DIMS = ("NHWC", "HWIO", "NHWC")


@dataclass(frozen=True)
class Net:
    """A network: ``init(key) -> params`` and ``apply(params, x) -> logits``; optionally
    ``apply_one(params, x) -> logits`` of one image (no batch axis), the same function, for
    per-example losses (:func:`one_example_logits`)."""

    name: str
    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    apply_one: Callable[[Params, jax.Array], jax.Array] | None = None


def one_example_logits(net: Net, params: Params, x: jax.Array) -> jax.Array:
    """The logits of one image ``x`` (no batch axis): ``net.apply_one``, or ``net.apply`` on
    a batch of one. ``apply_one`` keeps the dense layers on vectors, which
    :func:`optax_signvar.minibatch.per_example_grad_moments` factors (no per-example
    gradient formed) where a batch of one would go through its per-example path."""
    if net.apply_one is not None:
        return net.apply_one(params, x)
    return net.apply(params, x[None])[0]


# --------------------------------------------------------------------------- #
# Layers.
# --------------------------------------------------------------------------- #


def _glorot(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int) -> jax.Array:
    # truncated at 2 sd like tf.glorot_normal / keras, rescaled so the variance is 2/(in+out)
    std = math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)


def _he(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    return math.sqrt(2.0 / fan_in) * jax.random.normal(key, shape, jnp.float32)


def _conv_params(key, k: int, c_in: int, c_out: int, *, he: bool, bias: float | None) -> Params:
    shape = (k, k, c_in, c_out)
    if he:
        w = _he(key, shape, k * k * c_in)
    else:
        w = _glorot(key, shape, k * k * c_in, k * k * c_out)
    p = {"w": w}
    if bias is not None:
        p["b"] = jnp.full((c_out,), bias, jnp.float32)
    return p


def _dense_params(key, n_in: int, n_out: int, bias: float) -> Params:
    return {
        "w": _glorot(key, (n_in, n_out), n_in, n_out),
        "b": jnp.full((n_out,), bias, jnp.float32),
    }


def conv(p: Params, x: jax.Array, *, stride: int = 1, padding: str = "SAME") -> jax.Array:
    y = _conv(x, p["w"], stride, padding)
    return y + p["b"] if "b" in p else y


# XLA:CPU runs a convolution fast (Eigen) only in the canonical NHWC/HWIO form. Autodiff's
# weight and input gradients are convolutions in other forms; at the top level XLA fixes
# their layouts, but inside a while loop (`lax.scan`, which `optax_signvar.research.ablate` trains
# in) it does not, and they run 10-30x slower (jax-ml/jax#12868): a 2c2d step took 5 s
# instead of 0.3 s. So the backward pass is written by hand, as canonical convolutions on
# transposed operands; it equals autodiff's (tests/test_reproduce_data.py checks it).
#
# For the same reason vmap gets a rule too: ablate runs its seeds under `jax.vmap`, which
# turns a convolution with per-seed kernels into a grouped convolution, 2x slower per seed on
# XLA:CPU and slow to compile; the rule below runs one canonical convolution per seed instead.
def _per_example(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """``fn`` under ``jax.vmap`` as a loop over the mapped axis (its size is static)."""
    fn = custom_vmap(fn)

    def rule(axis_size, in_batched, *args):
        outs = [
            fn(*(a[i] if b else a for a, b in zip(args, in_batched, strict=True)))
            for i in range(axis_size)
        ]
        return jnp.stack(outs), True

    fn.def_vmap(rule)
    return fn


def _canonical(stride: int, padding: Any, lhs_dilation: int = 1, rhs_dilation: int = 1):
    """A plain NHWC/HWIO convolution of (lhs, rhs) with these fixed settings, vmap as a loop."""

    def run(lhs: jax.Array, rhs: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            (stride, stride),
            padding,
            lhs_dilation=(lhs_dilation, lhs_dilation),
            rhs_dilation=(rhs_dilation, rhs_dilation),
            dimension_numbers=_DIMS,
        )

    return _per_example(run)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: jax.Array, w: jax.Array, stride: int, padding: str) -> jax.Array:
    return _canonical(stride, padding)(x, w)


def _conv_fwd(x, w, stride, padding):
    return _conv(x, w, stride, padding), (x, w)


def _geometry(size: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    """Output size and padding before, as XLA/TensorFlow pad 'SAME' and 'VALID'."""
    if padding == "SAME":
        out = -(-size // stride)
        return out, max((out - 1) * stride + k - size, 0) // 2
    return (size - k) // stride + 1, 0


def _conv_bwd(stride, padding, res, dy):
    x, w = res
    s, (kh, kw) = stride, w.shape[:2]
    h, wd = x.shape[1:3]
    oh, lo_h = _geometry(h, kh, s, padding)
    ow, lo_w = _geometry(wd, kw, s, padding)
    # dW[i, j, c, o] = sum_{n,y,x} x[n, s*y + i - lo, s*x + j - lo, c] dy[n, y, x, o]: a
    # convolution with batch and channels of x swapped and dy as a (dilated) kernel.
    hi_h, hi_w = kh + (oh - 1) * s - h - lo_h, kw + (ow - 1) * s - wd - lo_w
    xt = jnp.transpose(x, (3, 1, 2, 0))[:, : h + min(hi_h, 0), : wd + min(hi_w, 0)]
    pads = ((lo_h, max(hi_h, 0)), (lo_w, max(hi_w, 0)))
    dyt = jnp.transpose(dy, (1, 2, 0, 3))
    dw = _canonical(1, pads, rhs_dilation=s)(xt, dyt)
    dw = jnp.transpose(dw, (1, 2, 0, 3))
    # dx: the (stride-dilated) dy convolved with the flipped kernel, in and out swapped
    wf = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    pl_h, pl_w = kh - 1 - lo_h, kw - 1 - lo_w
    ph_h, ph_w = h + kh - 2 - (oh - 1) * s - pl_h, wd + kw - 2 - (ow - 1) * s - pl_w
    dx = _canonical(1, ((pl_h, ph_h), (pl_w, ph_w)), lhs_dilation=s)(dy, wf)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def max_pool(x: jax.Array, size: int, stride: int) -> jax.Array:
    """Max-pooling with TensorFlow's 'SAME' padding.

    Written as a maximum of strided slices rather than ``lax.reduce_window``: the latter's
    gradient (``select_and_scatter``) is 5-10x slower on XLA:CPU, and pooling then costs as
    much as the convolutions.
    """
    _, h, w, _ = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + size - h, 0)
    pad_w = max((out_w - 1) * stride + size - w, 0)
    pads = ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    x = jnp.pad(x, pads, constant_values=-jnp.inf)
    out = None
    for i in range(size):
        for j in range(size):
            part = x[
                :,
                i : i + (out_h - 1) * stride + 1 : stride,
                j : j + (out_w - 1) * stride + 1 : stride,
            ]
            out = part if out is None else jnp.maximum(out, part)
    assert out is not None
    return out


def dense(p: Params, x: jax.Array) -> jax.Array:
    return x @ p["w"] + p["b"]


def group_norm(p: Params, x: jax.Array, groups: int, eps: float = 1e-5) -> jax.Array:
    n, h, w, c = x.shape
    g = math.gcd(groups, c)
    xg = x.reshape(n, h, w, g, c // g)
    mean = xg.mean(axis=(1, 2, 4), keepdims=True)
    var = xg.var(axis=(1, 2, 4), keepdims=True)
    xg = (xg - mean) * jax.lax.rsqrt(var + eps)
    return xg.reshape(n, h, w, c) * p["scale"] + p["bias"]


def _norm_params(c: int) -> Params:
    return {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}


# --------------------------------------------------------------------------- #
# DeepOBS' 2c2d and 3c3d.
# --------------------------------------------------------------------------- #


def net_2c2d(
    num_classes: int = 10, image_size: int = 28, channels: int = 1, weight_std: float | None = None
) -> Net:
    """DeepOBS ``fmnist_2c2d``: conv5x5(32)-pool2, conv5x5(64)-pool2, fc1024, fc(classes).

    'same' convolutions and 2x2/2 max-pools, ReLU, biases 0.05 (3.27M parameters on 28x28).
    Weights: Glorot normal by default (the CPU-budget runs); ``weight_std=0.05`` is DeepOBS'
    own initializer, ``tf.truncated_normal_initializer(stddev=0.05)``: a normal of that
    standard deviation redrawn beyond 2 sd (the paper-budget runs).
    """
    flat = math.ceil(image_size / 4) ** 2 * 64

    def init(key: jax.Array) -> Params:
        k = jax.random.split(key, 4)
        params = {
            "conv1": _conv_params(k[0], 5, channels, 32, he=False, bias=0.05),
            "conv2": _conv_params(k[1], 5, 32, 64, he=False, bias=0.05),
            "fc1": _dense_params(k[2], flat, 1024, 0.05),
            "fc2": _dense_params(k[3], 1024, num_classes, 0.05),
        }
        if weight_std is None:
            return params
        keys = iter(jax.random.split(jax.random.fold_in(key, 1), 4))
        for layer in params.values():
            w = layer["w"]
            layer["w"] = weight_std * jax.random.truncated_normal(
                next(keys), -2.0, 2.0, w.shape, w.dtype
            )
        return params

    def features(p: Params, x: jax.Array) -> jax.Array:
        x = max_pool(jax.nn.relu(conv(p["conv1"], x)), 2, 2)
        return max_pool(jax.nn.relu(conv(p["conv2"], x)), 2, 2)

    def apply(p: Params, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(dense(p["fc1"], features(p, x).reshape(x.shape[0], -1)))
        return dense(p["fc2"], x)

    def apply_one(p: Params, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(dense(p["fc1"], features(p, x[None]).reshape(-1)))
        return dense(p["fc2"], x)

    return Net("2c2d", init, apply, apply_one)


def net_3c3d(num_classes: int = 10, image_size: int = 28, channels: int = 1) -> Net:
    """DeepOBS ``cifar10_3c3d``: conv5x5(64) valid, conv3x3(96) valid, conv3x3(128) same, each
    with ReLU and a 3x3/2 'same' max-pool, then fc512, fc256, fc(classes); biases 0.

    On 28x28 the feature maps are 24 -> 12 -> 10 -> 5 -> 5 -> 3 (3x3x128 = 1152 features into
    fc512; 0.85M parameters, vs 1.41M on CIFAR's 32x32x3).
    """
    side = image_size - 4  # conv5x5 valid
    side = math.ceil(side / 2) - 2  # pool, conv3x3 valid
    side = math.ceil(math.ceil(side / 2) / 2)  # pool, conv3x3 same, pool
    if side < 1:
        raise ValueError(f"3c3d needs larger images than {image_size}x{image_size}.")
    flat = side * side * 128

    def init(key: jax.Array) -> Params:
        k = jax.random.split(key, 6)
        return {
            "conv1": _conv_params(k[0], 5, channels, 64, he=False, bias=0.0),
            "conv2": _conv_params(k[1], 3, 64, 96, he=False, bias=0.0),
            "conv3": _conv_params(k[2], 3, 96, 128, he=False, bias=0.0),
            "fc1": _dense_params(k[3], flat, 512, 0.0),
            "fc2": _dense_params(k[4], 512, 256, 0.0),
            "fc3": _dense_params(k[5], 256, num_classes, 0.0),
        }

    def apply(p: Params, x: jax.Array) -> jax.Array:
        x = max_pool(jax.nn.relu(conv(p["conv1"], x, padding="VALID")), 3, 2)
        x = max_pool(jax.nn.relu(conv(p["conv2"], x, padding="VALID")), 3, 2)
        x = max_pool(jax.nn.relu(conv(p["conv3"], x)), 3, 2)
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(dense(p["fc1"], x))
        x = jax.nn.relu(dense(p["fc2"], x))
        return dense(p["fc3"], x)

    return Net("3c3d", init, apply)


# --------------------------------------------------------------------------- #
# Wide ResNet.
# --------------------------------------------------------------------------- #


def wide_resnet(
    depth: int = 16,
    width: int = 4,
    num_classes: int = 10,
    channels: int = 1,
    base: int = 16,
    groups: int = 8,
    stages: int = 3,
) -> Net:
    """WRN-``depth``-``width`` (Zagoruyko & Komodakis, 2016) with GroupNorm for BatchNorm.

    A 3x3 stem of ``base`` channels, three groups of ``(depth - 4) / 6`` pre-activation basic
    blocks (norm-ReLU-conv3x3, twice) of ``base * width * (1, 2, 4)`` channels at strides 1, 2,
    2 (a 1x1 convolution on the shortcut where the shape changes), then norm-ReLU, global
    average pooling and a linear head. Normalization: GroupNorm with ``groups`` groups
    (stateless, see the module docstring), not the paper's BatchNorm. Dissecting Adam's P3 is
    WRN-16-4 (2.7M parameters on 3-channel input); ``base`` shrinks every layer and ``stages``
    < 3 drops the last groups, for cheap runs (the smoke tests).
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}.")
    if width < 1 or base < 1:
        raise ValueError(f"WRN width and base must be positive, got {width} and {base}.")
    if stages not in (1, 2, 3):
        raise ValueError(f"stages must be 1, 2 or 3, got {stages}.")
    n = (depth - 4) // 6
    groups_of = [(base * width * m, s) for m, s in ((1, 1), (2, 2), (4, 2))][:stages]

    def init(key: jax.Array) -> Params:
        keys = iter(jax.random.split(key, 3 * n * 3 + 2))
        params: Params = {"stem": _conv_params(next(keys), 3, channels, base, he=True, bias=None)}
        c_in = base
        for i, (c_out, stride) in enumerate(groups_of):
            for j in range(n):
                block: Params = {
                    "norm1": _norm_params(c_in),
                    "conv1": _conv_params(next(keys), 3, c_in, c_out, he=True, bias=None),
                    "norm2": _norm_params(c_out),
                    "conv2": _conv_params(next(keys), 3, c_out, c_out, he=True, bias=None),
                }
                if c_in != c_out or (j == 0 and stride != 1):
                    block["short"] = _conv_params(next(keys), 1, c_in, c_out, he=True, bias=None)
                params[f"g{i}b{j}"] = block
                c_in = c_out
        params["norm"] = _norm_params(c_in)
        params["head"] = _dense_params(next(keys), c_in, num_classes, 0.0)
        return params

    def apply(p: Params, x: jax.Array) -> jax.Array:
        x = conv(p["stem"], x)
        for i, (_, stride) in enumerate(groups_of):
            for j in range(n):
                b = p[f"g{i}b{j}"]
                s = stride if j == 0 else 1
                h = jax.nn.relu(group_norm(b["norm1"], x, groups))
                short = conv(b["short"], h, stride=s) if "short" in b else x
                h = conv(b["conv1"], h, stride=s)
                h = conv(b["conv2"], jax.nn.relu(group_norm(b["norm2"], h, groups)))
                x = h + short
        x = jax.nn.relu(group_norm(p["norm"], x, groups))
        return dense(p["head"], x.mean(axis=(1, 2)))

    name = f"WRN-{depth}-{width}"
    if base != 16 or stages != 3:
        name += f" (base {base}" + ("" if stages == 3 else f", {stages} of 3 groups") + ")"
    return Net(name, init, apply)


# --------------------------------------------------------------------------- #
# Loss and accuracy.
# --------------------------------------------------------------------------- #


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return (jnp.argmax(logits, axis=-1) == labels).mean()


def n_params(params: Params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
