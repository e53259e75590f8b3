"""Whether a stored PITR file is what its manifest says, before a restore or the drill uses
it: a base backup's size and full sha256, and a WAL file's size once read back (a segment,
the partial one too, is exactly the cluster's segment size)."""

from __future__ import annotations

import os
from pathlib import Path

from backupd.errors import IntegrityError
from backupd.pitr import wal
from backupd.pitr.records import WalRecord
from backupd.pitr.store import Base
from backupd.stream import sha256_of


def base_damage(base: Base) -> str | None:
    """Why ``base`` cannot be used, or None when its file matches its manifest."""
    size = base.doc.size
    try:
        actual = os.stat(base.path).st_size
    except OSError as err:
        return f"its file cannot be read ({err.strerror or err})"
    if actual != size:
        return f"its file is {actual} bytes, its manifest says {size}"
    if sha256_of(base.path) != base.sha256:
        return "its file does not match the sha256 in its manifest"
    return None


def check_wal_copy(name: str, copy: Path, segment_size: int) -> None:
    """A WAL segment as restored (decrypted, decompressed) is exactly the segment size, a
    partial one too (pg_receivewal fills it in place); a shorter one was truncated, and
    recovery would stop there quietly, at the wrong moment."""
    if not wal.SEGMENT.fullmatch(name):
        return  # a timeline history file: text of any length
    size = copy.stat().st_size
    if size != segment_size:
        raise IntegrityError(f"WAL file {name} is damaged: it is {size} bytes once read back, where a WAL segment "
                             f"of this cluster is {segment_size}; recovery would stop there")


def check_stored_wal(name: str, path: Path, record: WalRecord | None) -> None:
    """An archived WAL file against the record written when it was archived: its size, then
    its full sha256. A file damaged in place may still decompress (an uncompressed archive,
    or bytes changed before compression), and recovery would replay it. A file archived
    before records existed has only the read-back check."""
    if record is None:
        return
    size = os.stat(path).st_size
    if size != record.size:
        raise IntegrityError(f"WAL file {name} is damaged: {path.name} is {size} bytes, its record says {record.size}")
    if sha256_of(path) != record.sha256:
        raise IntegrityError(f"WAL file {name} is damaged: {path.name} does not match the sha256 in its record")
