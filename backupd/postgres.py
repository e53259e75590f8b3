"""Talking to PostgreSQL: connection settings for psycopg and libpq tools, waiting for
the server, listing databases, what a database looks like, and creating one like it.

Identifiers are always quoted with ``psycopg.sql``; no SQL is built from strings.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from backupd import cancel
from backupd.errors import Aborted, ConnectionFailed, NotFoundError
from backupd.logging import get_logger

if TYPE_CHECKING:
    from backupd.manifests import Manifest


def one(cursor: psycopg.Cursor) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (psycopg types it as optional)."""
    row = cursor.fetchone()
    if row is None:
        raise psycopg.DataError("the query returned no row")
    return row


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

# Settings whose value is a list: each element must be quoted on its own (as pg_dumpall does).
_LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries",
                  "shared_preload_libraries", "local_preload_libraries", "unix_socket_directories"}


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
    def from_settings(cls, settings) -> Server:
        return cls(settings.db_host, settings.db_port, settings.db_user, settings.password,
                   settings.db_sslmode, settings.db_wait_timeout)

    @classmethod
    def for_verification(cls, settings) -> Server:
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


@dataclass
class DatabaseInfo:
    """What CREATE DATABASE needs to recreate a database as it was."""

    owner: str
    encoding: str
    collate: str
    ctype: str
    locale_provider: str = "libc"
    icu_locale: str | None = None
    settings: list[str] = field(default_factory=list)  # "name=value", as in pg_db_role_setting
    acl: list[str] = field(default_factory=list)
    connection_limit: int = -1

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatabaseInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def database_info(conn: psycopg.Connection, name: str) -> DatabaseInfo:
    version = conn.info.server_version
    provider = "d.datlocprovider::text" if version >= 150000 else "'c'"
    icu = "d.datlocale" if version >= 170000 else ("d.daticulocale" if version >= 150000 else "NULL")
    query = sql.SQL(
        "SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, "
        "{provider}, {icu}, COALESCE(d.datacl::text[], '{{}}'), d.datconnlimit, "
        "COALESCE((SELECT s.setconfig FROM pg_db_role_setting s "
        "          WHERE s.setdatabase = d.oid AND s.setrole = 0), '{{}}') "
        "FROM pg_database d WHERE d.datname = %s"
    ).format(provider=sql.SQL(provider), icu=sql.SQL(icu))
    row = conn.execute(query, (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"database {name!r} does not exist")
    owner, encoding, collate, ctype, prov, icu_locale, acl, connlimit, settings = row
    return DatabaseInfo(owner=owner, encoding=encoding, collate=collate, ctype=ctype,
                        locale_provider="icu" if prov == "i" else "libc", icu_locale=icu_locale,
                        settings=list(settings), acl=list(acl), connection_limit=connlimit)


def role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def split_setting(entry: str) -> tuple[str, list[str]]:
    """``search_path="$user", public`` -> ("search_path", ['$user', 'public']); other settings keep one value."""
    name, _, value = entry.partition("=")
    if name.lower() not in _LIST_SETTINGS:
        return name, [value]
    items, current, quoted, i = [], [], False, 0
    while i < len(value):
        ch = value[i]
        if ch == '"':
            if quoted and i + 1 < len(value) and value[i + 1] == '"':
                current.append('"')
                i += 1
            else:
                quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current).strip())
    return name, [item for item in items if item != ""]


def create_database_like(conn: psycopg.Connection, name: str, info: DatabaseInfo, owner: str | None = None,
                         with_settings: bool = True) -> None:
    """CREATE DATABASE ``name`` with the encoding, locale, owner and (unless told otherwise)
    the settings of ``info``."""
    options = [
        sql.SQL("TEMPLATE template0"),
        sql.SQL("OWNER {}").format(sql.Identifier(owner or info.owner)),
        sql.SQL("ENCODING {}").format(sql.Literal(info.encoding)),
        sql.SQL("LC_COLLATE {}").format(sql.Literal(info.collate)),
        sql.SQL("LC_CTYPE {}").format(sql.Literal(info.ctype)),
    ]
    if info.locale_provider == "icu" and info.icu_locale:
        keyword = "LOCALE" if conn.info.server_version >= 170000 else "ICU_LOCALE"
        options.append(sql.SQL("LOCALE_PROVIDER icu {} {}").format(sql.SQL(keyword), sql.Literal(info.icu_locale)))
    conn.execute(sql.SQL("CREATE DATABASE {} ").format(sql.Identifier(name)) + sql.SQL(" ").join(options))
    if with_settings:
        apply_database_settings(conn, name, info)


def apply_database_settings(conn: psycopg.Connection, name: str, info: DatabaseInfo) -> None:
    """``ALTER DATABASE ... SET`` for each of ``info``'s settings."""
    for entry in info.settings:
        setting, values = split_setting(entry)
        conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(name), sql.Identifier(setting), sql.SQL(", ").join(sql.Literal(v) for v in values)))


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """DROP DATABASE ... WITH (FORCE): ends the sessions still inside it."""
    force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)) + force)


@dataclass(frozen=True)
class TableCount:
    schema: str
    name: str
    oid: int
    rows: int | None

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "rows": self.rows}


# Tables whose rows a dump can hold: ordinary tables and leaf partitions (relkind 'r'),
# not partitioned parents (no storage), views, foreign tables, temporary tables or
# tables that belong to an extension (pg_dump leaves their data out).
_TABLES_WITH_DATA = """
SELECT n.nspname, c.relname, c.oid::bigint, c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""


def tables_with_data(conn: psycopg.Connection) -> list[tuple[str, str, int, int]]:
    return [tuple(row) for row in conn.execute(_TABLES_WITH_DATA).fetchall()]


def count_rows(conn: psycopg.Connection, mode: str) -> Iterator[TableCount]:
    """Row counts per table: ``exact`` counts in the connection's current snapshot,
    ``estimate`` reads the planner's figure, ``off`` yields nothing."""
    if mode == "off":
        return
    for schema, name, oid, estimate in tables_with_data(conn):
        rows = count_or_unknown(conn, schema, name) if mode == "exact" else max(estimate, 0)
        yield TableCount(schema, name, oid, rows)


def count_or_unknown(conn: psycopg.Connection, schema: str, name: str) -> int | None:
    """The table's own rows, or None when they cannot be counted (a lock not granted in
    time, a privilege missing, a damaged page): the reason is logged, and the dump that
    pg_dump completes is kept. The count runs in a savepoint, so that its failure does not
    abort the transaction whose snapshot pg_dump imports. A cancel (a signal, the backup's
    timeout) and a lost connection are not a count's failure: they end the backup."""
    try:
        with conn.transaction():
            return count_table_rows(conn, schema, name)
    except psycopg.errors.QueryCanceled:
        raise
    except psycopg.Error as err:
        if conn.broken or conn.closed:
            raise
        log.warning("the rows of a table could not be counted; its count is recorded as unknown",
                    table=f"{schema}.{name}", error=str(err).strip())
        return None


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

    def __exit__(self, *exc) -> None:
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


DATABASE_PRIVILEGES = ("CONNECT", "CREATE", "TEMPORARY")


@dataclass(frozen=True)
class Grant:
    """One database-level privilege; a grantee of None is PUBLIC."""

    grantee: str | None
    privilege: str
    grantable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"grantee": self.grantee, "privilege": self.privilege, "grantable": self.grantable}


@dataclass(frozen=True)
class DatabaseAccess:
    """Who may connect, create and make temporary tables, and how many at once: what
    ``pg_dump --create`` carries besides the data. ``grants`` None: the defaults (no ACL)."""

    grants: tuple[Grant, ...] | None
    connection_limit: int = -1
    owner: str | None = None  # the owner the grants were read with: its grants go to the owner here


def database_access(conn: psycopg.Connection, name: str) -> DatabaseAccess:
    row = conn.execute("SELECT datacl IS NOT NULL, datconnlimit FROM pg_database WHERE datname = %s",
                       (name,)).fetchone()
    if row is None:
        raise NotFoundError(f"database {name!r} does not exist")
    has_acl, limit = row
    if not has_acl:
        return DatabaseAccess(None, limit, owner_of(conn, name))
    rows = conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
        "       a.privilege_type, a.is_grantable "
        "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s ORDER BY 1, 2", (name,)).fetchall()
    return DatabaseAccess(tuple(Grant(*row) for row in rows), limit, owner_of(conn, name))


def owner_of(conn: psycopg.Connection, name: str) -> str:
    return one(conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)))[0]


def apply_database_access(conn: psycopg.Connection, name: str, access: DatabaseAccess) -> None:
    """Make ``name``'s grants and connection limit those of ``access``, as pg_dump --create
    does: revoke what a new database has (PUBLIC's and the owner's defaults), then grant.
    The recorded owner's grants go to the database's owner here (another role when the
    recorded one does not exist); a grant to a role that does not exist is left out, and
    said."""
    target = sql.Identifier(name)
    conn.execute(sql.SQL("ALTER DATABASE {} WITH CONNECTION LIMIT {}").format(
        target, sql.Literal(int(access.connection_limit))))
    if access.grants is None:
        return  # the defaults, which a new database has already
    owner = owner_of(conn, name)
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC, {}").format(target, sql.Identifier(owner)))
    for grant in access.grants:
        grantee = owner if grant.grantee is not None and grant.grantee == access.owner else grant.grantee
        if grant.privilege not in DATABASE_PRIVILEGES:
            raise ValueError(f"{grant.privilege!r} is not a database privilege")
        if grantee is not None and not role_exists(conn, grantee):
            log.warning("a grant on the database is left out: its role does not exist here", database=name,
                        role=grantee, privilege=grant.privilege)
            continue
        conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
            sql.SQL(grant.privilege), target, sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
            sql.SQL(" WITH GRANT OPTION") if grant.grantable else sql.SQL("")))


def end_sessions(conn: psycopg.Connection, name: str) -> int:
    rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall()
    return len(rows)


def set_allow_connections(conn: psycopg.Connection, name: str, allowed: bool) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
        sql.Identifier(name), sql.SQL("true" if allowed else "false")))


def rename_database(conn: psycopg.Connection, name: str, new_name: str, attempts: int = 20) -> None:
    """Rename, ending the sessions that still hold the database (they may reconnect in between)."""
    for attempt in range(attempts):
        end_sessions(conn, name)
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name),
                                                                          sql.Identifier(new_name)))
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)


def count_table_rows(conn: psycopg.Connection, schema: str, name: str) -> int:
    """The table's own rows (``ONLY``): not its inheritance children's, which the manifest
    counts on their own (and which may be left out of a dump, or be foreign tables)."""
    query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
    (rows,) = one(conn.execute(query))
    return rows


def compare_with_manifest(conn: psycopg.Connection, manifest: Manifest) -> list[str]:
    """What differs between a restored database and the manifest of its backup: tables
    whose data the dump holds must exist, and with exact counts, hold as many rows."""
    from backupd.manifests import DumpManifest

    if not isinstance(manifest, DumpManifest):
        return []  # a file restored without its manifest: nothing recorded to compare
    present = {(schema, name) for schema, name, _, _ in tables_with_data(conn)}
    exact = manifest.row_counts == "exact"
    problems = []
    for table in manifest.tables:
        key = (table.schema_, table.name)
        label = f"{table.schema_}.{table.name}"
        if key not in present:
            problems.append(f"table {label} is missing")
        elif exact and table.rows is not None:
            rows = count_table_rows(conn, *key)
            if rows != table.rows:
                problems.append(f"table {label} has {rows} rows, the manifest says {table.rows}")
    return problems
