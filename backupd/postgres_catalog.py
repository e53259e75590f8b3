"""What a database looks like, read from and written to the server's catalogue: its
properties, settings and grants, creating, renaming and dropping one like it, and the
row counts of its tables. ``postgres.py`` connects; everything here takes a connection.

Identifiers are always quoted with ``psycopg.sql``; no SQL is built from strings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from backupd.errors import NotFoundError
from backupd.logging import get_logger

if TYPE_CHECKING:
    from backupd.manifests import Manifest

log = get_logger("backupd.postgres")

def one(cursor: psycopg.Cursor) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (psycopg types it as optional)."""
    row = cursor.fetchone()
    if row is None:
        raise psycopg.DataError("the query returned no row")
    return row


# Settings whose value is a list: each element must be quoted on its own (as pg_dumpall does).
_LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries",
                  "shared_preload_libraries", "local_preload_libraries", "unix_socket_directories"}


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
    owner: str = one(conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)))[0]
    return owner


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
    rows: int = one(conn.execute(query))[0]
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
