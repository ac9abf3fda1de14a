"""The paper-budget protocol (benchmarks.paper) and its queue (benchmarks.gpu_queue)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import gpu_queue
from benchmarks.paper import experiments, protocol, report
from benchmarks.reproduce import nets
from optax_signvar.research.sweeps import SweepResult

H100 = "NVIDIA H100 80GB HBM3"


def _result(hps: list[dict], acc: list[float], loss: list[float], seeds=None) -> SweepResult:
    n = len(hps)
    return SweepResult(
        names=list(hps[0]),
        hyperparams=hps,
        seeds=seeds or [0] * n,
        steps=np.array([10, 20]),
        train_loss=np.array([[3.0, v] for v in loss]),
        test={"accuracy": np.array([[0.1, a] for a in acc]), "loss": np.ones((n, 2))},
    )


def _tuned(rates, acc, loss):
    return _result([{"learning_rate": r} for r in rates], acc, loss)


EXP = experiments.smoke("p1")


# --------------------------------------------------------------------------- #
# The experiments as the papers configure them.
# --------------------------------------------------------------------------- #


def test_budgets_are_deepobs_and_adabound():
    p1, p2, p3, p4, ada = (experiments.get(n) for n in ("p1", "p2", "p3", "p4", "adabound"))
    assert (p1.batch_size, p1.epochs, p1.steps) == (128, 100, 468 * 100)
    assert (p2.batch_size, p2.epochs, p2.steps) == (128, 100, 468 * 100)
    assert (p3.batch_size, p3.epochs, p3.boundaries) == (128, 160, (37440, 56160))
    assert (p4.batch_size, p4.epochs, p4.num_classes) == (50, 200, 63)
    assert (ada.epochs, ada.boundaries) == (200, (150 * 468,))
    assert ada.methods["AdaBound"].static == {"gamma": 1e-3, "final_lr": 0.1}
    assert ada.methods["AdaBound (final_lr tuned)"].grid == {"final_lr": experiments.FINAL_LRS}
    for exp in (p1, p2, p3, p4):
        assert list(exp.methods) == ["M-SGD", "M-SSD", "M-SVAG", "Adam"]
        assert exp.seeds == 10
    assert {m.optimizer for m in p1.methods.values()} == {"m_sgd", "m_ssd", "m_svag", "adam"}
    assert p2.substitution and p3.substitution and p4.substitution and ada.substitution
    assert p1.substitution is None and p1.baselines["Adam"]["test_accuracy"] == 0.92939


def test_deepobs_2c2d_initializer():
    params = nets.net_2c2d(weight_std=0.05).init(jax.random.key(0))
    w = np.asarray(params["fc1"]["w"])
    assert np.abs(w).max() <= 0.1 + 1e-7  # redrawn beyond 2 sd
    # the sd of a normal truncated at 2 sd is 0.87962566 of the untruncated one
    assert abs(w.std() - 0.05 * 0.87962566) < 5e-4
    assert np.all(np.asarray(params["conv1"]["b"]) == 0.05)


def test_scheduled_decays_the_rate_and_final_lr():
    opt = experiments.scheduled(0.1, optimizer="m_sgd", boundaries=(2, 4))
    state = opt.init(jnp.zeros(()))
    steps = []
    for _ in range(6):
        u, state = opt.update(jnp.ones(()), state)
        steps.append(float(u))
    # M-SGD's bias-corrected momentum of a constant gradient is that gradient: the step is
    # the rate, x0.1 from step 2 and again from step 4
    expected = [-0.1, -0.1, -0.01, -0.01, -0.001, -0.001]
    np.testing.assert_allclose(steps, expected, rtol=1e-5)
    # under inject_hyperparams (as a sweep builds it) the rate is an array and still decays
    injected = optax.inject_hyperparams(experiments.scheduled)(
        learning_rate=0.1, optimizer="adabound", boundaries=(3,), final_lr=0.1
    )
    injected.update(jnp.ones(3), injected.init(jnp.zeros(3)))


# --------------------------------------------------------------------------- #
# The protocol: largest stable rate, downwards, select by test accuracy, seeds.
# --------------------------------------------------------------------------- #


def test_first_stage_is_the_method_grid():
    stage = protocol.next_stage(EXP, "M-SGD", {})
    assert stage.name == "tune1" and stage.seeds == [0]
    assert stage.grid == {"learning_rate": list(EXP.methods["M-SGD"].rates)}


def test_largest_rate_stable_searches_upwards():
    done = {"tune1": _tuned([0.01, 0.1, 1.0], [0.5, 0.6, 0.7], [1.0, 0.9, 0.8])}
    stage = protocol.next_stage(EXP, "M-SGD", done)
    assert stage.name == "tune2" and stage.grid["learning_rate"] == [3.16, 10.0]


def test_best_at_smallest_rate_searches_downwards():
    done = {"tune1": _tuned([0.01, 0.1, 1.0], [0.7, 0.6, 0.1], [0.5, 0.9, math.nan])}
    stage = protocol.next_stage(EXP, "M-SGD", done)
    assert stage.name == "tune2" and stage.grid["learning_rate"] == [0.001, 0.00316]


def test_nothing_stable_searches_lower():
    done = {"tune1": _tuned([0.01, 0.1], [0.1, 0.1], [math.inf, 5.0])}
    assert protocol.selection(EXP, done)["direction"] == "lower"
    assert protocol.next_stage(EXP, "M-SGD", done).grid["learning_rate"] == [0.001, 0.00316]


def test_loss_at_chance_is_unstable():
    done = {"tune1": _tuned([0.01, 0.1, 1.0], [0.3, 0.8, 0.9], [1.0, 0.5, math.log(10)])}
    found = protocol.selection(EXP, done)
    assert found["largest_stable_rate"] == 0.1 and found["best"]["accuracy"] == 0.8
    assert found["direction"] is None and not found["on_edge"]


def test_selected_rate_then_seeds_then_done():
    done = {"tune1": _tuned([0.01, 0.1, 1.0], [0.3, 0.8, 0.1], [1.0, 0.5, math.nan])}
    stage = protocol.next_stage(EXP, "M-SGD", done)
    assert stage.name == "seeds" and stage.grid == {"learning_rate": [0.1]}
    assert stage.seeds == list(range(1, EXP.seeds))
    assert protocol.seed_runs(EXP, done) is None  # the seeds have not run
    done["seeds"] = _result([{"learning_rate": 0.1}], [0.82], [0.4], seeds=[1])
    assert protocol.next_stage(EXP, "M-SGD", done) is None
    runs = protocol.seed_runs(EXP, done)
    assert runs["seeds"] == [0, 1]
    np.testing.assert_allclose(runs["test"]["accuracy"][:, -1], [0.8, 0.82])


def test_search_stops_after_max_rounds_on_the_edge():
    done = {
        f"tune{i + 1}": _tuned([10.0**i], [0.5 + 0.01 * i], [1.0])
        for i in range(protocol.MAX_ROUNDS)
    }
    found = protocol.selection(EXP, done)
    assert found["direction"] is None and found["on_edge"]
    assert protocol.next_stage(EXP, "M-SGD", done).name == "seeds"


# --------------------------------------------------------------------------- #
# Chunks.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("per_chunk", [1, 2, 3, 7, 100])
def test_split_covers_every_run_once_in_product_grids(per_chunk):
    stage = protocol.Stage("tune1", {"learning_rate": [1, 2, 3], "final_lr": [4, 5]}, [0])
    groups = gpu_queue._split(stage, per_chunk)
    runs = []
    for grid, seeds in groups:
        points = list(itertools.product(*grid.values()))
        assert len(points) * len(seeds) <= max(per_chunk, 1) or len(groups) == 1
        runs += [(dict(zip(grid, p, strict=True)), s) for p in points for s in seeds]
    assert sorted(map(str, runs)) == sorted(
        str(({"learning_rate": a, "final_lr": b}, 0)) for a in [1, 2, 3] for b in [4, 5]
    )
    seeds = protocol.Stage("seeds", {"learning_rate": [1]}, list(range(1, 10)))
    assert [s for _, g in gpu_queue._split(seeds, per_chunk) for s in g] == list(range(1, 10))


def test_h100_plan_fits_the_chunk_limit(tmp_path):
    chunks = gpu_queue.plan(gpu_queue.ORDER, tmp_path, tmp_path, H100, smoke=False)
    assert {c.exp.name for c in chunks} == set(gpu_queue.ORDER)
    for c in chunks:
        assert c.expected_s <= gpu_queue.CHUNK_LIMIT_S or c.until == c.start + c.exp.eval_every
        if c.until is not None:
            assert c.until % c.exp.eval_every == 0 and c.start < c.until < c.exp.steps


def test_measured_rates_replace_the_planning_figure():
    exp = experiments.get("p1")
    ledger = [
        {
            "experiment": "p1",
            "device": H100,
            "train_s": 100.0,
            "runs": 5,
            "steps": 1000,
            "compile_s": 20.0,
        },
        {
            "experiment": "p2",
            "device": H100,
            "train_s": 1.0,
            "runs": 1,
            "steps": 1,
            "compile_s": 1.0,
        },
    ]
    assert gpu_queue.rates(exp, H100, ledger) == (0.02, 20.0)
    assert gpu_queue.rates(exp, "cpu", ledger)[0] == exp.h100_ms_per_run_step / 1000 * 500


def test_compare_needs_two_standard_errors():
    methods = {
        "M-SSD": {
            "test_accuracy": {"mean": 0.9, "std": 0.01},
            "train_loss": {"mean": 0.2, "std": 0.1},
            "seeds": 10,
        },
        "M-SGD": {
            "test_accuracy": {"mean": 0.88, "std": 0.01},
            "train_loss": {"mean": 0.21, "std": 0.1},
            "seeds": 10,
        },
    }
    (row,) = report.compare(methods)
    assert row["pair"] == ["M-SSD", "M-SGD"] and row["test_accuracy"]["better"] == "M-SSD"
    assert row["train_loss"]["better"] == "undecided"


# --------------------------------------------------------------------------- #
# End to end: the smoke path CI runs, resumed in chunks.
# --------------------------------------------------------------------------- #


def test_smoke_queue_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    gpu_queue.main(["--smoke", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert "expected" in printed and "left now" in printed
    doc = json.loads((out / "p1-smoke-paper.json").read_text())
    assert set(doc["methods"]) == {"M-SGD", "Adam"}
    for entry in doc["methods"].values():
        assert entry["seeds"] == 2
        assert 0.0 <= entry["test_accuracy"]["mean"] <= 1.0
        assert entry["rate"] in [p["hyperparams"]["learning_rate"] for p in entry["tuning"]]
    assert (out / "p1-smoke-paper.png").stat().st_size > 0
    ledger = json.loads((out / "paper" / "ledger.json").read_text())
    assert all(e["device"] == gpu_queue.device_kind() for e in ledger)
    # nothing is left, and a second call runs nothing
    assert gpu_queue.plan(["p1"], out, tmp_path / "work", "cpu", smoke=True) == []
    assert gpu_queue.main(["--smoke", "--out", str(out), "--no-progress"]) == []


def test_chunks_in_groups_and_segments_give_the_unsplit_results(tmp_path, monkeypatch):
    exp = dataclasses.replace(
        experiments.smoke("p1"),
        # the largest rate diverges and the middle one wins: one round of tuning
        methods={"Adam": experiments.Method("adam", (1e-4, 1e-3, 100.0))},
        seeds=1,
    )
    monkeypatch.setattr(experiments, "smoke", lambda name="p1": exp)
    whole, split = tmp_path / "whole", tmp_path / "split"
    gpu_queue.run_queue(["p1"], whole, whole / "w", time_limit=None, smoke=True, progress=False)
    # one run per chunk and half the steps per segment: 3 groups x 2 segments
    monkeypatch.setattr(gpu_queue, "rates", lambda *a: (1.0, 0.0))
    monkeypatch.setattr(gpu_queue, "CHUNK_LIMIT_S", 1.0 * exp.steps / 2)
    calls = 0
    while gpu_queue.plan(["p1"], split, split / "w", "cpu", smoke=True):
        gpu_queue.run_queue(
            ["p1"], split, split / "w", time_limit=1e-9, smoke=True, progress=False
        )  # nothing fits: runs no chunk
        chunk = gpu_queue.plan(["p1"], split, split / "w", "cpu", smoke=True)[0]
        gpu_queue.run_chunk(chunk, split, split / "w", progress=False)
        # as if the command had been killed before writing its progress: the next segment
        # starts from the step the sweep's checkpoint holds
        gpu_queue._progress_file(split / "w", chunk.name).unlink(missing_ok=True)
        calls += 1
    rounds = len(list((whole / "paper" / "p1-smoke" / "adam").glob("tune*.json")))
    assert rounds == 1 and calls == 6
    a = json.loads((whole / "p1-smoke-paper.json").read_text())["methods"]["Adam"]
    b = json.loads((split / "p1-smoke-paper.json").read_text())["methods"]["Adam"]
    assert a["rate"] == b["rate"]
    np.testing.assert_allclose(b["test_accuracy"]["mean"], a["test_accuracy"]["mean"], atol=1e-6)
    assert [p["accuracy"] for p in a["tuning"]] == pytest.approx(
        [p["accuracy"] for p in b["tuning"]], abs=1e-6
    )


def test_char_rnn_loss_takes_a_dropout_key():
    from optax_signvar.research import sweep

    exp = experiments.smoke("p4")
    x_train, y_train, x_test, y_test = exp.load()
    res = sweep(
        experiments.scheduled,
        exp.init_fn,
        exp.loss_fn,
        (x_train, y_train, x_test[:50], y_test[:50]),
        grid={"learning_rate": [1e-2]},
        seeds=[0],
        steps=4,
        batch_size=exp.batch_size,
        eval_every=2,
        static={"optimizer": "adam"},
        eval_fn=exp.eval_fn,
        loss_key=True,
        progress=False,
    )
    assert np.all(np.isfinite(res.train_loss)) and res.test["accuracy"].shape == (1, 2)
