"""What every experiment shares: its options, progress bars, the figure, the JSON."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "reproduce"


@dataclass
class Context:
    """One run of one experiment: its name, parsed options, and where results go."""

    name: str
    args: argparse.Namespace
    _figure: Any = field(default=None, repr=False)

    @property
    def smoke(self) -> bool:
        return bool(self.args.smoke)

    def seeds(self, default: int, smoke: int = 1) -> list[int]:
        """The seeds to run: ``--seeds N`` or the experiment's default."""
        n = self.args.seeds if self.args.seeds is not None else (smoke if self.smoke else default)
        return list(range(n))

    def pick(self, full: Any, smoke: Any) -> Any:
        """The real configuration's value, or the smoke run's."""
        return smoke if self.smoke else full

    @property
    def stem(self) -> Path:
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        return out / (self.name + ("-smoke" if self.smoke else ""))

    def progress(self, iterable: Any = None, total: int | None = None, desc: str = "") -> Any:
        """A tqdm bar on stderr (a plain iterator without tqdm or with --no-progress)."""
        if self.args.no_progress:
            return _Quiet(iterable)
        try:
            from tqdm import tqdm
        except ImportError:
            return _Quiet(iterable)
        return tqdm(iterable, total=total, desc=f"{self.name} {desc}".strip(), file=sys.stderr)

    def figure(self, *args: Any, **kwargs: Any) -> Any:
        """``plt.subplots(...)`` on a headless backend; saved as ``<name>.png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(*args, **kwargs)
        self._figure = fig
        return fig, axes

    def save(self, results: dict, seconds: float) -> dict:
        """Writes ``<name>.json`` (results + how they were made) and the figure."""
        files = {"json": str(self.stem.with_suffix(".json"))}
        if self._figure is not None:
            files["png"] = str(self.stem.with_suffix(".png"))
            self._figure.savefig(files["png"], dpi=110, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(self._figure)
        payload = {
            "experiment": self.name,
            "meta": machine_meta()
            | {
                "smoke": self.smoke,
                "seconds": round(seconds, 1),
                "command": "python -m benchmarks.reproduce "
                + " ".join(_argv_of(self.name, self.args)),
            },
            "results": results,
        }
        with open(files["json"], "w") as f:
            json.dump(_plain(payload), f, indent=1)
            f.write("\n")
        print(f"{self.name}: {seconds:.0f} s; wrote " + ", ".join(files.values()), flush=True)
        return {"results": results, "files": files, "seconds": seconds}


def machine_meta() -> dict:
    from benchmarks.speed import cpu_cores, cpu_model

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": cpu_cores(),
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "x64": bool(jax.config.read("jax_enable_x64")),
        "pid": os.getpid(),
    }


def _argv_of(name: str, args: argparse.Namespace) -> list[str]:
    argv = [name]
    for key, value in sorted(vars(args).items()):
        if key in ("name", "out", "no_progress") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def _plain(x: Any) -> Any:
    """JSON-able: numpy and JAX scalars/arrays become floats and lists."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray | jax.Array):
        return _plain(np.asarray(x).tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


class _Quiet:
    def __init__(self, iterable: Any):
        self._it = iterable

    def __iter__(self):
        return iter(self._it if self._it is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        pass
