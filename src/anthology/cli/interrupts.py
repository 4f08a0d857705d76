"""SIGINT (Ctrl-C) and SIGTERM stop a command the way ``kill -9`` does for its results: every file is
written atomically and every finished model call is in the response cache, so the same command run
again resumes to the same results. Unlike ``kill -9`` the process unwinds (closing the cache, the
model, Ray workers and progress bars) and says so in one line.

The first signal raises :class:`Interrupted` in the main thread, as Ctrl-C raises
:exc:`KeyboardInterrupt`; a second one while the command unwinds ends the process at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command received ``signal`` (SIGINT or SIGTERM)."""

    def __init__(self, number: int) -> None:
        super().__init__(signal.Signals(number).name)
        self.signal = number


def message(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The line to print and the exit status (128 + the signal's number: 130, 143) for ``exc``."""
    number = exc.signal if isinstance(exc, Interrupted) else signal.SIGINT
    name = signal.Signals(number).name
    return f"interrupted ({name}): finished work is kept; run the same command again to resume", 128 + number


def _raise(number: int, frame: FrameType | None) -> None:
    for other in SIGNALS:
        signal.signal(other, _exit_now)
    raise Interrupted(number)


def _exit_now(number: int, frame: FrameType | None) -> None:
    """A second signal: the results are safe as after ``kill -9``, so stop without unwinding."""
    line, status = message(Interrupted(number))
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    os._exit(status)


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` while the block runs (main thread only; a
    signal the process was started ignoring, as ``nohup`` or ``&`` do, stays ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {n: signal.getsignal(n) for n in SIGNALS if signal.getsignal(n) is not signal.SIG_IGN}
    for number in previous:
        signal.signal(number, _raise)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
