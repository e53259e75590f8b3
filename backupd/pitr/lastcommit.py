"""The last commit a recovery to a moment replays: its transaction id, time and position,
read by ``pg_waldump`` from the WAL the restore would copy. Only the segments that can hold
it are read: the last one (it holds the first commit after the moment, and maybe commits
before it), then the newest earlier one whose record says a transaction ended in it. A
stored segment is read back into a private temporary folder (never in BACKUP_DIR), which
goes when done."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backupd.dump_formats import reader_stages
from backupd.pitr.store import Store
from backupd.process import run
from backupd.stream import Pipeline, stream_to_file

# "tx: 745, lsn: 0/0301A7D0, prev 0/0301A798, desc: COMMIT 2026-12-04 23:01:02.123456 UTC"; a
# COMMIT_PREPARED names the prepared transaction it finishes: that is the one committed.
_COMMIT = re.compile(r"tx:\s*(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), prev \S+, desc: COMMIT(?:_PREPARED (\d+):)? "
                     r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
TIMEOUT = 300.0


@dataclass(frozen=True)
class Commit:
    xid: int
    time: datetime
    lsn: str


def last_commit(tool: Path, store: Store, segments: dict[int, tuple[str, Path, bool]], target: datetime | None,
                identity: str | None) -> Commit | None:
    """The newest commit at or before ``target`` (None: the newest) in ``segments`` (as
    Store.segments gives them), or None when no transaction committed in them."""
    proofs = store.proofs(segments)
    with tempfile.TemporaryDirectory(prefix="backupd-preview-") as scratch:
        for segno in sorted(segments, reverse=True):
            proof = proofs.get(segno)
            if proof is not None and proof.last_commit is None:
                continue  # its record proves no transaction ended in it
            name, path, stored = segments[segno]
            plain = _read_back(name, path, Path(scratch), identity) if stored else path
            if (found := _newest(tool, plain, target)) is not None:
                return found
            if stored:
                plain.unlink()
    return None


def _newest(tool: Path, segment: Path, target: datetime | None) -> Commit | None:
    _, out, _ = run("pg_waldump", [str(tool), "--rmgr=Transaction", str(segment), str(segment)],
                    env={"TZ": "UTC"}, timeout=TIMEOUT)
    newest = None
    for xid, lsn, prepared, stamp in _COMMIT.findall(out.decode("utf-8", "replace")):
        when = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        if target is None or when <= target:
            newest = Commit(int(prepared or xid), when, lsn)
    return newest


def _read_back(name: str, path: Path, folder: Path, identity: str | None) -> Path:
    """An archived segment, decrypted and decompressed, under its own name (pg_waldump reads
    the timeline and position from it)."""
    copy = folder / name
    with open(path, "rb") as source:
        pipeline = Pipeline(reader_stages(path, identity) or [("cat", ["cat"])], stdin=source)
    stream_to_file(pipeline, copy, what=f"reading {name}")
    return copy
