"""Leaf shapes of real architectures: one function per model, ``name -> shape``.

``width`` narrows a model without changing its leaf count: it multiplies every dimension
but kernel sizes, the 3 image channels and singleton dimensions (channels, hidden sizes,
vocabulary, positions, classes), so every matrix keeps its share of the parameters. Leaf
counts (derived from the architectures, checked in ``tests/test_tree_benchmark.py``):

* ResNet-18: 62 (stem conv + BN scale/bias = 3; 8 basic blocks of 2 convs without bias and
  2 BNs = 6 each, 48; 3 downsample conv + BN = 3 each, 9; fc weight and bias, 2),
  11,689,512 params at ``width=1`` (torchvision's count, BN running statistics excluded).
* ResNet-50: 161 (stem 3; 16 bottlenecks of 3 convs + 3 BNs = 9 each, 144; 4 downsample
  conv + BN = 3 each, 12; fc 2), 25,557,032 params.
* ViT-B/16: 152 (patch embedding weight and bias, class token, position embedding = 4; 12
  blocks of norm1 g/b, qkv w/b, proj w/b, norm2 g/b, fc1 w/b, fc2 w/b = 12 each, 144;
  final norm g/b and head w/b, 4), 86,567,656 params.
* GPT-2 small: 148 (wte, wpe; 12 blocks of ln_1 g/b, attn c_attn w/b, attn c_proj w/b,
  ln_2 g/b, mlp c_fc w/b, mlp c_proj w/b = 12 each, 144; ln_f g/b), 124,439,808 params.
* MLPs: 2 leaves (weight, bias) per tanh layer: 100 layers of 100 units = 200 leaves,
  1,010,000 params; 500 layers of 40 units = 1,000 leaves, 820,000 params.
* Few large leaves: 40 matrices of 512 x 512 = 10,485,760 params (the issue's "5M" is
  40 x 512 x 256, i.e. ``width=0.5``).
"""

from __future__ import annotations

Shapes = dict[str, tuple[int, ...]]


def scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def _conv_bn(shapes: Shapes, name: str, k: int, c_in: int, c_out: int) -> None:
    """A bias-free conv (HWIO) followed by a batch norm's scale and bias."""
    shapes[f"{name}/conv"] = (k, k, c_in, c_out)
    shapes[f"{name}/bn_scale"] = (c_out,)
    shapes[f"{name}/bn_bias"] = (c_out,)


def _resnet(blocks: tuple[int, ...], bottleneck: bool, width: float) -> Shapes:
    shapes: Shapes = {}
    c_in = scaled(64, width)
    _conv_bn(shapes, "stem", 7, 3, c_in)
    expansion = 4 if bottleneck else 1
    for stage, n_blocks in enumerate(blocks):
        mid = scaled(64 * 2**stage, width)
        c_out = mid * expansion
        for b in range(n_blocks):
            name = f"layer{stage + 1}/block{b}"
            if bottleneck:
                _conv_bn(shapes, f"{name}/c1", 1, c_in, mid)
                _conv_bn(shapes, f"{name}/c2", 3, mid, mid)
                _conv_bn(shapes, f"{name}/c3", 1, mid, c_out)
            else:
                _conv_bn(shapes, f"{name}/c1", 3, c_in, mid)
                _conv_bn(shapes, f"{name}/c2", 3, mid, c_out)
            if b == 0 and (stage > 0 or c_in != c_out):
                _conv_bn(shapes, f"{name}/downsample", 1, c_in, c_out)
            c_in = c_out
    classes = scaled(1000, width)
    shapes["fc/w"] = (c_in, classes)
    shapes["fc/b"] = (classes,)
    return shapes


def resnet18_shapes(width: float = 1.0) -> Shapes:
    """ResNet-18 (basic blocks 2-2-2-2): 62 leaves, 11.7M params at ``width=1``."""
    return _resnet((2, 2, 2, 2), bottleneck=False, width=width)


def resnet50_shapes(width: float = 1.0) -> Shapes:
    """ResNet-50 (bottlenecks 3-4-6-3): 161 leaves, 25.6M params at ``width=1``."""
    return _resnet((3, 4, 6, 3), bottleneck=True, width=width)


def _transformer_block(shapes: Shapes, name: str, d: int, hidden: int, names: tuple) -> None:
    ln1, qkv, proj, ln2, fc1, fc2 = names
    for ln in (ln1, ln2):
        shapes[f"{name}/{ln}/g"] = (d,)
        shapes[f"{name}/{ln}/b"] = (d,)
    for layer, (a, b) in (
        (qkv, (d, 3 * d)),
        (proj, (d, d)),
        (fc1, (d, hidden)),
        (fc2, (hidden, d)),
    ):
        shapes[f"{name}/{layer}/w"] = (a, b)
        shapes[f"{name}/{layer}/b"] = (b,)


def vit_b16_shapes(width: float = 1.0) -> Shapes:
    """ViT-B/16 at 224 px (timm's names): 152 leaves, 86.6M params at ``width=1``."""
    d, hidden, tokens = scaled(768, width), scaled(3072, width), scaled(197, width)
    shapes: Shapes = {
        "patch_embed/w": (16, 16, 3, d),
        "patch_embed/b": (d,),
        "cls_token": (1, 1, d),
        "pos_embed": (1, tokens, d),
    }
    names = ("norm1", "attn/qkv", "attn/proj", "norm2", "mlp/fc1", "mlp/fc2")
    for i in range(12):
        _transformer_block(shapes, f"blocks/{i:02d}", d, hidden, names)
    classes = scaled(1000, width)
    shapes.update({"norm/g": (d,), "norm/b": (d,), "head/w": (d, classes), "head/b": (classes,)})
    return shapes


def gpt2_small_shapes(width: float = 1.0) -> Shapes:
    """GPT-2 small (Hugging Face's names): 148 leaves, 124.4M params at ``width=1``."""
    d, hidden = scaled(768, width), scaled(3072, width)
    shapes: Shapes = {"wte": (scaled(50257, width), d), "wpe": (scaled(1024, width), d)}
    names = ("ln_1", "attn/c_attn", "attn/c_proj", "ln_2", "mlp/c_fc", "mlp/c_proj")
    for i in range(12):
        _transformer_block(shapes, f"h/{i:02d}", d, hidden, names)
    shapes.update({"ln_f/g": (d,), "ln_f/b": (d,)})
    return shapes


def mlp_shapes(depth: int, hidden: int) -> Shapes:
    """``depth`` dense layers of ``hidden`` units (input and output too): 2 leaves a layer."""
    shapes: Shapes = {}
    for i in range(depth):
        shapes[f"layer_{i:03d}/w"] = (hidden, hidden)
        shapes[f"layer_{i:03d}/b"] = (hidden,)
    return shapes


def large_leaves_shapes(width: float = 1.0, n: int = 40) -> Shapes:
    """``n`` matrices of 512 x (512 ``width``): 10.5M params at ``width=1``."""
    return {f"w_{i:02d}": (512, scaled(512, width)) for i in range(n)}


def n_params(shapes: Shapes) -> int:
    total = 0
    for shape in shapes.values():
        size = 1
        for dim in shape:
            size *= dim
        total += size
    return total
