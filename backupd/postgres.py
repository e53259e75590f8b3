"""Talking to PostgreSQL: connection settings for psycopg and libpq tools, waiting for
the server, listing databases, the exported snapshot and the advisory locks. What a
database looks like (and creating one like it) is in ``postgres_catalog.py``.

Identifiers are always quoted with ``psycopg.sql``; no SQL is built from strings.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from backupd import cancel
from backupd.errors import Aborted, ConnectionFailed, NotFoundError
from backupd.logging import get_logger
from backupd.postgres_catalog import (
    DATABASE_PRIVILEGES,
    DatabaseAccess,
    DatabaseInfo,
    Grant,
    TableCount,
    apply_database_access,
    apply_database_settings,
    compare_with_manifest,
    count_or_unknown,
    count_rows,
    count_table_rows,
    create_database_like,
    database_access,
    database_info,
    drop_database,
    end_sessions,
    one,
    owner_of,
    rename_database,
    role_exists,
    set_allow_connections,
    split_setting,
    tables_with_data,
)

if TYPE_CHECKING:
    from backupd.settings import Settings

# The catalogue's queries moved to postgres_catalog.py; they are still importable from here.
__all__ = [
    "DATABASE_PRIVILEGES", "DatabaseAccess", "DatabaseInfo", "Grant", "TableCount", "apply_database_access",
    "apply_database_settings", "compare_with_manifest", "count_or_unknown", "count_rows", "count_table_rows",
    "create_database_like", "database_access", "database_info", "drop_database", "end_sessions", "one",
    "owner_of", "rename_database", "role_exists", "set_allow_connections", "split_setting", "tables_with_data",
]

log = get_logger("backupd.postgres")

# Databases that backupd creates itself: never backed up, never listed under "all".
# Exactly the names dbnames.py makes (marker and timestamp at the end), so a user's database
# that merely contains "__restoring_" is still backed up.
_STAMP = r"\d{8}T\d{6}$"
SCRATCH_PATTERNS = (re.compile(rf"^backupd_verify_[0-9a-f]{{8}}_{_STAMP}"), re.compile(rf"__restoring_{_STAMP}"),
                    re.compile(rf"__before_restore_{_STAMP}"))

# Connection failures that waiting will not cure: fail at once instead of retrying.
_PERMANENT = ("password authentication failed", "does not exist", "no pg_hba.conf entry",
              "authentication failed", "permission denied", "certificate", "SSL is not enabled")


@dataclass(frozen=True)
class Server:
    """Where to connect; the password never leaves this object except through env or kwargs."""

    host: str
    port: int
    user: str
    password: str | None
    sslmode: str = "prefer"
    wait_timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Server:
        return cls(settings.db_host, settings.db_port, settings.db_user, settings.password,
                   settings.db_sslmode, settings.db_wait_timeout)

    @classmethod
    def for_verification(cls, settings: Settings) -> Server:
        """VERIFY_DB_* where set (restore drills away from production), else DB_*."""
        password = settings.verify_db_password.get_secret_value() if settings.verify_db_password else settings.password
        return cls(settings.verify_db_host or settings.db_host, settings.verify_db_port or settings.db_port,
                   settings.verify_db_user or settings.db_user, password, settings.db_sslmode, settings.db_wait_timeout)

    def libpq_env(self, dbname: str | None = None) -> dict[str, str]:
        """Environment for pg_dump, pg_restore and psql. The database name goes through
        PGDATABASE too, so a name containing ``=`` is never read as a connection string."""
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
               "PGSSLMODE": self.sslmode, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "backupd"}
        env["PGPASSWORD"] = self.password or ""
        if dbname is not None:
            env["PGDATABASE"] = dbname
        return env

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def connect(self, dbname: str = "postgres", autocommit: bool = True,
                connect_timeout: int = 10) -> psycopg.Connection:
        """Connect once; raises psycopg.OperationalError."""
        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=dbname, sslmode=self.sslmode, connect_timeout=connect_timeout,
                               application_name="backupd", autocommit=autocommit)

    def wait_connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        """Connect, retrying with backoff up to ``wait_timeout`` while the server is unreachable
        or not yet ready. Permanent failures (bad password, missing database) fail at once."""
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.25
        while True:
            try:
                return self.connect(dbname, autocommit)
            except psycopg.OperationalError as err:
                message = _first_line(err)
                if any(p in message for p in _PERMANENT):
                    if "does not exist" in message and f'"{dbname}"' in message:
                        raise NotFoundError(f"database {dbname!r} does not exist on {self.host}:{self.port}") from None
                    raise ConnectionFailed(
                        f"cannot connect to {self.host}:{self.port} as {self.user!r}: {message}") from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectionFailed(
                        f"server {self.host}:{self.port} not reachable within {self.wait_timeout:g}s: {message}"
                    ) from None
                wait = min(delay, remaining)  # the last try comes at the deadline, not before it
                log.info("waiting for server", host=self.host, port=self.port, retry_in=round(wait, 2), reason=message)
                time.sleep(wait)
                if reason := cancel.requested():
                    raise Aborted(reason) from None
                delay = min(delay * 2, 5.0)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1].strip() if text else type(err).__name__


def is_scratch_database(name: str) -> bool:
    return any(p.search(name) for p in SCRATCH_PATTERNS)


def list_databases(conn: psycopg.Connection, exclude: tuple[str, ...] = ()) -> list[str]:
    """Every database that accepts connections, templates and backupd's own scratch databases excluded."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"
    ).fetchall()
    return [name for (name,) in rows if name not in exclude and not is_scratch_database(name)]


def stranded_by_a_swap(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(live name, its name now) for every database that a restore's swap moved aside and
    did not finish: ``<db>__before_restore_<time>`` with connections still off (a finished swap
    turns them on again) while ``<db>`` itself is gone. A kill -9 between the two renames
    leaves exactly this; the app then finds no database, and ``all`` would skip it silently."""
    rows = conn.execute("SELECT datname, datallowconn FROM pg_database").fetchall()
    names = {name for name, _ in rows}
    stranded = []
    for name, allowed in rows:
        match = re.fullmatch(r"(.+)__before_restore_\d{8}T\d{6}", name)
        if match and not allowed and match.group(1) not in names:
            stranded.append((match.group(1), name))
    return stranded


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def server_version(conn: psycopg.Connection) -> tuple[int, str]:
    """(server_version_num, human version)"""
    num = int(one(conn.execute("SHOW server_version_num"))[0])
    text = one(conn.execute("SHOW server_version"))[0]
    return num, text


class ExportedSnapshot:
    """A REPEATABLE READ transaction that exports its snapshot for ``pg_dump --snapshot``.

    The transaction must stay open until pg_dump has finished importing it, so the
    caller keeps this open for the whole dump; the row counts run inside it and so
    see exactly the rows that pg_dump dumps.
    """

    def __init__(self, server: Server, dbname: str, lock_wait_seconds: float | None = None):
        self.conn = server.wait_connect(dbname, autocommit=False)
        self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # A database's own timeouts are for its app, not for a backup: the row counts may run
        # long, and the transaction idles while pg_dump works (pg_dump unsets them for itself).
        self.conn.execute("SET LOCAL statement_timeout = 0")
        self.conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        if lock_wait_seconds:
            # Counting rows takes the same locks as pg_dump: it must not queue longer either.
            timeout = sql.Literal(f"{int(lock_wait_seconds * 1000)}ms")
            self.conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(timeout))
        (self.snapshot_id,) = one(self.conn.execute("SELECT pg_export_snapshot()"))

    def close(self) -> None:
        try:
            self.conn.rollback()
        except psycopg.Error:
            pass  # the server went away: the transaction is gone with it
        finally:
            self.conn.close()

    def __enter__(self) -> ExportedSnapshot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _lock_key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big", signed=True)


@contextmanager
def advisory_lock(server: Server, job: str, name: str,
                  wait_seconds: float = 0.0) -> Iterator[psycopg.Connection | None]:
    """Hold a session-level advisory lock keyed by (job, database) on the server itself,
    so two daemons pointed at one PostgreSQL never run the same job on the same
    database at once. Yields the connection holding it (to the ``postgres`` database, free
    for other queries, so a job needs no second one), or None when another holder kept it
    for ``wait_seconds``."""
    conn = server.wait_connect("postgres")
    try:
        keys = (_lock_key(f"backupd:{job}"), _lock_key(name))
        deadline = time.monotonic() + wait_seconds
        while True:
            (taken,) = one(conn.execute("SELECT pg_try_advisory_lock(%s, %s)", keys))
            if taken or time.monotonic() >= deadline:
                break
            if reason := cancel.requested():
                raise Aborted(reason)
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))
        yield conn if taken else None
    finally:
        conn.close()  # ending the session releases the lock


