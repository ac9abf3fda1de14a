"""Smoke test of ``python -m optax_signvar.demo``: a short run of every optimizer."""

import math

import pytest

# scikit-learn and matplotlib are in the test extra: a missing one is a failure.
from optax_signvar import demo


def test_short_run_learns_and_plots(tmp_path, capsys):
    names = list(demo.OPTIMIZERS)
    png = tmp_path / "c.png"
    results = demo.main(
        ["--epochs", "3", "--optimizers", ",".join(names), "--no-progress", "--plot", str(png)]
    )

    assert [r["name"] for r in results] == names
    for r in results:
        assert math.isfinite(r["final_train_loss"]), r
        # Chance is 10%; three epochs are enough for every default rate to pass 50%.
        assert 0.5 < r["test_accuracy"] <= 1.0, r
        assert r["seconds"] >= 0.0
    assert png.is_file() and png.stat().st_size > 0
    table = capsys.readouterr().out
    assert all(name in table for name in names)


def test_bad_arguments_exit():
    with pytest.raises(SystemExit):
        demo.main(["--optimizers", "sgd"])


def test_missing_extra_names_the_install_command():
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[examples\]"'):
        demo._require("optax_signvar_no_such_module", "nothing")
