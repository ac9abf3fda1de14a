"""Fig. 3 of Dissecting Adam: variance-adaptation factors against the relative std eta.

For a direction with mean ``m`` and variance ``s`` (relative std ``eta = sqrt(s)/|m|``):
the optimal factor for a sign step, ``erf(1/(sqrt(2) eta))``; Adam's implicit factor,
``(1 + eta^2)^(-1/2)``; and the optimal factor for a raw step, ``(1 + eta^2)^(-1)``.
The curves are evaluated with the package's building blocks (the code the optimizers run),
checked against the closed forms in float64, and the largest gap between the first two is
reported (the paper: Adam's factor is a close approximation of the optimal sign factor).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from optax_signvar import blocks


def curves(eta: np.ndarray) -> dict[str, np.ndarray]:
    """The three factors at relative std ``eta``, computed by the package's blocks."""
    with jax.enable_x64(True):
        m = np.ones_like(eta, dtype=np.float64)
        s = eta.astype(np.float64) ** 2
        return {
            "sign_optimal_erf": np.asarray(blocks.sign_variance_factor(m, s, "optimal")),
            "adam": np.asarray(blocks.sign_variance_factor(m, s, "adam")),
            "raw_optimal": np.asarray(blocks.variance_factor(m, s)),
        }


def closed_forms(eta: np.ndarray) -> dict[str, np.ndarray]:
    erf = np.vectorize(math.erf)
    with np.errstate(divide="ignore"):
        return {
            "sign_optimal_erf": erf(1.0 / (math.sqrt(2.0) * eta)),
            "adam": (1.0 + eta**2) ** -0.5,
            "raw_optimal": 1.0 / (1.0 + eta**2),
        }


def run(ctx):
    eta = np.linspace(0.0, 5.0, ctx.pick(2001, 201))
    ours, exact = curves(eta), closed_forms(eta)
    deviation = {k: float(np.max(np.abs(ours[k] - exact[k]))) for k in ours}
    gap = np.abs(ours["sign_optimal_erf"] - ours["adam"])
    worst = int(np.argmax(gap))
    results = {
        "max_gap_erf_vs_adam": float(gap[worst]),
        "eta_at_max_gap": float(eta[worst]),
        "max_abs_deviation_from_closed_form": deviation,
        "eta": eta[:: max(1, len(eta) // 200)].tolist(),
        "curves": {k: v[:: max(1, len(eta) // 200)].tolist() for k, v in ours.items()},
    }
    print(f"max |erf(1/(sqrt2 eta)) - (1+eta^2)^-1/2| = {gap[worst]:.4f} at eta = {eta[worst]:.3f}")
    print("blocks vs closed forms (float64), max abs deviation:", deviation)

    fig, ax = ctx.figure(figsize=(5, 3.5))
    ax.plot(eta, ours["sign_optimal_erf"], label=r"sign, optimal: erf$(1/(\sqrt{2}\eta))$")
    ax.plot(eta, ours["adam"], "--", label=r"Adam: $(1+\eta^2)^{-1/2}$")
    ax.plot(eta, ours["raw_optimal"], ":", label=r"raw, optimal: $(1+\eta^2)^{-1}$")
    ax.set_xlabel(r"relative standard deviation $\eta$")
    ax.set_ylabel("variance-adaptation factor")
    ax.set_title("Dissecting Adam, Fig. 3")
    ax.legend(fontsize=8)
    return results
