"""The examples' shared data and model: sklearn's digits and a 64-64-10 tanh MLP.

:func:`load_data` splits the 8x8 digits (1,797 images, 10 classes) 75/25 into
train and test sets, stratified and with a fixed seed, and standardises the
features with the train split's statistics; :func:`init_mlp`, :func:`mlp`,
:func:`loss_fn` (softmax cross-entropy) and :func:`accuracy` are the model
that every example in :mod:`optax_signvar.demo` trains.

scikit-learn (and, where an example uses them, tqdm and matplotlib) are
imported only when needed, through :func:`_require`, whose error names the
``examples`` extras: ``pip install -e ".[examples]"``.

>>> import jax
>>> params = init_mlp(jax.random.key(0))
>>> {name: p.shape for name, p in params.items()}
{'w0': (64, 64), 'b0': (64,), 'w1': (64, 10), 'b1': (10,)}
>>> mlp(params, jax.numpy.zeros((3, 64))).shape
(3, 10)
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["accuracy", "init_mlp", "load_data", "loss_fn", "mlp"]

_EXTRAS_HINT = 'install the examples extras: pip install -e ".[examples]"'


def _require(module: str, package: str) -> ModuleType:
    """Imports ``module``, or exits with a message naming ``package`` and the extras."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(f"optax_signvar.demo needs {package}; {_EXTRAS_HINT}") from None


def load_data(split_seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Standardized digits as float32 arrays ``(x_train, y_train, x_test, y_test)``.

    The split is fixed by ``split_seed`` (not the demo's ``--seed``), so runs
    with different seeds are scored on the same test set.
    """
    datasets = _require("sklearn.datasets", "scikit-learn")
    model_selection = _require("sklearn.model_selection", "scikit-learn")
    x, y = datasets.load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
        x, y, test_size=0.25, random_state=split_seed, stratify=y
    )
    # Statistics from the training split only, so the test set stays unseen;
    # some border pixels are constant, hence the floor on the scale.
    mean, std = x_tr.mean(0), np.maximum(x_tr.std(0), 1e-6)

    def standardize(a: np.ndarray) -> jax.Array:
        return jnp.asarray((a - mean) / std, jnp.float32)

    return standardize(x_tr), jnp.asarray(y_tr), standardize(x_te), jnp.asarray(y_te)


def init_mlp(key: jax.Array, sizes: Sequence[int] = (64, 64, 10)) -> dict[str, jax.Array]:
    params: dict[str, jax.Array] = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, sub = jax.random.split(key)
        # Glorot-normal scaling keeps tanh units out of saturation at the start.
        scale = jnp.sqrt(2.0 / (n_in + n_out))
        params[f"w{i}"] = scale * jax.random.normal(sub, (n_in, n_out), jnp.float32)
        params[f"b{i}"] = jnp.zeros((n_out,), jnp.float32)
    return params


def mlp(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["w0"] + params["b0"])
    return h @ params["w1"] + params["b1"]


def loss_fn(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(mlp(params, x), y).mean()


def accuracy(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(mlp(params, x), -1) == y)
