"""The PyTorch comparison: ``opt.step()`` of what a PyTorch user would pick instead."""

from __future__ import annotations

import importlib.util
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.speed.config import LR, Config, Pair
from benchmarks.speed.harness import make_params, median, median_ratio, optimizer_runner

# An optimizer's name -> (the alternative's label, a constructor from a parameter list).
Cases = dict[str, tuple[str, Callable[[list], Any]]]


def _torch_adam_impl(torch: Any, device: str) -> str:
    p = torch.nn.Parameter(torch.zeros(4, device=device))
    p.grad = torch.ones(4, device=device)
    try:
        torch.optim.Adam([p], lr=LR, fused=True).step()
        return "fused"
    except (RuntimeError, TypeError, ValueError):
        return "foreach"


def _torch_cases(torch: Any, impl: str, have_adabound: bool) -> Cases:
    cases: Cases = {
        "adam": (
            f"torch.optim.Adam ({impl})",
            lambda ps: torch.optim.Adam(ps, lr=LR, **{impl: True}),
        ),
        "amsgrad": (
            f"torch.optim.Adam(amsgrad=True) ({impl})",
            lambda ps: torch.optim.Adam(ps, lr=LR, amsgrad=True, **{impl: True}),
        ),
    }
    if have_adabound:
        import adabound

        cases["adabound"] = ("adabound.AdaBound", lambda ps: adabound.AdaBound(ps, lr=LR))
        cases["amsbound"] = (
            "adabound.AdaBound(amsbound=True)",
            lambda ps: adabound.AdaBound(ps, lr=LR, amsbound=True),
        )
    return cases


def _torch_time(opt: Any, steps: int, sync: Callable[[], Any]) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _interleaved_with_torch(
    cfg: Config, pair: Pair, opt: Any, sync: Callable[[], Any], params: Any, grads: Any
) -> tuple[list[float], list[float]]:
    """Per-round median step times of our flat donated step and of torch's ``opt``."""
    ours = optimizer_runner(pair.ours, params, grads)
    ours.warm(cfg.warmup)
    with warnings.catch_warnings():
        # The adabound package calls a deprecated torch overload on every step.
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(cfg.warmup):
            opt.step()
        sync()
        t_o, t_t = [], []
        for _ in range(cfg.rounds):
            t_o.append(ours.time(cfg.steps))
            t_t.append(_torch_time(opt, cfg.steps, sync))
    ours.close()
    return t_o, t_t


def measure_torch(cfg: Config, pairs: Sequence[Pair], bar: Any) -> dict[str, Any]:
    import torch

    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    on_same_device = device == "cuda" or jax.default_backend() == "cpu"
    # CPU torch against a GPU jax step would compare devices, not implementations.
    n = max(cfg.sizes) if on_same_device else max(s for s in cfg.sizes if s <= 10**7)
    impl = _torch_adam_impl(torch, device)
    have_adabound = importlib.util.find_spec("adabound") is not None
    cases = _torch_cases(torch, impl, have_adabound)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    params = make_params(n, "flat", jax.random.key(2))
    grads = 0.01 * jnp.sign(params)
    for pair in pairs:
        if pair.name not in cases:
            continue
        label, make = cases[pair.name]
        bar.set_description(f"torch {label}")
        p = torch.nn.Parameter(torch.from_numpy(np.array(params)).to(device))
        p.grad = torch.from_numpy(np.array(grads)).to(device)
        t_o, t_t = _interleaved_with_torch(cfg, pair, make([p]), sync, params, grads)
        rows.append(
            {
                "optimizer": pair.name,
                "alternative": label,
                "ours_ms": 1e3 * median(t_o),
                "torch_ms": 1e3 * median(t_t),
                "ratio": median_ratio(t_o, t_t),
            }
        )
        bar.update(1)
    return {
        "n": n,
        "device": device,
        "threads": torch.get_num_threads(),
        "adam_impl": impl,
        "adabound_installed": have_adabound,
        "rows": rows,
    }
