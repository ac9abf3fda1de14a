"""The optimizers under test: the named table and every valid point of ``dissect``.

One entry per named optimizer (the table every contract test is parametrised
over), and :func:`dissect_points`, the whole space of :class:`optax_signvar.Dissection`
points that construct, each as the keyword arguments of ``dissect``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import optax

import optax_signvar as osv


@dataclasses.dataclass(frozen=True)
class Entry:
    factory: Callable[..., optax.GradientTransformationExtraArgs]
    kwargs: dict
    sign: bool = False  # sign methods move by +-rate and cannot settle on Rosenbrock


OPTIMIZERS = {
    "m_sgd": Entry(osv.m_sgd, {"learning_rate": 1e-2}),
    "ssd": Entry(osv.ssd, {"learning_rate": 1e-2}, sign=True),
    "m_ssd": Entry(osv.m_ssd, {"learning_rate": 1e-2}, sign=True),
    "svag": Entry(osv.svag, {"learning_rate": 1e-2}),
    "m_svag": Entry(osv.m_svag, {"learning_rate": 1e-2}),
    "m_vassd": Entry(osv.m_vassd, {"learning_rate": 1e-2}, sign=True),
    "m_vassd_adam": Entry(
        osv.m_vassd, {"learning_rate": 1e-2, "variance_adaptation": "adam"}, sign=True
    ),
    "adam": Entry(osv.adam, {"learning_rate": 1e-1}),
    "amsgrad": Entry(osv.amsgrad, {"learning_rate": 1e-1}),
    "amsgrad_paper": Entry(osv.amsgrad, {"learning_rate": 1e-1, "bias_correction": False}),
    "adabound": Entry(osv.adabound, {"learning_rate": 1e-2, "final_lr": 1e-2}),
    "amsbound": Entry(osv.amsbound, {"learning_rate": 1e-2, "final_lr": 1e-2}),
    "adaboundw": Entry(
        osv.adaboundw, {"learning_rate": 1e-2, "final_lr": 1e-2, "weight_decay": 1e-6}
    ),
    "amsboundw": Entry(
        osv.amsboundw, {"learning_rate": 1e-2, "final_lr": 1e-2, "weight_decay": 1e-6}
    ),
}
NAMES = sorted(OPTIMIZERS)


def make(name: str, **override) -> optax.GradientTransformationExtraArgs:
    entry = OPTIMIZERS[name]
    return entry.factory(**{**entry.kwargs, **override})


# The axes of Dissection and their values: the space dissect_points() walks.
AXES = {
    "momentum": (True, False),
    "direction": ("raw", "sign"),
    "variance_adaptation": (None, "optimal", "adam"),
    "variance": ("ema", "minibatch"),
    "normalization": (None, "rms"),
    "max_tracking": (False, True),
    "bounds": (None, osv.Bounds(final_lr=0.05, gamma=0.01)),
    "bias_correction": (True, False),
}
# 2 * 2 * 3 * 2 * 2 * 2 * 2 * 2 = 384 combinations, of which these many are well
# defined; a change here means the space itself changed (update both on purpose).
N_VALID_POINTS = 80


def all_combinations() -> list[dict]:
    """Every combination of the axes' values, valid or not."""
    return [dict(zip(AXES, values, strict=True)) for values in itertools.product(*AXES.values())]


def _constructs(point: dict) -> bool:
    try:
        osv.Dissection(**point)
    except ValueError:
        return False
    return True


def dissect_points() -> list[dict]:
    """Every combination that constructs: the points ``dissect`` accepts."""
    return [p for p in all_combinations() if _constructs(p)]


def point_id(point: dict) -> str:
    """A short, readable test id, e.g. ``mom-sign-optimal-ema-none-max-bounds-bc``."""
    return "-".join(
        [
            "mom" if point["momentum"] else "g",
            point["direction"],
            str(point["variance_adaptation"]).lower(),
            point["variance"],
            str(point["normalization"]).lower(),
            "max" if point["max_tracking"] else "nomax",
            "bounds" if point["bounds"] is not None else "nobounds",
            "bc" if point["bias_correction"] else "nobc",
        ]
    )
