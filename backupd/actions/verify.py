"""``backupd verify``: prove that backups restore.

Given the settings and optionally a source (an id, ``latest`` or a path) and a
database; without a source, the newest backup of each database. For each one:
check the stored file's sha256 against the manifest, restore it into a scratch
database (on the VERIFY_DB_* server when one is set), compare its tables and row
counts with the manifest, optionally run VERIFY_SQL, and always drop the scratch
database. The result is recorded in ``<id>.state.json``. The globals dump that
goes with a backup is verified too: it parses and its missing roles could be
created (in a transaction that is rolled back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from backupd import cancel
from backupd.dbnames import scratch_name, scratch_prefix
from backupd.errors import Aborted, BackupdError, NotFoundError, RestoreError, StorageError
from backupd.logging import get_logger
from backupd.postgres import Server, advisory_lock, drop_database
from backupd.repository import Backup, Problem, Repository, decode_name, iso, storage_error, utc_now
from backupd.restoring.builder import DatabaseBuilder, manifest_info, read_decompressed, restore_roles, restore_tools
from backupd.restoring.source import check_checksum, check_database_option, resolve_source
from backupd.roles import create_missing_roles

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.verify")

PASSED, FAILED, UNVERIFIABLE, SKIPPED = "passed", "failed", "unverifiable", "skipped"


@dataclass
class VerifyOutcome:
    backup_id: str
    database: str
    result: str
    reason: str | None
    seconds: float
    unrecorded: str | None = None  # why the result could not be written into the repository

    @property
    def failed(self) -> bool:
        return self.result == FAILED


def run_verify(settings: Settings, source: str | None = None, database: str | None = None) -> list[VerifyOutcome]:
    repo = Repository(settings.backup_dir)
    unreadable: list[tuple[Path, str, str]] = []
    if source:
        backup = resolve_source(repo, source, database, settings)
        check_database_option(backup, database, f"leave --database out to verify {backup.id}")
        backups = [backup]
    else:
        found, problems = repo.inventory(database)
        newest: dict[str, Backup] = {}
        for backup in found:
            newest.setdefault(backup.database, backup)
        backups = list(newest.values())
        unreadable = _unreadable_databases(repo, problems)
        if not backups and not unreadable:
            raise NotFoundError(f"no backups to verify in {repo.root}" + (f" for {database!r}" if database else ""))
    outcomes = [verify_backup(settings, repo, backup) for backup in backups]
    outcomes += [_cannot_read(path, name, detail) for path, name, detail in unreadable]
    for globals_id in sorted({b.globals_id for b in backups if b.globals_id}):
        try:
            outcomes.append(verify_globals(settings, repo, repo.find(globals_id, kind="globals")))
        except NotFoundError:
            log.warning("the globals dump of a verified backup is gone", globals_id=globals_id)
    return outcomes


def _unreadable_databases(repo: Repository, problems: list[Problem]) -> list[tuple[Path, str, str]]:
    """(folder, database, why) for each database folder that cannot be read: its backups
    are hidden, so it fails verification instead of being passed over (never "no backups").
    An unreadable manifest is not here: list shows it and /healthz warns."""
    return [(problem.path, decode_name(problem.path.name), problem.detail) for problem in problems
            if problem.kind == "unreadable" and problem.path.parent == repo.root]


def _cannot_read(path: Path, database: str, detail: str) -> VerifyOutcome:
    log.error("verification impossible: part of the repository cannot be read", database=database,
              path=str(path), error=detail)
    return VerifyOutcome(str(path), database, FAILED, detail, 0.0)


def verify_backup(settings: Settings, repo: Repository, backup: Backup) -> VerifyOutcome:
    started = time.monotonic()
    try:
        result, reason = _verify(settings, repo, backup)
    except BackupdError as err:
        result, reason = FAILED, str(err)
    except psycopg.Error as err:
        result, reason = FAILED, f"the database connection failed: {str(err).strip()}"
    return _record(repo, backup, result, reason, started)


def _verify(settings: Settings, repo: Repository, backup: Backup) -> tuple[str, str | None]:
    check_checksum(backup)
    if backup.doc.encryption and not settings.identity:
        return UNVERIFIABLE, "encrypted, and BACKUP_ENCRYPTION_IDENTITY is not set: only the checksum was checked"
    server = Server.for_verification(settings)
    with advisory_lock(server, "verify", backup.database) as locked:
        if locked is None:
            return SKIPPED, "another backupd is verifying this database"
        drop_stale_scratch_databases(server, backup.database)
        scratch = scratch_name(backup.database)
        builder = DatabaseBuilder(settings, repo, backup, server, no_owner=True)
        try:
            if backup.doc.format == "plain":
                with server.wait_connect("postgres") as admin:
                    restore_tools(settings, admin, backup)  # refused before any role is made
                restore_roles(repo, backup, server, settings.identity)  # a plain dump sets owners itself
            builder.build(scratch, manifest_info(backup))
            builder.check(scratch)
            if settings.verify_sql:
                _run_verify_sql(server, scratch, settings.verify_sql)
        finally:
            builder.drop(scratch)
    return PASSED, None


def drop_stale_scratch_databases(server: Server, database: str) -> None:
    """Scratch databases of this database left by a verify that was killed. Only called
    under the verify lock of this database, so none of them is in use."""
    with server.wait_connect("postgres") as admin:
        stale = admin.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                              (scratch_prefix(database),)).fetchall()
        for (name,) in stale:
            log.warning("dropping a scratch database left by an earlier verify", database=name)
            drop_database(admin, name)


def _run_verify_sql(server: Server, scratch: str, query: str) -> None:
    try:
        with server.wait_connect(scratch) as conn:
            row = conn.execute(query.encode("utf-8")).fetchone()
    except psycopg.Error as err:
        raise RestoreError(f"VERIFY_SQL failed: {str(err).strip()}") from None
    if not row or row[0] is not True:
        raise RestoreError(f"VERIFY_SQL returned {row[0] if row else 'no row'!r}, not true")


def verify_globals(settings: Settings, repo: Repository, backup: Backup) -> VerifyOutcome:
    """The roles dump parses, and the roles it has that the server lacks could be created."""
    started = time.monotonic()
    try:
        check_checksum(backup)
        if backup.doc.encryption and not settings.identity:
            return _record(repo, backup, UNVERIFIABLE, "encrypted, and BACKUP_ENCRYPTION_IDENTITY is not set: "
                           "only the checksum was checked", started)
        script = read_decompressed(backup, settings.identity)
        if "PostgreSQL database cluster dump complete" not in script:
            raise RestoreError("the roles dump is incomplete: its end marker is missing")
        with Server.for_verification(settings).wait_connect("postgres") as admin:
            try:
                create_missing_roles(admin, script, dry_run=True)
            except psycopg.Error as err:
                raise RestoreError(f"its roles could not be created: {str(err).strip()}") from None
        result, reason = PASSED, None
    except BackupdError as err:
        result, reason = FAILED, str(err)
    return _record(repo, backup, result, reason, started)


def _record(repo: Repository, backup: Backup, result: str, reason: str | None, started: float) -> VerifyOutcome:
    if stop := cancel.requested():  # an interrupted check says nothing about the backup
        raise Aborted(f"the verification of {backup.id} was stopped ({stop}); nothing was recorded")
    seconds = time.monotonic() - started
    unrecorded = None
    if result != SKIPPED:
        try:
            repo.update_state(backup, "verification", {"time": iso(utc_now()), "result": result, "reason": reason,
                                                       "duration_seconds": round(seconds, 3)})
            if result == PASSED and backup.state_doc.integrity:  # restored and checked in full: it is good
                repo.update_state(backup, "integrity", None)
        except (OSError, StorageError) as err:  # a full disk, a read-only repository, an invalid state file
            unrecorded = (storage_error(err, f"record the verification of {backup.id}") if isinstance(err, OSError)
                          else err).args[0]
            log.error("verification result not recorded", id=backup.id, result=result, error=unrecorded)
    log_call = log.error if result == FAILED else (log.warning if result == UNVERIFIABLE else log.info)
    log_call("verification finished", id=backup.id, database=backup.database, result=result, reason=reason,
             duration_seconds=round(seconds, 3))
    return VerifyOutcome(backup.id, backup.database, result, reason, seconds, unrecorded)

