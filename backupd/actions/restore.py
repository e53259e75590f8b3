"""``backupd restore``: restore a backup into a new database, or over a live one.

Given the settings and the source (an id, ``latest`` or a path), returns a
``RestoreResult``. The checksum is checked before anything is touched; missing
roles are created from the matching globals dump (existing roles are never
altered); the new database gets the original's owner, encoding, locale and
settings. A failed restore drops the database it created, so nothing is left
half-restored.

Over an existing database, the default is a safe swap: restore into a side
database, check it against the manifest, end the live database's sessions, rename
it aside and rename the restored one into place. Anything failing before the
swap leaves the live database untouched.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from backupd import cancel, leftovers
from backupd.dbnames import old_name, side_name
from backupd.docker_ctl import containers_stopped
from backupd.errors import Aborted, RefusedError, RestoreError, UsageError
from backupd.logging import get_logger
from backupd.postgres import (
    Server,
    advisory_lock,
    database_access,
    database_exists,
    database_info,
    drop_database,
    one,
    rename_database,
    set_allow_connections,
)
from backupd.progress import TerminalProgress
from backupd.repository import Backup, Repository
from backupd.restoring.builder import DatabaseBuilder, backup_access, manifest_info, restore_roles, restore_tools
from backupd.restoring.source import check_checksum, check_database_option, resolve_source
from backupd.targets.fetch import repository_holding

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.restore")


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



Confirm = Callable[[Backup, str], bool]


def run_restore(settings: Settings, source: str, database: str | None = None, into: str | None = None, jobs: int = 1,
                yes: bool = False, drop_old: bool = False, in_place: bool = False,
                confirm: Confirm | None = None, show_progress: bool | None = None,
                over: str | None = None, instance: str | None = None) -> RestoreResult:
    """Restore ``source`` into its own database (a new one when it is gone), into a new
    database ``into``, or over the existing database ``over``. Over an existing database
    only with ``yes`` (or FORCE_RESTORE, or ``confirm`` answering yes): by a safe swap, or
    ``in_place``. ``database`` only selects backups and is never the destination. Raises
    RefusedError (exit 2), with nothing touched, when the destination is not the one the
    user named or an existing database would be touched without consent."""
    _check_destination_options(into, over)
    repo = Repository(settings.backup_dir)
    backup = resolve_source(repo, source, database, settings, instance)
    repo = repository_holding(repo, backup)  # another instance's: fetched apart, with its roles dump
    if backup.kind != "database":
        raise UsageError(f"{backup.id} is a {backup.kind} backup, not a database backup")
    target = restore_destination(backup, database, into, over)
    server = Server.from_settings(settings)
    with server.wait_connect("postgres") as admin:
        exists = database_exists(admin, target)
        if exists:
            _check_replaceable(admin, target)
        restore_tools(settings, admin, backup)  # a server no tools can serve is refused before roles are made
    _check_consent(settings, backup, target, exists, into, over, yes, confirm)
    check_checksum(backup, TerminalProgress(f"checking {backup.id}", enabled=show_progress))
    with advisory_lock(server, "restore", target) as locked:
        if locked is None:
            raise RefusedError(f"another restore of {target!r} is running; nothing was touched")
        leftovers.drop_for(locked, target)  # what killed restores of it left: no restore of it runs now
        return _restore(settings, repo, backup, server, target, exists, jobs, in_place, drop_old)


def _restore(settings: Settings, repo: Repository, backup: Backup, server: Server, target: str, exists: bool, jobs: int,
             in_place: bool, drop_old: bool) -> RestoreResult:
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


def _check_destination_options(into: str | None, over: str | None) -> None:
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
    own: str | None = backup.manifest.get("database")
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



def _check_consent(settings: Settings, backup: Backup, target: str, exists: bool, into: str | None, over: str | None,
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


def _check_replaceable(admin: psycopg.Connection, target: str) -> None:
    """Refuse (exit 2, before anything is touched) to replace a template, by its name or by
    its ``datistemplate`` flag, or ``postgres``."""
    (is_template,) = one(admin.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (target,)))
    if target in _NEVER_REPLACED or is_template:
        what = "a template database" if is_template or target.startswith("template") else "the maintenance database"
        raise RefusedError(f"{target!r} is {what}: a restore never replaces it (restore into a new database "
                           f"with --into NEWDB instead); nothing was touched")


def _over_advice(backup: Backup, target: str) -> str:
    if target == backup.manifest.get("database"):
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
