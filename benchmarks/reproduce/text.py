"""Character-level text for P4: the King James Bible, standing in for War and Peace.

Dissecting Adam's P4 (DeepOBS ``tolstoi_char_rnn``) trains on Tolstoi's *War and Peace*
(about 3.27 million characters, 83 distinct ones), which cannot be obtained offline here.
The King James Version (public domain) is a comparable English text, 4.14 million
characters after cleaning with 63 distinct ones, that Debian ships as the package
``bible-kjv``: its ``bible`` command prints any range of verses, the whole book with
``bible "Gen1:1-Rev22:21"``.

``bible`` prints a heading per chapter (``Genesis 1``), then every verse as
``  <number> <text>`` wrapped at ``$COLUMNS``. :func:`clean_kjv` keeps the words and
punctuation only, one verse per line: the 1,189 headings and 31,102 verse numbers are
bookkeeping that a character model would spend its capacity counting (and the digits
would be the only ones in the text). The line breaks of the wrapping are joined, as they
depend on the terminal width, and runs of spaces are single ones.

The cleaned text is cached in ``$OPTAX_SIGNVAR_DATA`` (default
``~/.cache/optax_signvar``) as ``kjv-clean-v1.txt``. Smoke runs and tests use the first
five chapters of Genesis, cleaned the same way and shipped in
``texts/genesis_smoke.txt`` (the KJV is public domain), so they never need the package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INSTALL = "apt-get install -y bible-kjv"
WHOLE_BOOK = "Gen1:1-Rev22:21"
# Not under data/: a directory next to data.py of the same name would be a second
# candidate for `benchmarks.reproduce.data`.
SMOKE_TEXT = Path(__file__).resolve().parent / "texts" / "genesis_smoke.txt"

# Bump the version when clean_kjv changes, so that no stale cache is read.
CACHE_NAME = "kjv-clean-v1.txt"

_VERSE = re.compile(r"^\s+\d+ (.*)$")


def data_dir() -> Path:
    """Where the cleaned KJV is cached: ``$OPTAX_SIGNVAR_DATA`` or ``~/.cache/optax_signvar``."""
    env = os.environ.get("OPTAX_SIGNVAR_DATA")
    return Path(env) if env else Path.home() / ".cache" / "optax_signvar"


def run_bible(spec: str = WHOLE_BOOK) -> str:
    """The raw output of ``bible <spec>``; a clear error when the package is missing."""
    exe = shutil.which("bible")
    if exe is None:
        raise RuntimeError(
            "P4 needs the King James Bible from the Debian package bible-kjv (the `bible` "
            f"command was not found on PATH). Install it with: {INSTALL} (as root, after "
            "apt-get update) or bash benchmarks/setup_data.sh; or run the smoke "
            "configuration (--smoke), which uses a text shipped in the repository."
        )
    # A fixed width keeps the raw output reproducible; clean_kjv joins the wrapping anyway.
    env = dict(os.environ, COLUMNS="80")
    out = subprocess.run([exe, spec], env=env, capture_output=True, text=True, check=True)
    return out.stdout


def clean_kjv(raw: str) -> str:
    """One verse per line, without chapter headings and verse numbers, whatever the
    wrapping width of ``raw``."""
    verses: list[str] = []
    after_blank = True
    for line in raw.splitlines():
        match = _VERSE.match(line)
        if match:
            verses.append(match.group(1).strip())
        elif line.strip() and not after_blank and verses:
            verses[-1] += " " + line.strip()  # the wrapped rest of a verse
        # else: blank, or the heading that follows every blank line ("Genesis 1")
        after_blank = not line.strip()
    # Single spaces: the data has a few double ones, and wrapping moves them around.
    return "\n".join(" ".join(v.split()) for v in verses) + "\n"


def load_kjv(*, smoke: bool = False) -> str:
    """The cleaned KJV (cached after the first call), or the embedded smoke text."""
    if smoke:
        return SMOKE_TEXT.read_text(encoding="utf-8")
    path = data_dir() / CACHE_NAME
    if path.exists():
        return path.read_text(encoding="utf-8")
    text = clean_kjv(run_bible())
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so an interrupted run never leaves a truncated cache behind.
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return text


@dataclass(frozen=True)
class CharText:
    """A text as int32 character ids, split into a training and a test part."""

    vocab: str  # the sorted distinct characters; id i is vocab[i]
    train: np.ndarray
    test: np.ndarray

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.vocab)}
        return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.vocab[int(i)] for i in np.asarray(ids).ravel())


def char_text(text: str, test_fraction: float = 0.2) -> CharText:
    """Vocabulary from the whole text; the last ``test_fraction`` of the characters is
    the test set, the rest the training set. As DeepOBS's tolstoi, whose test set is
    653,237 of War and Peace's about 3.27 million characters (20%)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1).")
    vocab = "".join(sorted(set(text)))
    ids = CharText(vocab, np.zeros(0, np.int32), np.zeros(0, np.int32)).encode(text)
    cut = int(round(len(ids) * (1.0 - test_fraction)))
    return CharText(vocab, ids[:cut], ids[cut:])


def load(*, smoke: bool = False, test_fraction: float = 0.2) -> CharText:
    """The (smoke or full) KJV, encoded and split."""
    return char_text(load_kjv(smoke=smoke), test_fraction)
