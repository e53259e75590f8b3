"""Shutdown reaches running work: every live pipeline registers here, and
``abort_all`` kills them so their partial files are removed on the way out.
Loops that wait (for the server, for a lock) ask ``requested()``."""

from __future__ import annotations

import threading
from typing import Protocol


class Abortable(Protocol):
    def abort(self, reason: str) -> None: ...


_lock = threading.Lock()
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
