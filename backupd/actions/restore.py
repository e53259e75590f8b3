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

from typing import TYPE_CHECKING

from backupd import leftovers
from backupd.errors import RefusedError, UsageError
from backupd.postgres import (
    Server,
    advisory_lock,
    database_exists,
)
from backupd.progress import TerminalProgress
from backupd.repository import Repository
from backupd.restoring.builder import restore_tools
from backupd.restoring.source import check_checksum, resolve_source
from backupd.restoring.swap import (
    Confirm,
    RestoreResult,
    check_consent,
    check_destination_options,
    check_replaceable,
    restore_destination,
    restore_into,
)
from backupd.targets.fetch import repository_holding

if TYPE_CHECKING:
    from backupd.settings import Settings

__all__ = ["RestoreResult", "run_restore"]




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
    check_destination_options(into, over)
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
            check_replaceable(admin, target)
        restore_tools(settings, admin, backup)  # a server no tools can serve is refused before roles are made
    check_consent(settings, backup, target, exists, into, over, yes, confirm)
    check_checksum(backup, TerminalProgress(f"checking {backup.id}", enabled=show_progress))
    with advisory_lock(server, "restore", target) as locked:
        if locked is None:
            raise RefusedError(f"another restore of {target!r} is running; nothing was touched")
        leftovers.drop_for(locked, target)  # what killed restores of it left: no restore of it runs now
        return restore_into(settings, repo, backup, server, target, exists, jobs, in_place, drop_old)

