"""Two-phase transactions a recovery leaves prepared: one whose ``PREPARE TRANSACTION`` is
replayed before the recovery stops, and whose ``COMMIT PREPARED`` (or ``ROLLBACK
PREPARED``) is not. The promoted server keeps it, holding its locks, until someone
finishes it by its gid. Read cheaply from the transaction records (pg_waldump) of the WAL
a restore copied: recovery to a time stops before the first commit or abort after it.
A transaction prepared before the base backup began is not seen here (it is in the
backup's own pg_twophase); ``pg_prepared_xacts`` on the restored server lists every one."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path

from backupd.pitr import wal
from backupd.process import run

_RECORD = re.compile(r"tx:\s*(\d+), lsn: \S+, prev \S+, desc: (PREPARE gid (.*): |(?:COMMIT|ABORT)_PREPARED (\d+): "
                     r"|COMMIT |ABORT )(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
TIMEOUT = 300.0


def left_prepared(waldump: Path, folder: Path, target: datetime | None) -> dict[int, str]:
    """The transactions (id -> gid) that recovery of the WAL in ``folder`` to ``target``
    (None: all of it) leaves prepared and unfinished."""
    names = sorted((n for n in (p.name for p in folder.iterdir()) if wal.SEGMENT.fullmatch(n)), key=lambda n: n[8:])
    pending: dict[int, str] = {}
    for _, group in groupby(names, key=lambda n: n[:8]):  # pg_waldump reads one timeline at a time
        run_of = list(group)
        _, out, _ = run("pg_waldump", [str(waldump), "--rmgr=Transaction", str(folder / run_of[0]),
                                       str(folder / run_of[-1])], env={"TZ": "UTC"}, timeout=TIMEOUT)
        if _replay(out.decode("utf-8", "replace"), target, pending):
            break
    return pending


def _replay(text: str, target: datetime | None, pending: dict[int, str]) -> bool:
    """Follows the records in ``text`` into ``pending``; True where recovery stops."""
    for match in _RECORD.finditer(text):
        xid, kind, gid, finished, stamp = match.groups()
        when = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        if gid is not None:
            pending[int(xid)] = gid
            continue
        if target is not None and when > target:
            return True  # recovery stops before this commit or abort
        if finished is not None:
            pending.pop(int(finished), None)
    return False


def note(pending: dict[int, str]) -> str:
    shown = ", ".join(f"'{gid}' (transaction {xid})" for xid, gid in sorted(pending.items())[:10])
    more = f" and {len(pending) - 10} more" if len(pending) > 10 else ""
    return (f"the recovery leaves {len(pending)} prepared transaction(s) unfinished, holding their locks: "
            f"{shown}{more}. Finish each on the restored server with COMMIT PREPARED or ROLLBACK PREPARED "
            "'<gid>' (see pg_prepared_xacts)")
