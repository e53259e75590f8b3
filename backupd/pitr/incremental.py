"""Whether the next base backup can be incremental, and against which: PostgreSQL 17 and
newer take one (``pg_basebackup --incremental``) when the server summarizes its WAL
(``summarize_wal = on``), against the server's ``backup_manifest`` of the newest base
backup of the cluster whose chain is whole. Otherwise the backup is a full one, and the
reason is logged once per cluster and reason, not at every run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from backupd.logging import get_logger
from backupd.pitr.chains import complete

if TYPE_CHECKING:
    from backupd.pitr.cluster import ClusterInfo
    from backupd.pitr.store import Base, Store

log = get_logger("pitr")

FIRST_MAJOR = 17
_TOLD: set[tuple[str, str]] = set()


def incremental_parent(conn: psycopg.Connection, info: ClusterInfo, store: Store) -> Base | None:
    """The base backup to take the next one against; None: take a full one."""
    if info.major < FIRST_MAJOR:
        _tell_once(info, "old-server", f"PostgreSQL {info.major} cannot take incremental base backups "
                   f"(PostgreSQL {FIRST_MAJOR} and newer can): PITR_INCREMENTAL_SCHEDULE takes full ones")
        return None
    if not summarizes_wal(conn):
        _tell_once(info, "summarize-wal-off", "the server does not summarize its WAL (summarize_wal is off): "
                   "PITR_INCREMENTAL_SCHEDULE takes full base backups until it is turned on (see the README)")
        return None
    return newest_parent(store)


def summarizes_wal(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT current_setting('summarize_wal', true)").fetchone()
    return row is not None and row[0] == "on"


def newest_parent(store: Store) -> Base | None:
    """The newest base backup with its server's manifest kept and its whole chain intact by
    size: a parent that is damaged or incomplete would give a chain no restore can use."""
    bases = store.bases()
    for base in bases:
        if base.doc.server_manifest and base.server_manifest_path.is_file() and complete(base, bases):
            return base
    return None


def _tell_once(info: ClusterInfo, reason: str, message: str) -> None:
    if (key := (info.system_identifier, reason)) not in _TOLD:
        _TOLD.add(key)
        log.warning(message, cluster=info.system_identifier)
