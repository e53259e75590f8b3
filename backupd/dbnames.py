"""Names of the databases backupd creates itself: the side and old databases
of a restore, scratch databases of a verification. Each fits PostgreSQL's 63 bytes,
never equals the live name, and is recognised by ``postgres.is_scratch_database``."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

MAX_BYTES = 63


def _stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%S")


def short_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


def _with_marker(base: str, marker: str) -> str:
    name = base + marker
    if len(name.encode("utf-8")) <= MAX_BYTES:
        return name
    room = MAX_BYTES - len(marker.encode("utf-8")) - 9  # "_" and 8 hex digits
    short = base.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{short}_{short_hash(base)}{marker}"


def side_name(database: str, when: datetime | None = None) -> str:
    """Where a restore over ``database`` is built before the swap."""
    return _with_marker(database, f"__restoring_{_stamp(when)}")


def old_name(database: str, when: datetime | None = None) -> str:
    """What the live database is renamed to when the restored one takes its place."""
    return _with_marker(database, f"__before_restore_{_stamp(when)}")


def scratch_prefix(database: str) -> str:
    return f"backupd_verify_{short_hash(database)}_"


def scratch_name(database: str, when: datetime | None = None) -> str:
    """A verification's throw-away database."""
    return scratch_prefix(database) + _stamp(when)
