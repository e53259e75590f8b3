"""Progress for people at a terminal: bytes, rate and elapsed time on one line of stderr.
Nothing is shown when stdout is not a terminal (``backupd list --json | jq``, cron, docker logs)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class TerminalProgress:
    """``progress(total_bytes)`` callbacks, redrawn at most 4 times a second."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = sys.stdout.isatty() and self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._lock = threading.Lock()
        self._drawn = False

    def __call__(self, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.25:
            return
        with self._lock:
            self._last_draw = now
            elapsed = max(now - self.started, 1e-6)
            self.stream.write(f"\r{self.label}: {human_bytes(total)} at {human_bytes(total / elapsed)}/s, "
                              f"{elapsed:.0f}s elapsed\x1b[K")
            self.stream.flush()
            self._drawn = True

    def done(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def print_table(rows: Sequence[tuple[object, ...]]) -> None:
    """Rows as aligned columns on stdout; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
