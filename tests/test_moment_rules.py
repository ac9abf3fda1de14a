"""Fast exact mini-batch gradient moments (issue 17): ``method="auto"`` against the exact paths.

Every case is a plain ``loss_fn(params, example)`` whose parameters enter through
one of the layers the jaxpr rules know (dense, convolution, embedding lookup,
normalisation, elementwise affine, weights shared across time steps, masked
examples, Flax linen and nnx models). Each is checked

* in float64 against ``method="vmap"`` (``jax.vmap(jax.grad(loss_fn))``, exact) to
  ``rtol=1e-10``, and, where the per-example gradients have a cheap closed form,
  against a float64 numpy oracle of them;
* in float32 against the float64 result on the same (float32-representable)
  inputs, with a tolerance about ten times the deviation measured for each case.

The data are drawn in float64 and rounded to float32 once, so the float32 and
the float64 runs see identical inputs and the float64 result is the float32
run's truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from optax_signvar import minibatch

B = 8  # batch size of every case (16 for the chunked test)


# ----------------------------------------------------------------------------
# helpers


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    """float64 normals that float32 holds exactly."""
    return (scale * rng.normal(size=shape)).astype(np.float32).astype(np.float64)


def cast(tree: Any, dtype: Any) -> Any:
    """Floating leaves to ``dtype`` (jax arrays), integer leaves kept."""

    def leaf(a):
        a = np.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.floating):  # bfloat16 too
            return jnp.asarray(a, dtype)
        return jnp.asarray(a)

    return jax.tree.map(leaf, tree)


def to64(tree: Any) -> Any:
    """Floating leaves to float64 numpy arrays, integer leaves kept."""

    def leaf(a):
        a = np.asarray(a)
        return a.astype(np.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree.map(leaf, tree)


def moments_of(per_example: Any) -> tuple[Any, Any]:
    """Mean and variance of the mini-batch gradient from per-example gradients."""
    n = len(jax.tree.leaves(per_example)[0])
    mean = jax.tree.map(lambda g: g.mean(axis=0), per_example)
    var = jax.tree.map(lambda g: g.var(axis=0, ddof=1) / n, per_example)
    return mean, var


def leaf_paths(tree: Any) -> list[str]:
    return [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(tree)]


def assert_close64(actual: Any, expected: Any, rtol: float = 1e-10, what: str = "") -> None:
    """Elementwise ``rtol`` with an absolute floor of ``1e-12`` of the leaf's scale.

    The floor of a variance leaf is taken from the squared mean too, so that a
    variance that is zero in one and ``1e-40`` in the other (identical per-example
    gradients) is not an error.
    """
    (a_mean, a_var), (e_mean, e_var) = to64(actual), to64(expected)
    assert jax.tree.structure(a_mean) == jax.tree.structure(e_mean)
    for path, a, e, m in zip(
        leaf_paths(e_mean) + leaf_paths(e_var),
        jax.tree.leaves(a_mean) + jax.tree.leaves(a_var),
        jax.tree.leaves(e_mean) + jax.tree.leaves(e_var),
        jax.tree.leaves(e_mean) * 2,
        strict=True,
    ):
        scale = max(np.max(np.abs(e), initial=0.0), np.max(np.abs(m), initial=0.0) ** 2 * 1e-6)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-12 * scale, err_msg=f"{what}{path}")


def deviation(actual: Any, expected: Any) -> dict[str, float]:
    """Largest absolute error of each leaf over the largest magnitude of the expected leaf.

    Mean leaves are keyed ``mean<path>``, variance leaves ``var<path>``; a
    variance leaf that is (nearly) zero is measured against ``1e-6`` of its
    squared mean, and a leaf that is zero in both is a deviation of 0.
    """
    (a_mean, a_var), (e_mean, e_var) = to64(actual), to64(expected)
    out = {}
    for path, am, av, em, ev in zip(
        leaf_paths(e_mean),
        jax.tree.leaves(a_mean),
        jax.tree.leaves(a_var),
        jax.tree.leaves(e_mean),
        jax.tree.leaves(e_var),
        strict=True,
    ):
        m_scale = np.max(np.abs(em), initial=0.0)
        v_scale = max(np.max(np.abs(ev), initial=0.0), 1e-6 * m_scale**2)
        for key, a, e, scale in (("mean", am, em, m_scale), ("var", av, ev, v_scale)):
            err = np.max(np.abs(a - e), initial=0.0)
            out[key + path] = 0.0 if err == 0 else (err / scale if scale > 0 else np.inf)
    return out


def x64(dtype: Any):
    return jax.enable_x64(True) if jnp.dtype(dtype) == jnp.float64 else contextlib.nullcontext()


# ----------------------------------------------------------------------------
# the cases: a loss, float64 numpy inputs and (optionally) a numpy oracle of the
# per-example gradients


@dataclasses.dataclass(frozen=True)
class Case:
    loss: Callable[[Any, Any], jax.Array]
    make: Callable[[np.random.Generator, int], tuple[Any, Any]]
    oracle: Callable[[Any, Any], Any] | None = None


CASES: dict[str, Case] = {}


def register(name: str, loss, make, oracle=None) -> None:
    assert name not in CASES
    CASES[name] = Case(loss, make, oracle)


# -- dense -------------------------------------------------------------------


def dense_bias_loss(p, ex):
    return 0.5 * jnp.sum((ex["x"] @ p["W"] + p["b"] - ex["y"]) ** 2)


def dense_bias_make(rng, n):
    params = {"W": normal(rng, 5, 3), "b": normal(rng, 3)}
    return params, {"x": normal(rng, n, 5), "y": normal(rng, n, 3)}


def dense_bias_oracle(p, b):
    r = b["x"] @ p["W"] + p["b"] - b["y"]
    return {"W": b["x"][:, :, None] * r[:, None, :], "b": r}


register("dense_bias", dense_bias_loss, dense_bias_make, dense_bias_oracle)


def dense_nobias_loss(p, ex):
    return jnp.sum(jnp.tanh(ex["x"] @ p["W"]) * ex["y"])


def dense_nobias_make(rng, n):
    return {"W": normal(rng, 5, 3, scale=0.5)}, {"x": normal(rng, n, 5), "y": normal(rng, n, 3)}


def dense_nobias_oracle(p, b):
    t = np.tanh(b["x"] @ p["W"])
    r = (1 - t**2) * b["y"]
    return {"W": b["x"][:, :, None] * r[:, None, :]}


register("dense_nobias", dense_nobias_loss, dense_nobias_make, dense_nobias_oracle)


def mlp_loss(p, ex):
    h = jax.nn.relu(ex["x"] @ p["W1"] + p["b1"])
    logits = h @ p["W2"] + p["b2"]
    return -jax.nn.log_softmax(logits)[ex["label"]]


def mlp_make(rng, n):
    params = {
        "W1": normal(rng, 6, 8, scale=0.5),
        "b1": normal(rng, 8, scale=0.1),
        "W2": normal(rng, 8, 4, scale=0.5),
        "b2": normal(rng, 4, scale=0.1),
    }
    batch = {"x": normal(rng, n, 6), "label": rng.integers(0, 4, n).astype(np.int32)}
    return params, batch


def softmax_np(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def mlp_oracle(p, b):
    z1 = b["x"] @ p["W1"] + p["b1"]
    h = np.maximum(z1, 0)
    dlogits = softmax_np(h @ p["W2"] + p["b2"])
    dlogits[np.arange(len(z1)), b["label"]] -= 1
    dz1 = (dlogits @ p["W2"].T) * (z1 > 0)
    return {
        "W1": b["x"][:, :, None] * dz1[:, None, :],
        "b1": dz1,
        "W2": h[:, :, None] * dlogits[:, None, :],
        "b2": dlogits,
    }


register("mlp_relu_xent", mlp_loss, mlp_make, mlp_oracle)


def example_weight_loss(p, ex):
    # an example whose weight is 0 has loss exactly 0 and a zero gradient
    return ex["w"] * mlp_loss(p, ex)


def example_weight_make(rng, n):
    params, batch = mlp_make(rng, n)
    w = normal(rng, n) ** 2
    w[1] = 0.0
    return params, {**batch, "w": w}


def example_weight_oracle(p, b):
    return jax.tree.map(lambda g: g * b["w"].reshape((-1,) + (1,) * (g.ndim - 1)), mlp_oracle(p, b))


register("zero_loss_example", example_weight_loss, example_weight_make, example_weight_oracle)


def dense_seq_loss(p, ex):  # x: (T, d), the weight shared across T
    return 0.5 * jnp.sum((ex["x"] @ p["W"] + p["b"] - ex["y"]) ** 2)


def dense_seq_make(rng, n):
    params = {"W": normal(rng, 5, 4), "b": normal(rng, 4)}
    return params, {"x": normal(rng, n, 6, 5), "y": normal(rng, n, 6, 4)}


def dense_seq_oracle(p, b):
    r = b["x"] @ p["W"] + p["b"] - b["y"]
    return {"W": np.einsum("btd,btk->bdk", b["x"], r), "b": r.sum(axis=1)}


register("dense_sequence", dense_seq_loss, dense_seq_make, dense_seq_oracle)


def heads_loss(p, ex):  # multi-head projections, as in attention
    a = jnp.tanh(jnp.einsum("td,dhk->thk", ex["x"], p["Wq"]))
    out = jnp.einsum("thk,hkd->td", a, p["Wo"])
    return 0.5 * jnp.sum((out - ex["y"]) ** 2)


def heads_make(rng, n):
    params = {"Wq": normal(rng, 5, 2, 3, scale=0.5), "Wo": normal(rng, 2, 3, 5, scale=0.5)}
    return params, {"x": normal(rng, n, 4, 5), "y": normal(rng, n, 4, 5)}


def heads_oracle(p, b):
    a = np.tanh(np.einsum("btd,dhk->bthk", b["x"], p["Wq"]))
    r = np.einsum("bthk,hkd->btd", a, p["Wo"]) - b["y"]
    dz = np.einsum("btd,hkd->bthk", r, p["Wo"]) * (1 - a**2)
    return {
        "Wq": np.einsum("btd,bthk->bdhk", b["x"], dz),
        "Wo": np.einsum("bthk,btd->bhkd", a, r),
    }


register("einsum_heads", heads_loss, heads_make, heads_oracle)


def weight_norm_loss(p, ex):
    # the weight reaches the data through a params-only computation first
    w = p["g"] * p["V"] / jnp.sqrt(jnp.sum(p["V"] ** 2, axis=0))
    return 0.5 * jnp.sum((ex["x"] @ w - ex["y"]) ** 2)


def weight_norm_make(rng, n):
    params = {"V": normal(rng, 5, 3), "g": normal(rng, 3)}
    return params, {"x": normal(rng, n, 5), "y": normal(rng, n, 3)}


def weight_norm_oracle(p, b):
    norm = np.sqrt(np.sum(p["V"] ** 2, axis=0))
    u = p["V"] / norm
    r = b["x"] @ (p["g"] * u) - b["y"]
    gw = b["x"][:, :, None] * r[:, None, :]  # d loss / d w
    gg = np.sum(gw * u, axis=1)
    gv = p["g"] / norm * (gw - u * np.sum(gw * u, axis=1, keepdims=True))
    return {"V": gv, "g": gg}


register("weight_norm", weight_norm_loss, weight_norm_make, weight_norm_oracle)


# -- convolution ---------------------------------------------------------------

CONV_CONFIGS = {
    "conv_nhwc_same": dict(layout="NHWC", padding="SAME"),
    "conv_nhwc_valid_stride2": dict(layout="NHWC", padding="VALID", strides=(2, 2)),
    "conv_nchw_explicit_stride2": dict(layout="NCHW", padding=((1, 2), (0, 1)), strides=(2, 1)),
    "conv_nhwc_rhs_dilation": dict(layout="NHWC", padding="SAME", dilation=(2, 2)),
    "conv_nchw_valid_dilation": dict(layout="NCHW", padding="VALID", dilation=(2, 1)),
    "conv_groups2": dict(layout="NHWC", padding="SAME", groups=2, cin=4, cout=6),
    "conv_depthwise": dict(layout="NHWC", padding="SAME", groups=4, cin=4, cout=8),
    "conv_nchw_depthwise_stride2": dict(
        layout="NCHW", padding=((1, 1), (1, 1)), strides=(2, 2), groups=4, cin=4, cout=4
    ),
}
CONV_DEFAULTS = dict(strides=(1, 1), dilation=(1, 1), groups=1, cin=3, cout=4, kernel=(3, 2))
IMAGE = (7, 6)  # not square, and a kernel that is not square: axes cannot swap unnoticed


def conv_cfg(name):
    return {**CONV_DEFAULTS, **CONV_CONFIGS[name]}


def conv_apply(cfg, x, w, b):
    """One example: x (H, W, C) or (C, H, W) by layout."""
    nchw = cfg["layout"] == "NCHW"
    dn = ("NCHW", "OIHW", "NCHW") if nchw else ("NHWC", "HWIO", "NHWC")
    out = jax.lax.conv_general_dilated(
        x[None],
        w,
        window_strides=cfg["strides"],
        padding=cfg["padding"],
        rhs_dilation=cfg["dilation"],
        dimension_numbers=dn,
        feature_group_count=cfg["groups"],
    )[0]
    return out + (b[:, None, None] if nchw else b)


def conv_loss_for(name):
    cfg = conv_cfg(name)

    def loss(p, ex):
        return jnp.sum(jnp.tanh(conv_apply(cfg, ex["x"], p["w"], p["b"])) * ex["y"])

    return loss


def conv_make_for(name):
    cfg = conv_cfg(name)

    def make(rng, n):
        kh, kw = cfg["kernel"]
        cg, o = cfg["cin"] // cfg["groups"], cfg["cout"]
        nchw = cfg["layout"] == "NCHW"
        w = normal(rng, o, cg, kh, kw, scale=0.3) if nchw else normal(rng, kh, kw, cg, o, scale=0.3)
        x_shape = (cfg["cin"], *IMAGE) if nchw else (*IMAGE, cfg["cin"])
        params = {"w": w, "b": normal(rng, o, scale=0.1)}
        out = jax.eval_shape(
            lambda: conv_apply(cfg, jnp.zeros(x_shape), jnp.zeros(w.shape), jnp.zeros(o))
        )
        return params, {"x": normal(rng, n, *x_shape), "y": normal(rng, n, *out.shape)}

    return make


def np_conv_patches(x, cfg):
    """(kh, kw, patch) with patch (B, OH, OW, C): the input pixels that kernel tap meets."""
    kh_size, kw_size = cfg["kernel"]
    (sh, sw), (dh, dw) = cfg["strides"], cfg["dilation"]
    pads = cfg["padding"]
    if isinstance(pads, str):
        window = ((kh_size - 1) * dh + 1, (kw_size - 1) * dw + 1)
        pads = jax.lax.padtype_to_pads(x.shape[1:3], window, (sh, sw), pads)
    xp = np.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    oh = (xp.shape[1] - (kh_size - 1) * dh - 1) // sh + 1
    ow = (xp.shape[2] - (kw_size - 1) * dw - 1) // sw + 1
    for i in range(kh_size):
        for j in range(kw_size):
            rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
            yield i, j, xp[:, rows, cols, :]


def conv_oracle_for(name):
    """Per-example gradients of conv_loss_for(name), by unfolding the input in numpy."""
    cfg = conv_cfg(name)

    def oracle(p, b):
        nchw = cfg["layout"] == "NCHW"
        x = b["x"].transpose(0, 2, 3, 1) if nchw else b["x"]  # (B, H, W, C)
        w = p["w"].transpose(2, 3, 1, 0) if nchw else p["w"]  # (KH, KW, Cg, O)
        y = b["y"].transpose(0, 2, 3, 1) if nchw else b["y"]
        n, g = len(x), cfg["groups"]
        cg, o = w.shape[2], w.shape[3]
        og = o // g
        patches = list(np_conv_patches(x, cfg))
        oh, ow = patches[0][2].shape[1:3]
        out = np.zeros((n, oh, ow, g, og))
        for i, j, patch in patches:
            out += np.einsum(
                "bxygc,cgo->bxygo", patch.reshape(n, oh, ow, g, cg), w[i, j].reshape(cg, g, og)
            )
        t = np.tanh(out.reshape(n, oh, ow, o) + p["b"])
        r = (1 - t**2) * y  # d loss / d conv output
        gw = np.zeros((n, *w.shape))
        for i, j, patch in patches:
            gw[:, i, j] = np.einsum(
                "bxygc,bxygo->bcgo", patch.reshape(n, oh, ow, g, cg), r.reshape(n, oh, ow, g, og)
            ).reshape(n, cg, o)
        if nchw:
            gw = gw.transpose(0, 4, 3, 1, 2)
        return {"w": gw, "b": r.sum(axis=(1, 2))}

    return oracle


for _name in CONV_CONFIGS:
    register(_name, conv_loss_for(_name), conv_make_for(_name), conv_oracle_for(_name))


# -- embedding -----------------------------------------------------------------

VOCAB = 5


def embed_make(rng, n):
    params = {"table": normal(rng, VOCAB, 4), "W": normal(rng, 4, 3, scale=0.5)}
    ids = rng.integers(0, VOCAB, (n, 6)).astype(np.int32)
    ids[:, 1] = ids[:, 0]  # repeated within an example
    ids[:, 2] = 3  # and across examples
    ids[:, 3] = 3
    return params, {"ids": ids, "y": normal(rng, n, 6, 3)}


def embed_loss_with(lookup):
    def loss(p, ex):
        a = jnp.tanh(lookup(p["table"], ex["ids"]))
        return 0.5 * jnp.sum((a @ p["W"] - ex["y"]) ** 2)

    return loss


def embed_oracle(p, b):
    n = len(b["ids"])
    a = np.tanh(p["table"][b["ids"]])  # (B, L, D)
    r = a @ p["W"] - b["y"]
    de = (r @ p["W"].T) * (1 - a**2)
    gtable = np.zeros((n, *p["table"].shape))
    np.add.at(gtable, (np.arange(n)[:, None], b["ids"]), de)
    return {"table": gtable, "W": np.einsum("bld,blk->bdk", a, r)}


register("embed_index", embed_loss_with(lambda t, i: t[i]), embed_make, embed_oracle)
register(
    "embed_take", embed_loss_with(lambda t, i: jnp.take(t, i, axis=0)), embed_make, embed_oracle
)


def tied_loss(p, ex):
    # the same leaf looked up and used as the output projection
    h = jnp.tanh(p["table"][ex["ids"]] @ p["W"])
    logp = jax.nn.log_softmax(h @ p["table"].T)
    return -jnp.sum(jnp.take_along_axis(logp, ex["targets"][:, None], axis=-1))


def tied_make(rng, n):
    params = {"table": normal(rng, 7, 4), "W": normal(rng, 4, 4, scale=0.5)}
    ids = rng.integers(0, 7, (n, 5)).astype(np.int32)
    ids[:, 1] = ids[:, 0]
    ids[:, 4] = 2
    return params, {"ids": ids, "targets": rng.integers(0, 7, (n, 5)).astype(np.int32)}


def tied_oracle(p, b):
    n, length = b["ids"].shape
    e = p["table"][b["ids"]]
    h = np.tanh(e @ p["W"])
    dlogits = softmax_np(h @ p["table"].T)
    dlogits[np.arange(n)[:, None], np.arange(length)[None, :], b["targets"]] -= 1
    dz = (dlogits @ p["table"]) * (1 - h**2)
    gtable = np.einsum("blv,bld->bvd", dlogits, h)
    np.add.at(gtable, (np.arange(n)[:, None], b["ids"]), dz @ p["W"].T)
    return {"table": gtable, "W": np.einsum("bld,ble->bde", e, dz)}


register("embed_tied_projection", tied_loss, tied_make, tied_oracle)


# -- normalisation and elementwise parameters -----------------------------------


def layer_norm_np(x, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)


def layer_norm_loss(p, ex):
    x = ex["x"]
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    z = (x - mu) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]
    return 0.5 * jnp.sum((z @ p["W"] - ex["y"]) ** 2)


def layer_norm_make(rng, n):
    params = {"scale": 1 + normal(rng, 5, scale=0.2), "bias": normal(rng, 5, scale=0.2)}
    params["W"] = normal(rng, 5, 3, scale=0.5)
    return params, {"x": normal(rng, n, 3, 5), "y": normal(rng, n, 3, 3)}


def layer_norm_oracle(p, b):
    xhat = layer_norm_np(b["x"])
    z = xhat * p["scale"] + p["bias"]
    r = z @ p["W"] - b["y"]
    dz = r @ p["W"].T
    return {
        "scale": np.sum(dz * xhat, axis=1),
        "bias": dz.sum(axis=1),
        "W": np.einsum("btd,btk->bdk", z, r),
    }


register("layer_norm_hand", layer_norm_loss, layer_norm_make, layer_norm_oracle)


def affine_loss(p, ex):
    return 0.5 * jnp.sum((ex["x"] * p["s"] + p["c"] - ex["y"]) ** 2)


def affine_make_with(s_shape):
    def make(rng, n):
        params = {"s": 1 + normal(rng, *s_shape, scale=0.3), "c": normal(rng, 4)}
        return params, {"x": normal(rng, n, 3, 4), "y": normal(rng, n, 3, 4)}

    return make


def affine_oracle(p, b):
    r = b["x"] * p["s"] + p["c"] - b["y"]
    gs = np.sum(b["x"] * r, axis=(1, 2)) if np.ndim(p["s"]) == 0 else np.sum(b["x"] * r, axis=1)
    return {"s": gs, "c": r.sum(axis=1)}


register("elementwise_scalar", affine_loss, affine_make_with(()), affine_oracle)
register("elementwise_per_feature", affine_loss, affine_make_with((4,)), affine_oracle)


# -- weights shared across time steps: an LSTM ------------------------------------

HIDDEN = 4


def lstm_cell(p, h, c, x_t):
    z = x_t @ p["W_ih"] + h @ p["W_hh"] + p["b"]
    i, f, g, o = jnp.split(z, 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def lstm_loop_loss(p, ex):
    h = c = jnp.zeros(HIDDEN, ex["x"].dtype)
    for t in range(ex["x"].shape[0]):
        h, c = lstm_cell(p, h, c, ex["x"][t])
    return 0.5 * jnp.sum((h @ p["W_out"] - ex["y"]) ** 2)


def lstm_scan_loss(p, ex):
    def step(carry, x_t):
        return lstm_cell(p, *carry, x_t), None

    zeros = jnp.zeros(HIDDEN, ex["x"].dtype)
    (h, _), _ = jax.lax.scan(step, (zeros, zeros), ex["x"])
    return 0.5 * jnp.sum((h @ p["W_out"] - ex["y"]) ** 2)


def lstm_make(rng, n):
    params = {
        "W_ih": normal(rng, 3, 4 * HIDDEN, scale=0.5),
        "W_hh": normal(rng, HIDDEN, 4 * HIDDEN, scale=0.5),
        "b": normal(rng, 4 * HIDDEN, scale=0.1),
        "W_out": normal(rng, HIDDEN, 2),
    }
    return params, {"x": normal(rng, n, 5, 3), "y": normal(rng, n, 2)}


register("lstm_python_loop", lstm_loop_loss, lstm_make)
register("lstm_scan", lstm_scan_loss, lstm_make)


def scan_loss(p, ex):
    # a small recurrence in a scan next to a dense layer outside it
    def step(h, x_t):
        return jnp.tanh(h * p["w"] + x_t), None

    h, _ = jax.lax.scan(step, jnp.zeros(4, ex["x"].dtype), ex["x"])
    return 0.5 * jnp.sum((h @ p["W_out"] - ex["y"]) ** 2)


def scan_make(rng, n):
    params = {"w": normal(rng, 4, scale=0.5), "W_out": normal(rng, 4, 2)}
    return params, {"x": normal(rng, n, 5, 4), "y": normal(rng, n, 2)}


register("scan_elementwise", scan_loss, scan_make)


def remat_cond_loss(p, ex):
    # a checkpointed layer, and the parameters inside both branches of a data-dependent cond
    h = jax.checkpoint(lambda w, x: jnp.tanh(x @ w))(p["W"], ex["x"])
    return jax.lax.cond(
        ex["x"][0] > 0,
        lambda: jnp.sum((h @ p["V"] - ex["y"]) ** 2),
        lambda: jnp.sum(jnp.sin(h @ p["V"]) * ex["y"]),
    )


def remat_cond_make(rng, n):
    params = {"W": normal(rng, 5, 4, scale=0.5), "V": normal(rng, 4, 3, scale=0.5)}
    return params, {"x": normal(rng, n, 5), "y": normal(rng, n, 3)}


register("remat_and_cond", remat_cond_loss, remat_cond_make)


def dropout_mask(key, shape):
    # from the raw bits: bernoulli draws a uniform of the default float dtype,
    # so its mask would differ between the float32 and the float64 runs
    return jax.random.bits(key, shape, jnp.uint32) < np.uint32(2**31)


def dropout_loss(p, ex):
    # per-example randomness: a (raw uint32) key per example in the batch
    h = ex["x"] @ p["W"] + p["b"]
    keep = dropout_mask(ex["key"], h.shape)
    return 0.5 * jnp.sum((jnp.where(keep, 2 * h, 0.0) - ex["y"]) ** 2)


def dropout_make(rng, n):
    params = {"W": normal(rng, 5, 3), "b": normal(rng, 3)}
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(7), n))
    return params, {"x": normal(rng, n, 5), "y": normal(rng, n, 3), "key": keys}


def dropout_oracle(p, b):
    keep = np.stack([np.asarray(dropout_mask(jnp.asarray(k), (3,))) for k in b["key"]])
    r = 2 * keep * (2 * keep * (b["x"] @ p["W"] + p["b"]) - b["y"])
    return {"W": b["x"][:, :, None] * r[:, None, :], "b": r}


register("dropout_keys", dropout_loss, dropout_make, dropout_oracle)


# -- masked / padded examples ------------------------------------------------------


def masked_make(rng, n):
    params = {"W": normal(rng, 5, 3), "b": normal(rng, 3)}
    lengths = rng.integers(1, 7, n)
    lengths[min(2, n - 1)] = 0  # an example that is all padding: loss exactly 0
    mask = (np.arange(6)[None, :] < lengths[:, None]).astype(np.float64)
    x, y = normal(rng, n, 6, 5), normal(rng, n, 6, 3)
    x[mask == 0], y[mask == 0] = 50.0, -50.0  # padding that would dominate if it leaked
    return params, {"x": x, "y": y, "mask": mask}


def masked_mul_loss(p, ex):
    sq = jnp.sum((ex["x"] @ p["W"] + p["b"] - ex["y"]) ** 2, axis=-1)
    return 0.5 * jnp.sum(ex["mask"] * sq) / jnp.maximum(jnp.sum(ex["mask"]), 1.0)


def masked_where_loss(p, ex):
    sq = jnp.sum((ex["x"] @ p["W"] + p["b"] - ex["y"]) ** 2, axis=-1)
    return 0.5 * jnp.sum(jnp.where(ex["mask"] > 0, sq, 0.0)) / jnp.maximum(jnp.sum(ex["mask"]), 1.0)


def masked_oracle(p, b):
    m = b["mask"]
    r = (b["x"] @ p["W"] + p["b"] - b["y"]) * (m / np.maximum(m.sum(axis=1), 1)[:, None])[..., None]
    return {"W": np.einsum("btd,btk->bdk", b["x"], r), "b": r.sum(axis=1)}


register("masked_mul", masked_mul_loss, masked_make, masked_oracle)
register("masked_where", masked_where_loss, masked_make, masked_oracle)


# -- parameters with no data, and unused ones ----------------------------------------


def l2_loss(p, ex):
    data = 0.5 * jnp.sum((ex["x"] @ p["W"] - ex["y"]) ** 2)
    return data + 1e-3 * (jnp.sum(p["W"] ** 2) + jnp.sum(p["V"] ** 2))


def l2_make(rng, n):
    params = {"W": normal(rng, 5, 3), "V": normal(rng, 4), "unused": normal(rng, 3), "none": None}
    return params, {"x": normal(rng, n, 5), "y": normal(rng, n, 3)}


def l2_oracle(p, b):
    n = len(b["x"])
    r = b["x"] @ p["W"] - b["y"]
    return {
        "W": b["x"][:, :, None] * r[:, None, :] + 2e-3 * p["W"],
        "V": np.broadcast_to(2e-3 * p["V"], (n, 4)),
        "unused": np.zeros((n, 3)),
        "none": None,
    }


register("l2_and_unused", l2_loss, l2_make, l2_oracle)


# -- Flax linen ---------------------------------------------------------------------


def standard_promotion(loss):
    """Flax mixes dtypes (pooling divides by an int64 count): its losses are traced
    under jax's standard promotion, the package's own code stays under strict."""

    @functools.wraps(loss)
    def wrapped(*args):
        with jax.numpy_dtype_promotion("standard"):
            return loss(*args)

    return wrapped


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(8)(x)))


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):  # (N, 8, 8, 2)
        x = nn.relu(nn.GroupNorm(num_groups=2)(nn.Conv(4, (3, 3))(x)))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2), padding="VALID")(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class LinenEmbed(nn.Module):
    @nn.compact
    def __call__(self, ids):
        return nn.Dense(7)(nn.LayerNorm()(nn.Dense(5)(nn.Embed(7, 4)(ids))))


def fill(rng: np.random.Generator, shapes: Any) -> Any:
    """Parameters for a tree of shapes, by name: flax's initialisers run op by op
    and compile each op, which took longer than the tests of the model."""

    def leaf(path, a):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return 1 + normal(rng, *a.shape, scale=0.2)
        if "bias" in name:
            return normal(rng, *a.shape, scale=0.1)
        return normal(rng, *a.shape, scale=1 / np.sqrt(np.prod(a.shape[:-1])))

    return jax.tree_util.tree_map_with_path(leaf, shapes)


@functools.cache
def linen_params(model_name: str):
    model, example = LINEN[model_name]
    with jax.numpy_dtype_promotion("standard"):
        shapes = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
    return fill(np.random.default_rng(1), shapes)


LINEN = {
    "linen_mlp": (LinenMLP(), jnp.zeros((1, 6))),
    "linen_cnn": (LinenCNN(), jnp.zeros((1, 8, 8, 2))),
    "linen_embed_layernorm": (LinenEmbed(), jnp.zeros((5,), jnp.int32)),
}


def linen_classifier(name):
    model = LINEN[name][0]

    @standard_promotion
    def loss(p, ex):
        logits = model.apply({"params": p}, ex["x"][None])[0]
        return -jax.nn.log_softmax(logits)[ex["label"]]

    def make(rng, n):
        shape = LINEN[name][1].shape[1:]
        return linen_params(name), {
            "x": normal(rng, n, *shape),
            "label": rng.integers(0, 3, n).astype(np.int32),
        }

    return loss, make


for _name in ("linen_mlp", "linen_cnn"):
    register(_name, *linen_classifier(_name))


@standard_promotion
def linen_embed_loss(p, ex):
    logp = jax.nn.log_softmax(LINEN["linen_embed_layernorm"][0].apply({"params": p}, ex["ids"]))
    return -jnp.sum(jnp.take_along_axis(logp, ex["targets"][:, None], axis=-1))


def linen_embed_make(rng, n):
    ids = rng.integers(0, 7, (n, 5)).astype(np.int32)
    ids[:, 1] = ids[:, 0]
    batch = {"ids": ids, "targets": rng.integers(0, 7, (n, 5)).astype(np.int32)}
    return linen_params("linen_embed_layernorm"), batch


register("linen_embed_layernorm", linen_embed_loss, linen_embed_make)


# -- Flax nnx -------------------------------------------------------------------------


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(6, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.relu(self.l1(x)))


class NnxCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.norm = nnx.LayerNorm(4, rngs=rngs)
        self.out = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x):  # (N, 8, 8, 2)
        x = nnx.relu(self.norm(self.conv(x)))
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
        return self.out(x.reshape(x.shape[0], -1))


NNX = {"nnx_mlp": (NnxMLP, (6,)), "nnx_cnn": (NnxCNN, (8, 8, 2))}


@functools.cache
def nnx_split(name: str):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: NNX[name][0](nnx.Rngs(0))))
    return graphdef, fill(np.random.default_rng(2), state)


def nnx_classifier(name):
    @standard_promotion
    def loss(state, ex):
        model = nnx.merge(nnx_split(name)[0], state)
        return -jax.nn.log_softmax(model(ex["x"][None])[0])[ex["label"]]

    def make(rng, n):
        batch = {
            "x": normal(rng, n, *NNX[name][1]),
            "label": rng.integers(0, 3, n).astype(np.int32),
        }
        return nnx_split(name)[1], batch

    return loss, make


for _name in NNX:
    register(_name, *nnx_classifier(_name))


# ----------------------------------------------------------------------------
# running the cases (results are cached: the float64 vmap run is also the
# float32 runs' truth)


@functools.cache
def inputs(name: str, n: int = B) -> tuple[Any, Any]:
    return CASES[name].make(np.random.default_rng(sum(map(ord, name))), n)


# (method, chunk_size) pairs computed together, in one jitted function: one
# compilation per case and dtype instead of one per method
BOTH = (("auto", None), ("vmap", None))
CHUNKS = (("auto", None), ("auto", 4))


# Compiling, not running, is what these tiny kernels cost: without LLVM's
# optimisations and XLA's fusion emitters the file takes half the time
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def moments_function(loss, variants: tuple[tuple[str, int | None], ...]):
    """``(params, batch) -> [(mean, var) per (method, chunk_size)]``, jitted."""

    def moments(params, batch):
        return [
            minibatch.per_example_grad_moments(loss, params, batch, method=m, chunk_size=c)
            for m, c in variants
        ]

    return jax.jit(moments, compiler_options=FAST_COMPILE)


@functools.cache
def jitted(name: str, variants: tuple[tuple[str, int | None], ...]):
    return moments_function(CASES[name].loss, variants)


@functools.cache
def run_all(name: str, dtype: str, variants=BOTH, n: int = B) -> dict:
    """{(method, chunk_size): (mean, var)} as numpy arrays of the dtype they came back in."""
    with x64(dtype):
        params, batch = cast(inputs(name, n), dtype)
        results = jitted(name, variants)(params, batch)
        return dict(zip(variants, jax.tree.map(np.asarray, results), strict=True))


def run(name: str, dtype: str, method: str) -> tuple[Any, Any]:
    return run_all(name, dtype)[method, None]


def dtypes_of(tree: Any) -> set[Any]:
    return {a.dtype for a in jax.tree.leaves(tree)}


NAMES = sorted(CASES)
ORACLE_NAMES = sorted(n for n, c in CASES.items() if c.oracle is not None)


# float32: the largest deviation (``deviation``: max |error| of a leaf over the
# largest magnitude of the float64 leaf, mean and variance alike) allowed, about
# ten times the one measured (jax 0.10.2, CPU, FAST_COMPILE) for method="auto" and for
# method="vmap" against the float64 result on the same inputs, as noted.
TOL32 = {
    "conv_depthwise": 2e-6,  # auto 1.9e-07, vmap 1.9e-07
    "conv_groups2": 3e-6,  # auto 2.6e-07, vmap 2.6e-07
    "conv_nchw_depthwise_stride2": 3e-6,  # auto 2.2e-07, vmap 2.2e-07
    "conv_nchw_explicit_stride2": 2e-6,  # auto 2.0e-07, vmap 2.0e-07
    "conv_nchw_valid_dilation": 3e-6,  # auto 2.7e-07, vmap 2.7e-07
    "conv_nhwc_rhs_dilation": 9e-6,  # auto 8.2e-07, vmap 8.2e-07
    "conv_nhwc_same": 3e-6,  # auto 3.0e-07, vmap 3.0e-07
    "conv_nhwc_valid_stride2": 3e-6,  # auto 2.4e-07, vmap 2.4e-07
    "dense_bias": 2e-6,  # auto 1.8e-07, vmap 1.8e-07
    "dense_nobias": 3e-6,  # auto 2.1e-07, vmap 2.1e-07
    "dense_sequence": 1e-6,  # auto 9.4e-08, vmap 9.4e-08
    "dropout_keys": 2e-6,  # auto 1.3e-07, vmap 1.3e-07
    "einsum_heads": 2e-6,  # auto 1.8e-07, vmap 1.8e-07
    "elementwise_per_feature": 3e-6,  # auto 2.4e-07, vmap 2.4e-07
    "elementwise_scalar": 1e-6,  # auto 9.9e-08, vmap 9.9e-08
    "embed_index": 2e-6,  # auto 1.9e-07, vmap 1.9e-07
    "embed_take": 6e-6,  # auto 4.7e-07, vmap 5.2e-07
    "embed_tied_projection": 3e-6,  # auto 2.8e-07, vmap 2.8e-07
    "l2_and_unused": 2e-6,  # auto 1.8e-07, vmap 1.8e-07
    "layer_norm_hand": 3e-6,  # auto 2.5e-07, vmap 2.5e-07
    "linen_cnn": 8e-6,  # auto 7.7e-07, vmap 7.7e-07
    "linen_embed_layernorm": 4e-6,  # auto 2.8e-07, vmap 3.9e-07
    "linen_mlp": 2e-6,  # auto 1.4e-07, vmap 1.4e-07
    "lstm_python_loop": 4e-6,  # auto 3.8e-07, vmap 3.8e-07
    "lstm_scan": 4e-6,  # auto 3.3e-07, vmap 3.3e-07
    "masked_mul": 2e-6,  # auto 1.1e-07, vmap 1.1e-07
    "masked_where": 1e-6,  # auto 9.9e-08, vmap 9.9e-08
    "mlp_relu_xent": 3e-6,  # auto 2.7e-07, vmap 2.5e-07
    "nnx_cnn": 3e-5,  # auto 2.4e-06, vmap 2.4e-06
    "nnx_mlp": 4e-6,  # auto 3.7e-07, vmap 3.7e-07
    "remat_and_cond": 8e-6,  # auto 8.0e-07, vmap 8.0e-07
    "scan_elementwise": 4e-6,  # auto 3.2e-07, vmap 3.2e-07
    "weight_norm": 6e-6,  # auto 5.4e-07, vmap 6.0e-07
    "zero_loss_example": 3e-6,  # auto 2.3e-07, vmap 2.3e-07
}


# ----------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("name", NAMES)
def test_float64_auto_equals_vmap(name):
    auto = run(name, "float64", "auto")
    vmap = run(name, "float64", "vmap")
    assert jax.tree.structure(auto) == jax.tree.structure(vmap)
    assert dtypes_of(auto) == {np.dtype(np.float64)}
    assert_close64(auto, vmap, rtol=1e-10)


@pytest.mark.parametrize("name", ORACLE_NAMES)
def test_float64_equals_numpy_oracle(name):
    params, batch = inputs(name)
    want = moments_of(CASES[name].oracle(params, batch))
    # the oracle itself against the exact per-example path, then the rules
    assert_close64(run(name, "float64", "vmap"), want, rtol=1e-10, what="vmap vs oracle ")
    assert_close64(run(name, "float64", "auto"), want, rtol=1e-10, what="auto vs oracle ")


@pytest.mark.parametrize("name", NAMES)
def test_float32_close_to_float64(name):
    truth = run(name, "float64", "vmap")
    auto = run(name, "float32", "auto")
    assert dtypes_of(auto) == {np.dtype(np.float32)}
    dev = deviation(auto, truth)
    worst = max(dev, key=dev.get)
    assert dev[worst] <= TOL32[name], f"{name}: {worst} deviates {dev[worst]:.2e}; {dev}"
    # and the rules are about as accurate as the per-example path in float32
    dev_vmap = deviation(run(name, "float32", "vmap"), truth)
    assert max(dev.values()) <= 10 * max(max(dev_vmap.values()), 1e-7), (dev, dev_vmap)


def test_zero_loss_example_has_zero_gradient():
    params, batch = inputs("zero_loss_example")
    assert batch["w"][1] == 0
    assert all(np.all(g[1] == 0) for g in jax.tree.leaves(example_weight_oracle(params, batch)))
    params, batch = inputs("masked_mul")
    empty = int(np.flatnonzero(batch["mask"].sum(axis=1) == 0)[0])
    assert all(np.all(g[empty] == 0) for g in jax.tree.leaves(masked_oracle(params, batch)))
    # the moments are those of the batch with the zero gradients in it: the mean
    # is divided by B, not by the number of non-zero examples
    for name in ("zero_loss_example", "masked_mul", "masked_where"):
        assert_close64(run(name, "float64", "auto"), moments_of(CASES[name].oracle(*inputs(name))))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_data_free_and_unused_parameters(dtype):
    mean, var = run("l2_and_unused", dtype, "auto")
    params = inputs("l2_and_unused")[0]
    assert mean["none"] is None and var["none"] is None
    # unused: exactly zero, not rounding noise
    assert np.all(mean["unused"] == 0) and np.all(var["unused"] == 0)
    # the L2 term alone: the same gradient for every example, so no variance
    rtol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(mean["V"], 2e-3 * params["V"], rtol=rtol)
    assert np.max(np.abs(var["V"])) <= (rtol * np.max(np.abs(mean["V"]))) ** 2


def test_loss_that_ignores_the_example():
    # every example has the same gradient: mean 2 W, variance exactly 0
    params = {"W": jnp.arange(6.0).reshape(2, 3)}
    batch = jnp.ones((B, 4))
    loss = lambda p, e: jnp.sum(p["W"] ** 2)  # noqa: E731
    got = minibatch.grad_moments_paths(loss, params, batch)
    assert PATH_RE.fullmatch(got["W"]) and not got["W"].startswith("factored"), got
    mean, var = jax.jit(lambda p, b: minibatch.per_example_grad_moments(loss, p, b))(params, batch)
    np.testing.assert_array_equal(mean["W"], 2 * params["W"])
    np.testing.assert_array_equal(var["W"], 0)


def mean_dominated(path: str, spread: float):
    """A leaf on a factored path whose per-example gradients are 1000 +- ``spread``.

    ``dot_general``: ``G_n = x_n 1ᵀ`` (a dense layer, output gradient 1);
    ``gather``: ``G_n[v]`` sums ``c_n`` where example ``n`` looked row ``v`` up.
    Returns the loss, params, batch and the per-example gradients in float64.
    """
    rng = np.random.default_rng(1)
    c = (1000.0 + spread * rng.normal(size=(B, 3, 2))).astype(np.float32)
    if path == "dot_general":
        x = c[:, 0, :]
        grads = np.broadcast_to(x.astype(np.float64)[:, :, None], (B, 2, 3))
        return lambda w, e: jnp.sum(e @ w), jnp.zeros((2, 3)), jnp.asarray(x), grads
    ids = np.tile(np.array([0, 1, 1], np.int32), (B, 1))  # row 1 twice, rows 2, 3 never
    grads = np.zeros((B, 4, 2))
    np.add.at(grads, (np.arange(B)[:, None], ids), c.astype(np.float64))
    batch = {"ids": jnp.asarray(ids), "c": jnp.asarray(c)}
    return lambda t, e: jnp.sum(t[e["ids"]] * e["c"]), jnp.zeros((4, 2)), batch, grads


@pytest.mark.parametrize(
    "path, chunk_size, spread, rtol",
    [
        # rtol: 10x the measured error of "auto" (that of "vmap" in brackets);
        # the float32 inputs 1000 + spread hold the spread 0.01 to ~0.6%
        ("dot_general", None, 0.01, 2e-4),  # 1.8e-5 (1.8e-5)
        ("dot_general", 4, 0.01, 2e-2),  # 1.5e-3 (1.5e-3)
        ("dot_general", 4, 10.0, 1e-4),  # 7.3e-6 (7.3e-6)
        ("gather", None, 0.01, 4e-2),  # 3.5e-3 (3.3e-3)
        ("gather", None, 10.0, 1e-4),  # 5.7e-6 (5.7e-6)
        ("gather", 4, 0.01, 0.1),  # 1.1e-2 (8.0e-3)
    ],
)
def test_factored_variance_where_the_mean_dominates(path, chunk_size, spread, rtol):
    # Factored leaves form no per-example gradient, but their variance still
    # comes from centred quantities (dense: centred inputs and output
    # gradients; lookup: per-(example, row) sums minus the mean), so it is as
    # accurate as the per-example path's where sum(G**2) - B mean**2 would
    # have no correct digit (spread 0.01: mean**2 / variance ~ 1e11).
    loss, params, batch, grads = mean_dominated(path, spread)
    assert minibatch.grad_moments_paths(loss, params, batch) == f"factored: {path}"
    _, want = moments_of(grads)
    looked_up = want > 0  # rows 2, 3 of the table: 0 either way
    variants = (("vmap", chunk_size), ("auto", chunk_size))
    (_, vmap), (_, auto) = moments_function(loss, variants)(params, batch)
    np.testing.assert_allclose(vmap[looked_up], want[looked_up], rtol=rtol)
    np.testing.assert_allclose(auto[looked_up], want[looked_up], rtol=rtol)
    assert np.all(auto[~looked_up] == 0)


# -- grad_moments_paths ---------------------------------------------------------------

PATH_RE = re.compile(r"(factored|per-example): [a-z_0-9]+(, [a-z_0-9]+)*|vmap: \S.*|unused: \S.*")


def paths(name: str) -> Any:
    params, batch = cast(inputs(name), jnp.float32)
    got = minibatch.grad_moments_paths(CASES[name].loss, params, batch)
    assert jax.tree.structure(got) == jax.tree.structure(params), (got, params)
    for path, s in zip(leaf_paths(got), jax.tree.leaves(got), strict=True):
        assert isinstance(s, str) and PATH_RE.fullmatch(s), f"{name}{path}: {s!r}"
    return got


@pytest.mark.parametrize("name", NAMES)
def test_paths_are_documented_strings(name):
    paths(name)


def test_paths_of_each_rule():
    got = paths("mlp_relu_xent")
    assert got["W1"] == got["W2"] == "factored: dot_general", got
    assert paths("dense_bias")["W"] == "factored: dot_general"
    assert paths("dense_nobias")["W"] == "factored: dot_general"
    for name in ("conv_nhwc_same", "conv_depthwise", "conv_nchw_explicit_stride2"):
        got = paths(name)
        assert got["w"].startswith("per-example: ") and "conv_general_dilated" in got["w"], got
        assert got["b"].startswith(("per-example: ", "factored: ")), got
    for name in ("embed_index", "embed_take"):
        got = paths(name)["table"]
        assert got.startswith(("per-example: ", "factored: ")) and "gather" in got, got
    # used twice: the two uses' gradients are summed per example before squaring
    got = paths("embed_tied_projection")["table"]
    assert got.startswith("per-example: ") and "gather" in got and "dot_general" in got, got
    for name in ("layer_norm_hand", "elementwise_scalar", "elementwise_per_feature"):
        got = paths(name)
        assert all(v.startswith("per-example: ") for v in jax.tree.leaves(got)), got
    for name, norm in (("linen_embed_layernorm", "LayerNorm_0"), ("linen_cnn", "GroupNorm_0")):
        got = paths(name)
        assert all(v.startswith("per-example: ") for v in got[norm].values()), got
    # a Python-unrolled LSTM is plain equations: no fallback
    got = paths("lstm_python_loop")
    assert not any(v.startswith("vmap: ") for v in jax.tree.leaves(got)), got
    # scan: either the rules see through it or the fallback says so
    paths("lstm_scan")
    # None leaves stay None
    got = paths("l2_and_unused")
    assert got["none"] is None


# -- chunk_size, jit, bfloat16 ----------------------------------------------------------

CHUNKED = [
    "mlp_relu_xent",
    "embed_tied_projection",
    "conv_groups2",
    "l2_and_unused",
    "scan_elementwise",
]


@pytest.mark.parametrize("name", CHUNKED)
def test_chunked_equals_unchunked(name):
    # 16 examples, 4 chunks of 4
    got = run_all(name, "float64", CHUNKS, n=16)
    assert_close64(got["auto", 4], got["auto", None], rtol=1e-10)
    if name in CHUNKED[:2]:  # float32 (a compilation each) for the first two only
        got = run_all(name, "float32", CHUNKS, n=16)
        dev = deviation(got["auto", 4], got["auto", None])
        assert max(dev.values()) <= TOL32[name], dev  # measured 1.2e-7 and 2.0e-7


def test_jit_of_the_whole_call_equals_eager():
    # every other test jits the call (with chunk_size too, in the chunked test);
    # this one also runs it eagerly, and jits it with the default compiler options
    params, batch = cast(inputs("dense_bias"), jnp.float32)
    loss = CASES["dense_bias"].loss
    eager = minibatch.per_example_grad_moments(loss, params, batch)
    jitted_call = jax.jit(lambda p, b: minibatch.per_example_grad_moments(loss, p, b))
    dev = deviation(jitted_call(params, batch), eager)
    assert max(dev.values()) <= 1e-6, dev  # measured 0 (bit for bit)


# measured deviations from float32 (bfloat16 rounds to 2**-8 = 3.9e-3): the loss
# itself is evaluated in bfloat16, the moments accumulated in float32
TOL_BF16 = {
    "dense_bias": 6e-2,  # measured 5.1e-3
    "conv_nhwc_same": 2e-1,  # measured 1.8e-2 (mean of the bias: 200 summed outputs)
    "embed_index": 7e-2,  # measured 6.8e-3
}


@pytest.mark.parametrize("name", sorted(TOL_BF16))
def test_bfloat16(name):
    params, batch = cast(inputs(name), jnp.bfloat16)
    (got,) = jitted(name, (("auto", None),))(params, batch)
    assert {a.dtype for a in jax.tree.leaves(got)} == {jnp.dtype(jnp.bfloat16)}
    # float32 on the same, bfloat16-rounded, inputs
    (want,) = jitted(name, (("auto", None),))(*cast(to64((params, batch)), jnp.float32))
    dev = deviation(got, want)
    assert max(dev.values()) <= TOL_BF16[name], dev
