"""Stored PITR documents as last checked: each file's answer (the document, or why it is
invalid) is remembered while the file is unchanged, since the status page reads every
record every few seconds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from backupd.documents import InvalidDocument

MAX_DOCUMENT_BYTES = 16 << 20
_CACHE: dict[Path, tuple[tuple[int, int, int], Any]] = {}


def cached(path: Path, load: Any) -> Any:
    """``load()``'s answer for ``path``, remembered while the file is unchanged. Raises what
    ``load`` raises."""
    stat = path.stat()
    if stat.st_size > MAX_DOCUMENT_BYTES:  # not read at all: no document of ours is near this
        raise InvalidDocument(f"{stat.st_size} bytes: far larger than any document backupd writes")
    key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if (known := _CACHE.get(path)) is not None and known[0] == key:
        if isinstance(known[1], InvalidDocument):
            raise known[1]
        return known[1]
    try:
        value = load()
    except InvalidDocument as err:
        _CACHE[path] = (key, err)
        raise
    _CACHE[path] = (key, value)
    return value


def listing(folder: Path) -> list[Path]:
    """What ``folder`` holds; what was remembered of files gone from it is forgotten."""
    try:
        found = [Path(entry.path) for entry in os.scandir(folder)]
    except FileNotFoundError:
        found = []
    present = set(found)
    for gone in [p for p in _CACHE if p.parent == folder and p not in present]:
        _CACHE.pop(gone, None)
    return found
