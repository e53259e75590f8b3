"""What a WAL segment proves, read by ``pg_waldump`` of the server's major from its plain
text: the time of its newest commit (or abort), and where its WAL ends. The recovery
window is built from this, never from a file's time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backupd.pgtools import installed
from backupd.pitr import wal
from backupd.process import run

# COMMIT <time>, ABORT <time>, COMMIT_PREPARED <xid>: <time>, ABORT_PREPARED <xid>: <time>
_COMMIT = re.compile(r"desc: (?:COMMIT|ABORT)(?:_PREPARED \d+:)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
# "error in WAL record at 0/26DBC88: invalid record length at 0/26DBD00: ...": the WAL ends
# at the last position named (where the next record would have begun).
_ENDS_AT = re.compile(r"error in WAL record at ([0-9A-F]+/[0-9A-F]+)(?:: .*? at ([0-9A-F]+/[0-9A-F]+))?")
TIMEOUT = 300.0


@dataclass(frozen=True)
class Proof:
    end_lsn: int  # where the valid WAL in the segment ends
    last_commit: datetime | None  # None: no transaction ended in it


def tool(pg_bindir: Path, major: int) -> Path | None:
    """``pg_waldump`` of exactly ``major`` (it reads only its own major's WAL), or None."""
    found = next((t for t in installed(pg_bindir) if t.major == major and (t.bindir / "pg_waldump").exists()), None)
    return found.bindir / "pg_waldump" if found else None


def _dump(waldump: Path, segment: Path) -> tuple[str, str]:
    _, out, err = run("pg_waldump", [str(waldump), "--rmgr=Transaction", str(segment), str(segment)],
                      env={"TZ": "UTC"}, timeout=TIMEOUT)
    return out.decode("utf-8", "replace"), err


def newest_commit(waldump: Path, segment: Path) -> datetime | None:
    """The time of the newest commit or abort in the plain ``segment``, if any."""
    stamps = _COMMIT.findall(_dump(waldump, segment)[0])
    return max((datetime.fromisoformat(s).replace(tzinfo=UTC) for s in stamps), default=None)


def newest_commit_before(waldump: Path, folder: Path, start: str, stop: str) -> datetime | None:
    """The time of the newest commit or abort among the records from ``start`` to ``stop``
    (LSNs) in the segments in ``folder``: a base backup is consistent once it has replayed
    to ``stop``, so no target before this moment can stop its recovery (PostgreSQL
    refuses one: "requested recovery stop point is before consistent recovery point")."""
    _, out, _ = run("pg_waldump", [str(waldump), "--rmgr=Transaction", f"--path={folder}", f"--start={start}",
                                   f"--end={stop}"], env={"TZ": "UTC"}, timeout=TIMEOUT)
    stamps = _COMMIT.findall(out.decode("utf-8", "replace"))
    return max((datetime.fromisoformat(s).replace(tzinfo=UTC) for s in stamps), default=None)


def prove(waldump: Path, segment: Path, name: str, segment_size: int) -> Proof:
    """What the plain file ``segment`` (the WAL file called ``name``) proves. A complete
    segment's WAL runs to its end; a partial one's to where pg_waldump found no next record."""
    out, err = _dump(waldump, segment)
    stamps = _COMMIT.findall(out)
    newest = max((datetime.fromisoformat(s).replace(tzinfo=UTC) for s in stamps), default=None)
    _, segno = wal.parse_segment(name.removesuffix(".partial"), segment_size)
    end = (segno + 1) * segment_size
    if name.endswith(".partial"):
        match = _ENDS_AT.search(err)
        end = wal.parse_lsn(match.group(2) or match.group(1)) if match else segno * segment_size
    return Proof(end, newest)
