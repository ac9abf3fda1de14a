"""Names of the machine a run is on: CPU model, usable cores, the file-name slug."""

from __future__ import annotations

import os
import platform
import re

import jax


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_cores() -> int:
    # A container's affinity mask, not the host's core count, is what the step can use.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_slug() -> str:
    model = re.sub(r"\((r|tm)\)", " ", cpu_model().lower())
    model = model.split("@")[0]  # an Intel model name's clock says nothing the model doesn't
    model = re.sub(r"\b(cpu|processor)\b", " ", model)
    return f"{_slug(model)}_{cpu_cores()}cpu_{_slug(jax.devices()[0].device_kind)}"


def environment() -> dict:
    """The versions and the machine a result was measured with, for a report's head."""
    import numpy as np
    import optax

    return {
        "jax": jax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "cpu_model": cpu_model(),
        "cores": cpu_cores(),
    }
