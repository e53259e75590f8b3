"""WAL of a history the server no longer has. A server put back to an older copy of its
volume (a restored snapshot) keeps its identity and its timeline, and writes again the
segments it had already written, under the same names, with other content. The archived
ones of those names are moved aside, never deleted: the WAL written now is archived in
their place, and recovery from a base backup taken after the put-back reads that."""

from __future__ import annotations

import os
from pathlib import Path

from backupd.logging import get_logger
from backupd.pitr import wal
from backupd.pitr.store import RECORD_SUFFIX, Store
from backupd.repository import utc_now
from backupd.stream import fsync_dir

log = get_logger("pitr")

FOLDER = "diverged"  # beside wal/: never listed, replayed, replicated or pruned


def rolled_back(store: Store, timeline: int, position: int) -> int | None:
    """The server's position when it is behind the newest segment received on its timeline:
    what was received after it never happened there. Only what the stream wrote counts: a
    file copied into the archive by hand may carry any name."""
    size = store.segment_size
    known = [wal.parse_segment(name.removesuffix(".partial"), size) for name in store.received()
             if not name.endswith(".history")]
    newest = max((segno for line, segno in known if line == timeline), default=None)
    if newest is not None and position < newest * size:
        return position
    return None


def set_aside(store: Store, timeline: int, position: int) -> Path | None:
    """Moves the archived WAL files (and their records) of ``timeline`` from the segment
    holding ``position`` on into ``diverged/<time>/``; returns that folder, None if none."""
    first = wal.segment_of(position, store.segment_size)
    archived = store.archived()
    names = [name for name in archived if not name.endswith(".history")
             and wal.parse_segment(name.removesuffix(".partial"), store.segment_size) >= (timeline, first)
             and wal.parse_segment(name.removesuffix(".partial"), store.segment_size)[0] == timeline]
    if not names:
        return None
    folder = store.root / FOLDER / utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in names:
        for path in (archived[name], store.wal_dir / (name + RECORD_SUFFIX)):
            if path.exists():
                os.replace(path, folder / path.name)
    fsync_dir(folder)
    fsync_dir(store.wal_dir)
    log.warning("archived WAL of a history the server no longer has was moved aside", files=len(names),
                folder=str(folder), first=min(names))
    return folder
