"""Keeping orbax's failures quiet and clear: one ``ValueError`` naming the checkpoint,
and no coroutines or late reads reported on stderr after it."""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any


def release_frames(err: BaseException) -> None:
    """Finalizes the coroutines orbax leaves suspended in a failed read or write.

    orbax closes its event loop with some of them pending; their frames stay
    reachable from the traceback, and if the error ends the program they are closed
    during interpreter shutdown, where their cleanup fails noisily ("Exception
    ignored ... sys.meta_path is None"). Clearing the frames closes them now.
    """
    live = set()
    frame = inspect.currentframe()
    while frame is not None:
        live.add(id(frame))
        frame = frame.f_back
    seen: set[int] = set()
    exc: BaseException | None = err
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            if id(tb.tb_frame) not in live:
                try:
                    tb.tb_frame.clear()
                except RuntimeError:  # Python >= 3.13 refuses to clear a suspended frame
                    exc.__traceback__ = None
                    break
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__


def is_abandoned_read(unraisable: Any) -> bool:
    """What orbax leaves when one array of a restore fails while others are being read.

    It closes its event loop with those reads under way. A TensorStore read that
    finishes later hands its result to the closed loop from a thread with no Python
    caller ("Exception ignored in: None ... Event loop is closed"); the suspended
    coroutine of a read, when collected, turns the GeneratorExit that closes it
    into an error ("Exception ignored in: <coroutine ...>"). Neither result has a
    taker, and the failure itself is raised as a ValueError.
    """
    source = unraisable.object
    if inspect.iscoroutine(source):
        return f"{os.sep}orbax{os.sep}" in source.cr_code.co_filename
    if unraisable.exc_type is not RuntimeError or source is not None:
        return False
    frames = [frame.name for frame in traceback.extract_tb(unraisable.exc_traceback)]
    closed = str(unraisable.exc_value) == "Event loop is closed"
    return closed and frames == ["call_soon_threadsafe", "_check_closed"]


def quiet_abandoned_reads() -> None:
    previous = sys.unraisablehook
    if getattr(previous, "_optax_signvar", False):
        return

    def hook(unraisable: Any) -> None:
        if not is_abandoned_read(unraisable):
            previous(unraisable)

    hook._optax_signvar = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


@contextlib.contextmanager
def orbax_errors(path: str) -> Iterator[None]:
    """Turns whatever orbax or TensorStore raise on a damaged checkpoint into a ValueError."""
    # installed before the read: a read may finish before orbax's error reaches us
    quiet_abandoned_reads()
    try:
        yield
    except Exception as err:
        release_frames(err)
        root = err  # orbax wraps TensorStore's error, which says what is wrong
        while root.__cause__ is not None and root.__cause__ is not root:
            root = root.__cause__
        first_line = (str(root).strip().splitlines() or [""])[0][:300]
        raise ValueError(
            f"checkpoint {path} could not be read, it is damaged or not an orbax checkpoint "
            f"({type(root).__name__}: {first_line})"
        ) from err
