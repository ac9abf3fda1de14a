"""Float64 numpy transcriptions of docs/update_rules.rst, written without the package.

Each oracle is a class with ``step(g, p, lr)`` that takes one leaf's gradient
and parameters (numpy float64 arrays) and the rate ``a_t`` of this step, and
returns the update (optax's sign: the value added to the parameters). One
instance per leaf. The formulas are spelled out as in the papers on purpose:
sharing code with the package would let a shared mistake pass.
"""

from __future__ import annotations

import math

import numpy as np


class _Moments:
    def __init__(self, shape, b1=0.9, b2=0.999):
        self.t = 0
        self.b1, self.b2 = b1, b2
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)

    def advance(self, g):
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        mh = self.m / (1 - self.b1**self.t)
        vh = self.v / (1 - self.b2**self.t)
        return mh, vh


def rho(beta, t):
    return (1 - beta) * (1 + beta**t) / ((1 + beta) * (1 - beta**t))


def variance_estimate(mh, vh, beta, t):
    """s_t of Dissecting Adam; 0 at t = 1 (and for beta = 0)."""
    if t < 2 or rho(beta, t) >= 1:
        return np.zeros_like(mh)
    return np.maximum(vh - mh**2, 0) / (1 - rho(beta, t))


def raw_factor(d2, var):
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(d2 + var > 0, d2 / (d2 + var), 0.0)
    return np.clip(f, 0, 1)


def erf_factor(d2, var):
    erf = np.vectorize(math.erf)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(var > 0, np.sqrt(d2 / (2 * var)), np.inf)
    return np.where(d2 > 0, erf(z), 0.0)


class MSGD:
    def __init__(self, shape, beta=0.9):
        self.mom = _Moments(shape, beta, beta)

    def step(self, g, p, lr):
        mh, _ = self.mom.advance(g)
        return -lr * mh


class SSD:
    def __init__(self, shape):
        pass

    def step(self, g, p, lr):
        return -lr * np.sign(g)


class MSSD:
    def __init__(self, shape, beta=0.9):
        self.mom = _Moments(shape, beta, beta)

    def step(self, g, p, lr):
        self.mom.advance(g)
        return -lr * np.sign(self.mom.m)


class SVAG:
    def __init__(self, shape, beta=0.9):
        self.beta = beta
        self.mom = _Moments(shape, beta, beta)

    def step(self, g, p, lr):
        mh, vh = self.mom.advance(g)
        s = variance_estimate(mh, vh, self.beta, self.mom.t)
        return -lr * raw_factor(mh**2, s) * g


class MSVAG:
    def __init__(self, shape, beta=0.9):
        self.beta = beta
        self.mom = _Moments(shape, beta, beta)

    def step(self, g, p, lr):
        mh, vh = self.mom.advance(g)
        s = variance_estimate(mh, vh, self.beta, self.mom.t)
        gamma = raw_factor(mh**2, rho(self.beta, self.mom.t) * s)
        return -lr * gamma * mh


class MVASSD:
    def __init__(self, shape, beta=0.9, factor="erf"):
        self.beta, self.factor = beta, factor
        self.mom = _Moments(shape, beta, beta)

    def step(self, g, p, lr):
        mh, vh = self.mom.advance(g)
        var = rho(self.beta, self.mom.t) * variance_estimate(mh, vh, self.beta, self.mom.t)
        if self.factor == "erf":
            gamma = erf_factor(mh**2, var)
        else:  # Adam's (1 + eta^2)^(-1/2) with eta^2 = var / mh^2
            gamma = np.sqrt(raw_factor(mh**2, var))
        return -lr * gamma * np.sign(mh)


class Adam:
    def __init__(self, shape, b1=0.9, b2=0.999, eps=1e-8):
        self.eps = eps
        self.mom = _Moments(shape, b1, b2)

    def step(self, g, p, lr):
        mh, vh = self.mom.advance(g)
        return -lr * mh / (np.sqrt(vh) + self.eps)


class AMSGrad:
    """Torch semantics by default; ``paper=True`` is Reddi et al.'s Algorithm 2."""

    def __init__(self, shape, b1=0.9, b2=0.999, eps=1e-8, paper=False):
        self.eps, self.paper = eps, paper
        self.mom = _Moments(shape, b1, b2)
        self.vmax = np.zeros(shape)

    def step(self, g, p, lr):
        self.mom.advance(g)
        m, t = self.mom.m, self.mom.t
        self.vmax = np.maximum(self.vmax, self.mom.v)
        if self.paper:
            return -lr * m / (np.sqrt(self.vmax) + self.eps)
        bc1, bc2 = 1 - self.mom.b1**t, 1 - self.mom.b2**t
        return -lr * (m / bc1) / (np.sqrt(self.vmax / bc2) + self.eps)


class AdaBound:
    """The ``adabound`` package's step, plus AdaBoundW's decoupled decay.

    ``lr0`` is the rate at step 0 (the reference's ``base_lr``).
    """

    def __init__(
        self,
        shape,
        lr0,
        final_lr=0.1,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        gamma=1e-3,
        weight_decay=0.0,
        amsbound=False,
        decoupled=False,
    ):
        self.__dict__.update(
            lr0=lr0,
            final_lr=final_lr,
            eps=eps,
            gamma=gamma,
            wd=weight_decay,
            amsbound=amsbound,
            decoupled=decoupled,
        )
        self.mom = _Moments(shape, b1, b2)
        self.vmax = np.zeros(shape)

    def step(self, g, p, lr):
        if self.wd and not self.decoupled:
            g = g + self.wd * p
        self.mom.advance(g)
        t = self.mom.t
        v = self.mom.v
        if self.amsbound:
            self.vmax = np.maximum(self.vmax, v)
            v = self.vmax
        step = lr * math.sqrt(1 - self.mom.b2**t) / (1 - self.mom.b1**t)
        f = self.final_lr * lr / self.lr0
        lo = f * (1 - 1 / (self.gamma * t + 1))
        hi = f * (1 + 1 / (self.gamma * t))
        u = -np.clip(step / (np.sqrt(v) + self.eps), lo, hi) * self.mom.m
        if self.wd and self.decoupled:
            u = u - self.wd * (lr / self.lr0) * p
        return u
