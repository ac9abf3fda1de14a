"""The KJV loader and the char-LSTM of ``python -m benchmarks.reproduce p4``."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from benchmarks.reproduce import p4, text

RAW = """
Genesis 1

  1 In the beginning God created the heaven and the earth.
  2 And the earth was without form, and void; and darkness was upon the face of
the deep.  And the Spirit of God moved upon the face of the waters.

1 Kings 2

  1 Now the days of David drew nigh that he should die; and he charged Solomon
his son, saying,
"""


def test_clean_kjv_drops_headings_and_numbers_and_joins_wrapping():
    assert text.clean_kjv(RAW) == (
        "In the beginning God created the heaven and the earth.\n"
        "And the earth was without form, and void; and darkness was upon the face of the "
        "deep. And the Spirit of God moved upon the face of the waters.\n"
        "Now the days of David drew nigh that he should die; and he charged Solomon his "
        "son, saying,\n"
    )


def test_vocab_round_trip_and_split():
    data = text.char_text("abcabcabcz", test_fraction=0.2)
    assert data.vocab == "abcz"
    assert data.train.dtype == np.int32
    assert (len(data.train), len(data.test)) == (8, 2)
    assert data.decode(np.concatenate([data.train, data.test])) == "abcabcabcz"
    assert data.decode(data.encode("zcab")) == "zcab"


def test_missing_bible_command_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTAX_SIGNVAR_DATA", str(tmp_path))  # no cached copy
    monkeypatch.setattr(text.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install -y bible-kjv"):
        text.load_kjv()


def test_cached_text_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTAX_SIGNVAR_DATA", str(tmp_path))
    (tmp_path / text.CACHE_NAME).write_text("cached\n", encoding="utf-8")
    monkeypatch.setattr(text.shutil, "which", lambda name: None)
    assert text.load_kjv() == "cached\n"


def test_embedded_smoke_text_loads():
    data = text.load(smoke=True)
    assert 10_000 < len(data.train) + len(data.test) < 50_000
    assert data.decode(data.train[:16]) == "In the beginning"
    assert 40 < data.vocab_size < 80
    assert len(data.test) == pytest.approx(0.2 * (len(data.train) + len(data.test)), abs=1)


def test_lstm_loss_at_init_is_log_vocab():
    data = text.load(smoke=True)
    loss_fn, init, eval_fn = p4.problem(data, eval_seqs=8, eval_chunk=4)
    params = init(jax.random.key(0))
    assert params["lstm"][0]["w_h"].shape == (128, 512)
    loss = float(jax.jit(loss_fn)(params, jax.random.key(1)))
    assert loss == pytest.approx(math.log(data.vocab_size), abs=0.1)
    ev = jax.jit(eval_fn)(params)
    assert set(ev) == {"train_loss", "test_loss", "test_acc"}
    assert float(ev["test_loss"]) == pytest.approx(math.log(data.vocab_size), abs=0.1)
    assert 0.0 <= float(ev["test_acc"]) <= 1.0
