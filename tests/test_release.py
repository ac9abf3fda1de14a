"""Release readiness: the sdist and the wheel build, and the wheel works in a fresh venv."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import venv
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_builds_ships_typing_and_license_and_imports_in_a_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1 and list(dist.glob("*.tar.gz"))
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "optax_signvar/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith("tests/") for n in names)

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheels[0])],
        check=True,
        capture_output=True,
        timeout=600,
    )
    smoke = (
        "import jax.numpy as jnp, optax_signvar as osv;"
        "opt = osv.m_svag(0.1); u, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)));"
        "print(osv.__version__, float(u[0]))"
    )
    out = subprocess.run(
        [str(python), "-c", smoke], check=True, capture_output=True, text=True, timeout=300
    )
    version, first = out.stdout.split()
    assert version == __import__("optax_signvar").__version__
    assert abs(float(first) + 0.1) < 1e-6  # the first M-SVAG step is an SGD step
