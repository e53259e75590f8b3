"""Completed WAL files go from the receiver's folder into the archive: compressed and
encrypted like every backup, written under a temporary name, fsynced, then renamed.

The newest completed segment stays in the receiver's folder: a restarted pg_receivewal
resumes after the newest segment it finds there (a PostgreSQL 14 one would otherwise start
at the server's current position and leave a gap)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from backupd.errors import BackupdError
from backupd.logging import get_logger
from backupd.pitr import wal, walrecords
from backupd.pitr.records import WalProof
from backupd.pitr.store import Store, remove_files
from backupd.repository import utc_now
from backupd.stream import Pipeline, StreamResult, stream_to_file
from backupd.transforms import Transform

log = get_logger("pitr")


def remove_stale_temporaries(store: Store) -> None:
    """Temporary files of an archiving that was killed: they would block the next one. Only
    the receiver's lock holder archives, so none of these is in use."""
    for folder in (store.wal_dir, store.spool):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(".partial"):
                os.unlink(entry.path)
    for entry in os.scandir(store.root):  # where WAL was read back to record what it proves
        if entry.name.startswith(".proof-") and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def store_file(source: Path, final: Path, transform: Transform) -> StreamResult:
    """``source`` through the transform's stages into ``final``, atomically."""
    stages = transform.stages() or [("cat", ["cat"])]
    with open(source, "rb") as data:
        pipeline = Pipeline(stages, stdin=data)
    return stream_to_file(pipeline, final, what=f"archiving {source.name}")


def archive_one(store: Store, source: Path, name: str, transform: Transform, tool: Path | None) -> None:
    """One WAL file into the archive, then its record: what its plain WAL proves (read
    before it is compressed or encrypted), its stored size and sha256."""
    try:
        proven = walrecords.proof(store, tool, source, name)
    except (BackupdError, OSError, ValueError) as err:  # archived all the same: it just proves nothing
        log.error("could not read what a received WAL file proves: it never extends the recovery window",
                  file=name, error=str(err))
        proven = WalProof(name=name, recorded=utc_now())
    stored = store_file(source, store.wal_dir / (name + transform.suffix("")), transform)
    walrecords.record(store, proven, stored)


def archive_completed(store: Store, transform: Transform, tool: Path | None = None) -> list[str]:
    """Archive every completed file the receiver holds; returns the names archived."""
    received = store.received()
    completed = [name for name in received if wal.is_wal_name(name)]
    segments = [name for name in completed if not name.endswith(".history")]
    newest = max(segments, key=lambda n: wal.parse_segment(n, store.segment_size)[::-1], default=None)
    archived = store.archived()
    done = []
    for name in sorted(completed, key=lambda n: (not n.endswith(".history"), n)):
        # Archived means archived by backupd, with its record: a file of that name without
        # one (copied in by hand, or left by a kill before its record) gives way to the WAL
        # received, which would otherwise be removed from here unarchived.
        if name not in archived or store.record(name) is None:
            if name in archived:
                log.warning("an archived WAL file without a record is replaced by the one received", file=name)
            if name.endswith(".history"):
                store.remember_history(name, received[name].read_bytes())
            archive_one(store, received[name], name, transform, tool)
            done.append(name)
        if name != newest:
            remove_files([received[name]])
    return done


def archive_partial(store: Store, transform: Transform, tool: Path | None = None) -> str | None:
    """When the stream breaks: keep what the partial segment holds, as ``<segment>.partial``
    in the archive, and empty the receiver's folder for a stream that starts afresh."""
    archive_completed(store, transform, tool)
    kept = None
    for name, path in store.received().items():
        if wal.PARTIAL.fullmatch(name):  # replaces one kept earlier: a later copy holds more
            archive_one(store, path, name, transform, tool)
            kept = name
    remove_files(list(store.received().values()))
    for leftover in os.listdir(store.spool):  # pg_receivewal's own temporary files
        (store.spool / leftover).unlink(missing_ok=True)
    if kept:
        log.info("kept the partial WAL segment of the broken stream", segment=kept)
    return kept
