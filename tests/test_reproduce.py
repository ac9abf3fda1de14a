"""Every paper reproduction runs end to end in its ``--smoke`` configuration.

The smoke configurations use data the repo ships or makes (sklearn's digits, an embedded
Genesis excerpt, generated problems), so CI needs no dataset; what they compute is checked
by the experiments' own tests (tests/test_problems.py, tests/test_reproduce_*.py), here
only that each writes well-formed results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.reproduce import cli


def _experiments():
    # adabound's experiment evaluates optax's rate schedule at the int32 count itself
    return [
        pytest.param(n, marks=pytest.mark.standard_promotion) if n == "adabound" else n
        for n in cli.EXPERIMENTS
    ]


@pytest.mark.parametrize("name", _experiments())
def test_smoke_run_writes_results(name, tmp_path, capsys):
    out = cli.main([name, "--smoke", "--no-progress", "--out", str(tmp_path)])
    files = out[name]["files"]
    assert Path(files["json"]).name == f"{name}-smoke.json"
    assert Path(files["png"]).stat().st_size > 10_000  # a figure, not an empty canvas
    with open(files["json"]) as f:
        saved = json.load(f)
    assert saved["experiment"] == name
    assert saved["meta"]["smoke"] is True
    assert saved["meta"]["command"].startswith(f"python -m benchmarks.reproduce {name}")
    assert "--smoke" in saved["meta"]["command"]
    assert saved["results"], "an experiment must report numbers"
    printed = capsys.readouterr().out
    assert f"== {name}:" in printed and "wrote" in printed
    assert math.isfinite(saved["meta"]["seconds"])


def test_unknown_experiment_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-experiment"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_seeds_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["factors", "--smoke", "--seeds", "0", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
