"""Shutdown reaches running work: every live pipeline registers here, and
``abort_all`` kills them so their partial files are removed on the way out.
Loops that wait (for the server, for a lock) ask ``requested()``.

The daemon calls ``abort_all`` when SHUTDOWN_GRACE is over; a one-shot command
(``backup``, ``restore``, ...) calls it at once on SIGTERM or SIGINT, through
``abort_on_signals``, so its children stop within seconds and nothing unfinished
is committed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

# A command that has not unwound this long after the signal exits anyway: its children die
# with it (PR_SET_PDEATHSIG) and the next run removes what it left.
FORCED_EXIT_AFTER = 20.0


class Abortable(Protocol):
    def abort(self, reason: str) -> None: ...


_lock = threading.RLock()  # the signal handler may run while this thread holds it
_live: set[Abortable] = set()
_reason: str | None = None


def register(work: Abortable) -> None:
    with _lock:
        _live.add(work)
        reason = _reason
    if reason:
        work.abort(reason)


def unregister(work: Abortable) -> None:
    with _lock:
        _live.discard(work)


def abort_all(reason: str) -> None:
    global _reason
    with _lock:
        _reason = reason
        live = list(_live)
    for work in live:
        work.abort(reason)


def requested() -> str | None:
    """The reason, once ``abort_all`` was called."""
    return _reason


def reset() -> None:
    global _reason
    with _lock:
        _reason = None


_signal: int | None = None


def abort_on_signals() -> None:
    """SIGTERM and SIGINT abort the running work of this process (a one-shot command)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal)


def interrupted_by() -> int | None:
    """The signal that interrupted this command, if one did."""
    return _signal


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global _signal
    if _signal is not None:
        return  # already stopping
    _signal = signum
    name = signal.Signals(signum).name
    watchdog = threading.Timer(FORCED_EXIT_AFTER, _force_exit, args=(name, 128 + signum))
    watchdog.daemon = True
    watchdog.start()  # first: whatever happens below, the command ends
    abort_all(f"interrupted by {name}")


# Steps that must not be cut in the middle (containers stopped, databases being renamed):
# the forced exit waits for them.
_shielded = 0
_shield_lock = threading.Lock()


@contextmanager
def shielded() -> Iterator[None]:
    """A short step that must finish once begun: the forced exit waits until it has."""
    global _shielded
    with _shield_lock:
        _shielded += 1
    try:
        yield
    finally:
        with _shield_lock:
            _shielded -= 1


def _force_exit(name: str, code: int) -> None:
    while _shielded:  # e.g. the app's containers are stopped: they must be started again first
        time.sleep(0.2)
    os.write(2, f"backupd: did not stop within {FORCED_EXIT_AFTER:g}s of {name}; exiting now, "
                f"the next run removes what is left\n".encode())
    os._exit(code)
