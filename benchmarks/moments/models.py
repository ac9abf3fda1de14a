"""The models: parameters, a batch, the loss of ONE example, and each leaf's layer kind.

Plain JAX for the MLP, the CNN and two of the LSTMs (the shapes are the issue's); Flax linen
for the ResNet with GroupNorm, the ``nn.RNN`` LSTM and the transformer block, so that the
jaxpr rules see what a Flax model traces to. Every ``loss_fn(params, example)`` is the loss
of one example (Flax modules get it with a batch axis of 1, as they expect one).
``--quick`` builds the same architectures at tiny sizes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KINDS", "MODELS", "Model", "build", "leaf_kinds"]

BATCH = 128
QUICK_BATCH = 8


@dataclass
class Model:
    name: str
    title: str
    params: Any
    batch: Any
    loss_fn: Callable[[Any, Any], jax.Array]
    kinds: Any  # a pytree like params: each leaf's layer kind (KINDS)

    @property
    def n_params(self) -> int:
        return sum(int(np.size(x)) for x in jax.tree.leaves(self.params))

    @property
    def batch_size(self) -> int:
        return int(np.shape(jax.tree.leaves(self.batch)[0])[0])


def _xent(logits: jax.Array, label: jax.Array) -> jax.Array:
    return -jnp.take(jax.nn.log_softmax(logits), label, axis=-1)


def _dense(key: jax.Array, n_in: int, n_out: int) -> dict[str, jax.Array]:
    return {
        "w": jax.random.normal(key, (n_in, n_out), jnp.float32) / np.sqrt(n_in),
        "b": jnp.zeros((n_out,), jnp.float32),
    }


def _conv(key: jax.Array, k: int, c_in: int, c_out: int) -> dict[str, jax.Array]:
    return {
        "w": jax.random.normal(key, (k, k, c_in, c_out), jnp.float32) / np.sqrt(k * k * c_in),
        "b": jnp.zeros((c_out,), jnp.float32),
    }


def _labels(key: jax.Array, b: int, n: int) -> jax.Array:
    return jax.random.randint(key, (b,), 0, n)


# --------------------------------------------------------------------------- #
# Layer kinds: from a leaf's path.
# --------------------------------------------------------------------------- #

# (kind, pattern on the leaf's path), first match wins.
_KIND_RULES = (
    ("norm", r"norm|ln_"),
    ("positional", r"pos_"),
    ("embedding", r"embed"),
    ("recurrent", r"lstm|cell|rnn|/h[ifgo]/|/i[ifgo]/"),
    ("attention", r"attention|attn"),
    ("conv", r"conv"),
    ("dense", r"fc|dense|head|mlp"),
)
KINDS = tuple(k for k, _ in _KIND_RULES)


def leaf_kinds(params: Any) -> Any:
    """A pytree like ``params`` of each leaf's layer kind, from its path."""

    def kind(path: Any, _leaf: Any) -> str:
        name = jax.tree_util.keystr(path, simple=True, separator="/").lower()
        for k, pattern in _KIND_RULES:
            if re.search(pattern, "/" + name + "/"):
                return k
        raise ValueError(f"no layer kind for the leaf {name!r}")

    return jax.tree_util.tree_map_with_path(kind, params)


# --------------------------------------------------------------------------- #
# The models.
# --------------------------------------------------------------------------- #


def mlp(quick: bool, key: jax.Array) -> Model:
    sizes = (32, 16, 16, 10) if quick else (784, 512, 512, 10)
    b = QUICK_BATCH if quick else BATCH
    keys = jax.random.split(key, 5)
    params = {
        f"fc{i + 1}": _dense(keys[i], n_in, n_out)
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    }

    def loss_fn(p, ex):
        x = ex["x"]
        for i in range(len(sizes) - 1):
            x = x @ p[f"fc{i + 1}"]["w"] + p[f"fc{i + 1}"]["b"]
            if i < len(sizes) - 2:
                x = jax.nn.relu(x)
        return _xent(x, ex["y"])

    batch = {"x": jax.random.normal(keys[3], (b, sizes[0])), "y": _labels(keys[4], b, 10)}
    title = "MLP " + "-".join(map(str, sizes)) + ", relu, softmax cross-entropy"
    return Model("mlp", title, params, batch, loss_fn, leaf_kinds(params))


def _max_pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _conv_apply(x: jax.Array, c: dict[str, jax.Array], stride: int = 1) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x, c["w"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + c["b"]


def cnn(quick: bool, key: jax.Array) -> Model:
    side, c1, c2, fc = (8, 4, 8, 16) if quick else (28, 32, 64, 256)
    b = QUICK_BATCH if quick else BATCH
    keys = jax.random.split(key, 6)
    flat = (side // 4) ** 2 * c2
    params = {
        "conv1": _conv(keys[0], 5, 1, c1),
        "conv2": _conv(keys[1], 5, c1, c2),
        "fc1": _dense(keys[2], flat, fc),
        "fc2": _dense(keys[3], fc, 10),
    }

    def loss_fn(p, ex):
        x = ex["x"][None]  # (1, H, W, 1): conv_general_dilated wants a batch axis
        x = _max_pool(jax.nn.relu(_conv_apply(x, p["conv1"])))
        x = _max_pool(jax.nn.relu(_conv_apply(x, p["conv2"])))
        x = x.reshape(-1)
        x = jax.nn.relu(x @ p["fc1"]["w"] + p["fc1"]["b"])
        return _xent(x @ p["fc2"]["w"] + p["fc2"]["b"], ex["y"])

    batch = {
        "x": jax.random.normal(keys[4], (b, side, side, 1)),
        "y": _labels(keys[5], b, 10),
    }
    title = (
        f"CNN {side}x{side}x1: conv5x5x{c1} SAME, relu, pool 2, conv5x5x{c2}, relu, pool 2, "
        f"fc {fc}, fc 10"
    )
    return Model("cnn", title, params, batch, loss_fn, leaf_kinds(params))


def resnet(quick: bool, key: jax.Array) -> Model:
    import flax.linen as nn

    side, c1, c2, groups = (8, 4, 8, 2) if quick else (32, 16, 32, 8)
    b = QUICK_BATCH if quick else BATCH

    class Block(nn.Module):
        channels: int
        stride: int

        @nn.compact
        def __call__(self, x):
            y = nn.Conv(self.channels, (3, 3), (self.stride, self.stride), use_bias=False)(x)
            y = nn.relu(nn.GroupNorm(num_groups=groups)(y))
            y = nn.Conv(self.channels, (3, 3), use_bias=False)(y)
            y = nn.GroupNorm(num_groups=groups)(y)
            if self.stride != 1 or x.shape[-1] != self.channels:
                x = nn.Conv(self.channels, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            return nn.relu(x + y)

    class ResNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(c1, (3, 3), use_bias=False)(x)
            x = nn.relu(nn.GroupNorm(num_groups=groups)(x))
            x = Block(c1, 1)(x)
            x = Block(c1, 1)(x)
            x = Block(c2, 2)(x)
            return nn.Dense(10)(x.mean(axis=(1, 2)))

    net = ResNet()
    keys = jax.random.split(key, 3)
    x = jax.random.normal(keys[0], (b, side, side, 3))
    params = net.init(keys[1], x[:1])["params"]

    def loss_fn(p, ex):
        return _xent(net.apply({"params": p}, ex["x"][None])[0], ex["y"])

    batch = {"x": x, "y": _labels(keys[2], b, 10)}
    title = (
        f"ResNet {side}x{side}x3 (Flax): conv3x3x{c1} + GroupNorm({groups}), 3 residual "
        f"blocks (conv-GN-relu-conv-GN; {c1}, {c1}, {c2} stride 2 with 1x1 projection), "
        "mean pool, dense 10"
    )
    return Model("resnet_gn", title, params, batch, loss_fn, leaf_kinds(params))


def _lstm_params(key: jax.Array, n_in: int, hidden: int) -> dict[str, Any]:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "lstm": {
            "wi": jax.random.normal(k1, (n_in, 4 * hidden)) / np.sqrt(n_in),
            "wh": jax.random.normal(k2, (hidden, 4 * hidden)) / np.sqrt(hidden),
            "b": jnp.zeros((4 * hidden,)),
        },
        "head": _dense(k3, hidden, 10),
    }


def _lstm_step(p: dict[str, jax.Array], carry: Any, x: jax.Array) -> Any:
    h, c = carry
    z = x @ p["wi"] + h @ p["wh"] + p["b"]
    i, f, g, o = jnp.split(z, 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def _lstm_sizes(quick: bool) -> tuple[int, int, int, int]:
    """(input, hidden, steps, batch)."""
    return (4, 8, 5, QUICK_BATCH) if quick else (32, 128, 20, BATCH)


def _sequence_batch(key: jax.Array, b: int, t: int, n_in: int) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(key)
    return {"x": jax.random.normal(k1, (b, t, n_in)), "y": _labels(k2, b, 10)}


def lstm(quick: bool, key: jax.Array, scan: bool) -> Model:
    n_in, hidden, t, b = _lstm_sizes(quick)
    k1, k2 = jax.random.split(key)
    params = _lstm_params(k1, n_in, hidden)

    def loss_fn(p, ex):
        carry = (jnp.zeros((hidden,)), jnp.zeros((hidden,)))
        if scan:
            carry, _ = jax.lax.scan(
                lambda c, x: (_lstm_step(p["lstm"], c, x), None), carry, ex["x"]
            )
        else:
            for step in range(t):
                carry = _lstm_step(p["lstm"], carry, ex["x"][step])
        return _xent(carry[0] @ p["head"]["w"] + p["head"]["b"], ex["y"])

    how = "lax.scan" if scan else "unrolled Python loop"
    title = f"LSTM ({how}): input {n_in}, hidden {hidden}, T={t}, last state -> dense 10"
    name = "lstm_scan" if scan else "lstm_loop"
    return Model(name, title, params, _sequence_batch(k2, b, t, n_in), loss_fn, leaf_kinds(params))


def lstm_flax(quick: bool, key: jax.Array) -> Model:
    import flax.linen as nn

    n_in, hidden, t, b = _lstm_sizes(quick)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.RNN(nn.LSTMCell(hidden), name="rnn")(x)
            return nn.Dense(10, name="head")(h[:, -1])

    net = Net()
    k1, k2 = jax.random.split(key)
    batch = _sequence_batch(k2, b, t, n_in)
    params = net.init(k1, batch["x"][:1])["params"]

    def loss_fn(p, ex):
        return _xent(net.apply({"params": p}, ex["x"][None])[0], ex["y"])

    title = f"LSTM (Flax nn.RNN(nn.LSTMCell)): input {n_in}, hidden {hidden}, T={t}, dense 10"
    return Model("lstm_flax", title, params, batch, loss_fn, leaf_kinds(params))


def transformer(quick: bool, key: jax.Array) -> Model:
    import flax.linen as nn

    t, d, heads, mlp_dim, vocab = (8, 16, 2, 32, 32) if quick else (32, 128, 4, 512, 256)
    b = QUICK_BATCH if quick else BATCH

    class Block(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(vocab, d, name="embed")(tokens)
            pos = self.param("pos_embed", nn.initializers.normal(0.02), (t, d))
            x = x + pos
            causal = nn.make_causal_mask(tokens)
            y = nn.LayerNorm(name="ln_1")(x)
            x = x + nn.MultiHeadDotProductAttention(heads, name="attention")(y, y, mask=causal)
            y = nn.LayerNorm(name="ln_2")(x)
            y = nn.Dense(mlp_dim, name="mlp_in")(y)
            x = x + nn.Dense(d, name="mlp_out")(nn.gelu(y))
            x = nn.LayerNorm(name="ln_f")(x)
            return nn.Dense(vocab, name="head")(x)

    net = Block()
    k1, k2 = jax.random.split(key)
    seq = jax.random.randint(k2, (b, t + 1), 0, vocab)
    batch = {"x": seq[:, :-1], "y": seq[:, 1:]}
    params = net.init(k1, batch["x"][:1])["params"]

    def loss_fn(p, ex):
        logits = net.apply({"params": p}, ex["x"][None])[0]
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits), ex["y"][:, None], axis=-1)
        return -jnp.mean(picked)

    title = (
        f"Transformer block (Flax, pre-LN): tokens {t}, vocab {vocab} embedding + learned "
        f"positions, d={d}, {heads} heads (causal), MLP {mlp_dim} gelu, LM head, next-token loss"
    )
    return Model("transformer", title, params, batch, loss_fn, leaf_kinds(params))


MODELS: dict[str, Callable[[bool, jax.Array], Model]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet_gn": resnet,
    "lstm_loop": lambda quick, key: lstm(quick, key, scan=False),
    "lstm_scan": lambda quick, key: lstm(quick, key, scan=True),
    "lstm_flax": lstm_flax,
    "transformer": transformer,
}


def build(name: str, quick: bool, seed: int = 0) -> Model:
    return MODELS[name](quick, jax.random.key(seed))
