"""Restoring one dump into the running server: into a new database, or over a live one
by a safe swap (restore beside it, check, end its sessions, rename it aside, rename the
restored one into place) or in place. Shared by ``backupd restore`` and the single-database
point-in-time restore, which both end by restoring a dump into the live server.

The checks come first and touch nothing: which database is the destination, whether it may
be replaced (never a template or ``postgres``), and whether the user agreed to replace it.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from backupd import cancel
from backupd.dbnames import old_name, side_name
from backupd.docker_ctl import containers_stopped
from backupd.errors import Aborted, RefusedError, RestoreError, UsageError
from backupd.logging import get_logger
from backupd.postgres import (
    Server,
    database_access,
    database_info,
    drop_database,
    one,
    rename_database,
    set_allow_connections,
)
from backupd.repository import Backup, Repository
from backupd.restoring.builder import DatabaseBuilder, backup_access, manifest_info, restore_roles
from backupd.restoring.source import check_database_option

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.restore")

Confirm = Callable[[Backup, str], bool]


@dataclass
class RestoreResult:
    backup_id: str
    database: str
    seconds: float
    size: int
    roles_created: list[str]
    previous: str | None = None  # where the replaced database was kept
    mode: str = "new"

    @property
    def throughput(self) -> float:
        return self.size / self.seconds if self.seconds > 0 else 0.0


def restore_into(settings: Settings, repo: Repository, backup: Backup, server: Server, target: str,
                 exists: bool, jobs: int, in_place: bool, drop_old: bool) -> RestoreResult:
    started = time.monotonic()
    roles_created = restore_roles(repo, backup, server, settings.identity)
    builder = DatabaseBuilder(settings, repo, backup, server, jobs)
    previous, mode = None, "new"
    if not exists:
        builder.build(target, manifest_info(backup), backup_access(backup, None))
    elif in_place:
        mode = "in-place"
        _restore_in_place(builder, server, target)
    else:
        mode = "swap"
        previous = _restore_by_swap(builder, server, target, drop_old)
    seconds = time.monotonic() - started
    log.info("restore finished", id=backup.id, database=target, mode=mode, previous=previous,
             duration_seconds=round(seconds, 3), size_bytes=backup.size, roles_created=roles_created)
    return RestoreResult(backup.id, target, seconds, backup.size, roles_created, previous, mode)


def check_destination_options(into: str | None, over: str | None) -> None:
    """An empty name (a script's unset variable) must never fall back to the live database."""
    for option, name in (("--into", into), ("--over", over)):
        if name is not None and not name:
            raise UsageError(f"{option} needs a database name, and it was given an empty one")
    if into is not None and over is not None:
        raise UsageError("--into creates a new database and --over replaces an existing one: give one of them")


def restore_destination(backup: Backup, database: str | None, into: str | None, over: str | None) -> str:
    """Where the data goes: ``--into`` or ``--over`` when given, else the backup's own
    database. ``--database`` says whose backups are meant; a backup of another database
    is refused rather than restored over the one it names."""
    own = backup.doc.database
    check_database_option(backup, database, f"to restore {own}'s data over {database}, give "
                                            f"--over {shlex.quote(database or '')} --yes; into a new database, "
                                            f"--into NEWDB")
    named = into if into is not None else over
    if named is not None:
        return named
    if not own:
        raise UsageError("the file has no manifest naming its database: give --into NEWDB for a new database, "
                         "or --over NAME --yes to replace an existing one")
    return own



def check_consent(settings: Settings, backup: Backup, target: str, exists: bool, into: str | None, over: str | None,
                   yes: bool, confirm: Confirm | None) -> None:
    """``--into`` only creates, ``--over`` only replaces, and replacing needs a yes."""
    if exists and into:
        raise RefusedError(f"--into creates a new database, and {target!r} exists; to restore over it, "
                           f"give {_over_advice(backup, target)}; nothing was touched")
    if over and not exists:
        raise RefusedError(f"--over replaces an existing database, and {target!r} does not exist; to create it, "
                           f"give --into {shlex.quote(target)}; nothing was touched")
    if exists and not (yes or settings.force_restore or (confirm and confirm(backup, target))):
        raise RefusedError(f"database {target!r} exists: restoring over it needs {_over_advice(backup, target)} "
                           f"(or FORCE_RESTORE=true); nothing was touched")


# Databases that are never replaced: every new database is copied from a template (a
# replaced template1 puts the backup's tables into each later CREATE DATABASE), and
# ``postgres`` is where backupd and other tools connect to administer the server.
_NEVER_REPLACED = ("template0", "template1", "postgres")


def check_replaceable(admin: psycopg.Connection, target: str) -> None:
    """Refuse (exit 2, before anything is touched) to replace a template, by its name or by
    its ``datistemplate`` flag, or ``postgres``."""
    (is_template,) = one(admin.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (target,)))
    if target in _NEVER_REPLACED or is_template:
        what = "a template database" if is_template or target.startswith("template") else "the maintenance database"
        raise RefusedError(f"{target!r} is {what}: a restore never replaces it (restore into a new database "
                           f"with --into NEWDB instead); nothing was touched")


def _over_advice(backup: Backup, target: str) -> str:
    if target == backup.doc.database:
        return "--yes"
    return f"--over {shlex.quote(target)} --yes"


def _restore_by_swap(builder: DatabaseBuilder, server: Server, target: str, drop_old: bool) -> str | None:
    """Build the restored database beside the live one, check it, then swap names.
    Anything failing before the swap leaves the live database untouched."""
    side, old = side_name(target), old_name(target)
    with server.wait_connect("postgres") as admin:
        live_info, live_access = database_info(admin, target), database_access(admin, target)
    builder.build(side, live_info, backup_access(builder.backup, live_access), side_of=target)
    try:
        builder.check(side)
        if reason := cancel.requested():  # the last moment the live database is still untouched
            raise Aborted(reason)
        with cancel.shielded(), containers_stopped(builder.settings, "a database restore swaps"), \
                server.wait_connect("postgres") as admin:
            _swap(admin, target, side, old)
    except BaseException:
        builder.drop(side)
        raise
    if drop_old:
        builder.drop(old)
        return None
    return old


def _swap(admin: psycopg.Connection, live: str, side: str, old: str) -> None:
    (comment,) = one(admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                   "WHERE datname = %s", (live,)))
    set_allow_connections(admin, live, False)
    try:
        rename_database(admin, live, old)
    except psycopg.Error as err:
        set_allow_connections(admin, live, True)
        raise RestoreError(f"could not move {live!r} aside: {str(err).strip()}; it is untouched") from None
    try:
        rename_database(admin, side, live)
    except psycopg.Error as err:
        rename_database(admin, old, live)
        set_allow_connections(admin, live, True)
        raise RestoreError(f"could not move the restored database into place: {str(err).strip()}; "
                           f"{live!r} is back as it was") from None
    # In place, it is no side database any more: it takes the replaced database's comment.
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(live), sql.Literal(comment)))
    set_allow_connections(admin, old, True)  # so it can be inspected before it is dropped


def _restore_in_place(builder: DatabaseBuilder, server: Server, target: str) -> None:
    """End sessions, drop, recreate, restore: for disks without room for two copies.
    If this restore fails, the database is gone; the backup is still there."""
    if reason := cancel.requested():  # the last moment the live database is still untouched
        raise Aborted(reason)
    with cancel.shielded(), server.wait_connect("postgres") as admin:
        info, access = database_info(admin, target), backup_access(builder.backup, database_access(admin, target))
        set_allow_connections(admin, target, False)
        drop_database(admin, target)
    builder.build(target, info, access)
