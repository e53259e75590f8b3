"""What backupd asks the server for point-in-time recovery: who it is, where its WAL is,
and the replication slot that keeps the WAL until it reached BACKUP_DIR."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

from backupd.errors import RefusedError
from backupd.pgtools import Tools, ToolsMissing, installed
from backupd.pitr import wal

PITR_TOOLS = ("pg_receivewal", "pg_basebackup")


@dataclass
class ClusterInfo:
    system_identifier: str
    segment_size: int
    major: int
    timeline: int


@dataclass
class Slot:
    name: str
    wal_status: str | None  # reserved, extended, unreserved, lost
    restart_lsn: int | None
    active_pid: int | None

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost" or self.restart_lsn is None


def cluster_info(conn: psycopg.Connection) -> ClusterInfo:
    row = conn.execute("SELECT (SELECT system_identifier::text FROM pg_control_system()), "
                       "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
                       "current_setting('server_version_num')::int, pg_is_in_recovery(), "
                       "(SELECT timeline_id FROM pg_control_checkpoint())").fetchone()
    assert row is not None
    system_identifier, segment_size, version, in_recovery, timeline = row
    if in_recovery:
        raise RefusedError("point-in-time recovery streams from a primary; this server is a standby")
    return ClusterInfo(system_identifier, int(segment_size), version // 10000, int(timeline))


def current_lsn(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return wal.parse_lsn(row[0])


def slot(conn: psycopg.Connection, name: str) -> Slot | None:
    row = conn.execute("SELECT wal_status, restart_lsn::text, active_pid FROM pg_replication_slots "
                       "WHERE slot_name = %s AND slot_type = 'physical'", (name,)).fetchone()
    if row is None:
        return None
    return Slot(name, row[0], wal.parse_lsn(row[1]) if row[1] else None, row[2])


def create_slot(conn: psycopg.Connection, name: str) -> None:
    # Reserving at once: the slot holds WAL from now on, before the receiver first connects.
    conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))


def drop_slot(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def pitr_tools(pg_bindir: Path, major: int) -> Tools:
    """pg_receivewal and pg_basebackup of the server's own major: PostgreSQL supports them
    with servers of their own major only."""
    for tools in installed(pg_bindir):
        if tools.major == major and all((tools.bindir / tool).exists() for tool in PITR_TOOLS):
            return tools
    raise ToolsMissing(f"point-in-time recovery of a PostgreSQL {major} server needs pg_receivewal and "
                       f"pg_basebackup of major {major} under PG_BINDIR={pg_bindir}: install "
                       f"postgresql-client-{major} (or use a backupd image that has it)")
