"""Sharding: every optimizer under an explicit mesh, data-parallel training, two processes.

jax fixes its device count when it initialises, so every check runs in a fresh
interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (simulated
CPU devices), bounded by a timeout, its output shown on failure:

- ``tests/_sharding_scripts.py``: all optimizers of the conformance table (and
  variants) on a 1-D mesh and on an FSDP-style 2-D mesh keep their state sharded
  like the parameters and match a single-device run bit for bit;
- ``python -m optax_signvar.demo.data_parallel``: the digits MLP trained data-parallel with
  ``m_svag`` fed the global mini-batch variance follows the single-device run on
  8 simulated devices, and on 2 processes x 2 devices joined by
  ``jax.distributed.initialize`` on localhost with gloo CPU collectives.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "_sharding_scripts.py")
# run as a module with cwd=ROOT (``-m`` puts the cwd first on sys.path): this checkout's package
EXAMPLE = ["-m", "optax_signvar.demo.data_parallel"]
STEPS = 20
TIMEOUT = 180  # seconds, per subprocess; the runs take ~5-10 s


def device_env(n: int, *flags: str) -> dict:
    """This environment with ``n`` simulated CPU devices (and extra XLA flags)."""
    kept = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    xla = " ".join([*kept, f"--xla_force_host_platform_device_count={n}", *flags])
    return {**os.environ, "XLA_FLAGS": xla, "JAX_PLATFORMS": "cpu"}


def report(proc, name="subprocess") -> str:
    return (
        f"{name} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}"
        f"\n--- stderr ---\n{proc.stderr[-6000:]}"
    )


def run(args, env, timeout=TIMEOUT):
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------- #
# Every optimizer under a mesh
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "mesh, flags",
    [
        # default XLA flags: float32 leaves bit for bit, bfloat16 ones within 2 ulps
        ("mesh1d", ()),
        # no excess precision: every leaf bit for bit, bfloat16 included
        ("mesh2d", ("--xla_allow_excess_precision=false",)),
    ],
)
def test_every_optimizer_keeps_the_params_sharding_and_single_device_results(mesh, flags):
    proc = run([SCRIPTS, mesh], device_env(8, *flags))
    assert proc.returncode == 0 and f"SHARDING-OK {mesh}" in proc.stdout, report(proc)


# --------------------------------------------------------------------------- #
# Data-parallel training (optax_signvar/demo/data_parallel.py)
# --------------------------------------------------------------------------- #


def train(path, devices: int, *extra: str) -> list:
    """Arguments of one run of the example that saves to ``path``."""
    return [
        *EXAMPLE,
        f"--devices={devices}",
        f"--steps={STEPS}",
        "--batch-size=64",
        f"--save-params={path}",
        *extra,
    ]


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    """The reference: the same global batches on one device, in one process."""
    pytest.importorskip("sklearn")  # the example's digits data
    path = tmp_path_factory.mktemp("dp") / "single.npz"
    proc = run(train(path, 1), device_env(1))
    assert proc.returncode == 0 and f"saved {path}" in proc.stdout, report(proc)
    assert "1 process(es), 1 cpu devices" in proc.stdout, proc.stdout
    return dict(np.load(path))


def assert_same_training(got: dict, ref: dict):
    assert sorted(got) == sorted(ref)
    # the loss curve, step by step: only the order of float summation differs
    np.testing.assert_allclose(got["loss_curve"], ref["loss_curve"], rtol=1e-5, atol=1e-6)
    assert ref["loss_curve"][-1] < 0.6 * ref["loss_curve"][0]  # it does train
    for name in sorted(ref):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_data_parallel_on_8_devices_follows_the_single_device_run(single_device, tmp_path):
    path = tmp_path / "dp8.npz"
    proc = run(train(path, 8), device_env(8))
    assert proc.returncode == 0 and f"saved {path}" in proc.stdout, report(proc)
    assert "1 process(es), 8 cpu devices (8 local)" in proc.stdout, proc.stdout
    assert "global batch 64 (8 per device), grad_variance=global mini-batch" in proc.stdout
    assert_same_training(dict(np.load(path)), single_device)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(argvs, env, logs, timeout=TIMEOUT):
    """Starts one process per argv; waits for all, killing all as soon as one fails or
    the time is up. Returns the exit codes and the outputs."""
    procs, files = [], []
    try:
        for argv, log in zip(argvs, logs, strict=True):
            out, err = open(f"{log}.out", "w+"), open(f"{log}.err", "w+")
            files += [out, err]
            procs.append(
                subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT, stdout=out, stderr=err)
            )
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    outputs = []
    for out, err in zip(files[::2], files[1::2], strict=True):
        out.seek(0)
        err.seek(0)
        outputs.append((out.read(), err.read()))
        out.close()
        err.close()
    return [p.returncode for p in procs], outputs


def test_two_processes_with_gloo_follow_the_single_process_run(single_device, tmp_path):
    """2 processes x 2 CPU devices on localhost, joined by ``jax.distributed`` with gloo
    collectives: the global mean gradient and mini-batch variance are psum-ed across
    the processes, and the parameters after the steps are the single-process ones."""
    path = tmp_path / "multi.npz"
    for attempt in range(2):  # the port can be taken between bind and use: retry once
        port = free_port()
        argvs = [
            train(
                path,
                2,
                f"--coordinator=127.0.0.1:{port}",
                "--num-processes=2",
                f"--process-id={i}",
            )
            for i in range(2)
        ]
        logs = [tmp_path / f"process{i}" for i in range(2)]
        codes, outputs = run_processes(argvs, device_env(2), logs)
        text = "\n".join(
            f"--- process {i}: exit {c} ---\nstdout:\n{o[-4000:]}\nstderr:\n{e[-6000:]}"
            for i, (c, (o, e)) in enumerate(zip(codes, outputs, strict=True))
        )
        if codes != [0, 0] and attempt == 0 and "already in use" in text.lower():
            continue
        break
    assert codes == [0, 0], text
    lead_out = outputs[0][0]
    assert "2 process(es), 4 cpu devices (2 local)" in lead_out, text
    assert f"saved {path}" in lead_out, text
    assert_same_training(dict(np.load(path)), single_device)
