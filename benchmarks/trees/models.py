"""The benchmarked models: parameter trees of real leaf shapes, a loss and a batch each.

The MLPs' loss is their real forward pass (tanh layers, MSE on a small random batch). The
architecture-shaped trees (ResNets, ViT, GPT-2, the large leaves) get a synthetic loss
instead, ``sum over leaves of mean(tanh(p) * c_leaf)``: it touches every leaf elementwise,
at a cost proportional to its bytes, so the step keeps the real model's per-leaf structure
(one fusion and one buffer per leaf, in the forward and the backward pass) without its
convolutions and attention.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks.trees import shapes as S

MLP_BATCH = 16


@dataclass(frozen=True)
class Spec:
    """How to build one model: its shapes at a ``width``, and which loss it gets."""

    name: str
    title: str
    shapes: Callable[[float], S.Shapes]
    width: float  # the full run's narrowing
    quick_width: float  # the smoke run's
    loss: str  # "mlp" (the real forward) or "synthetic"
    note: str  # what the width narrows, for the report


SPECS: tuple[Spec, ...] = (
    Spec("resnet18", "ResNet-18", S.resnet18_shapes, 0.5, 1 / 16, "synthetic", "channels, classes"),
    Spec(
        "resnet50", "ResNet-50", S.resnet50_shapes, 0.25, 1 / 16, "synthetic", "channels, classes"
    ),
    Spec(
        "vit_b16",
        "ViT-B/16",
        S.vit_b16_shapes,
        0.1875,
        1 / 32,
        "synthetic",
        "embedding dim, MLP dim, tokens, classes",
    ),
    Spec(
        "gpt2",
        "GPT-2 small",
        S.gpt2_small_shapes,
        0.1875,
        1 / 32,
        "synthetic",
        "embedding dim, MLP dim, vocabulary, positions",
    ),
    Spec(
        "mlp200",
        "MLP, 200 leaves",
        lambda w: S.mlp_shapes(100, S.scaled(100, w)),
        1.0,
        0.1,
        "mlp",
        "hidden units",
    ),
    Spec(
        "mlp1000",
        "MLP, 1,000 leaves",
        lambda w: S.mlp_shapes(500, S.scaled(40, w)),
        1.0,
        0.1,
        "mlp",
        "hidden units",
    ),
    Spec("large40", "40 large leaves", S.large_leaves_shapes, 0.5, 1 / 32, "synthetic", "columns"),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


@dataclass
class Model:
    spec: Spec
    width: float
    shapes: S.Shapes
    params: Any
    batch: Any
    loss_fn: Callable[[Any, Any], jax.Array]

    @property
    def n_leaves(self) -> int:
        return len(self.shapes)

    @property
    def n_params(self) -> int:
        return S.n_params(self.shapes)


def synthetic_loss(params: Any, batch: jax.Array) -> jax.Array:
    """``sum_i mean(tanh(p_i) * c_i)``: every leaf touched once, elementwise."""
    leaves = jax.tree.leaves(params)
    return sum(jnp.mean(jnp.tanh(p) * batch[i]) for i, p in enumerate(leaves))


def mlp_loss(params: dict[str, jax.Array], batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The MLP's forward pass and its MSE: residual tanh layers ``x + tanh(x W + b) / sqrt(L)``
    and a linear last layer. Without the residual path, the gradient of a 500-layer tanh
    stack underflows to float32 subnormals and zeros, and subnormal arithmetic (tens of
    times slower on a CPU) would dominate the timings."""
    x, y = batch
    depth = len(params) // 2
    scale = 1.0 / depth**0.5
    for i in range(depth):
        h = x @ params[f"layer_{i:03d}/w"] + params[f"layer_{i:03d}/b"]
        x = x + scale * jnp.tanh(h) if i < depth - 1 else h
    return jnp.mean((x - y) ** 2)


def _init(shapes: S.Shapes, key: jax.Array) -> dict[str, jax.Array]:
    keys = jax.random.split(key, len(shapes))
    params = {}
    for k, (name, shape) in zip(keys, sorted(shapes.items()), strict=True):
        fan_in = shape[0] if len(shape) > 1 else 1
        params[name] = jax.random.normal(k, shape, jnp.float32) / jnp.sqrt(float(fan_in))
    return params


def build(spec: Spec, quick: bool, seed: int = 0) -> Model:
    width = spec.quick_width if quick else spec.width
    shapes = spec.shapes(width)
    k_params, k_x, k_y = jax.random.split(jax.random.key(seed), 3)
    params = _init(shapes, k_params)
    if spec.loss == "mlp":
        d = shapes["layer_000/w"][0]
        batch: Any = (
            jax.random.normal(k_x, (MLP_BATCH, d), jnp.float32),
            jax.random.normal(k_y, (MLP_BATCH, d), jnp.float32),
        )
        loss_fn: Callable = mlp_loss
    else:
        batch = jax.random.uniform(k_x, (len(shapes),), jnp.float32, 0.5, 1.5)
        loss_fn = synthetic_loss
    return Model(spec, width, shapes, params, batch, loss_fn)
