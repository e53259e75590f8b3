"""Building a database from one backup, for a restore and for a verification alike: the
database is created like the one backed up, the data restored with the client tools the
archive needs, then its settings and grants applied; on any failure the database it
created is dropped again, so nothing half-restored remains. Also the roles a backup's
globals dump has that the server lacks, created before the data.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from backupd import leftovers, pgtools
from backupd.dump_formats import (
    decompress_to,
    is_transformed,
    read_small,
    restore_consumer,
    run_consumer_on_stdin,
    unpack_directory_archive,
)
from backupd.errors import BackupdError, NotFoundError, RestoreError
from backupd.logging import get_logger
from backupd.manifests import DumpManifest
from backupd.pgtools import Tools
from backupd.postgres import (
    DatabaseAccess,
    DatabaseInfo,
    Grant,
    Server,
    apply_database_access,
    apply_database_settings,
    compare_with_manifest,
    create_database_like,
    drop_database,
    role_exists,
)
from backupd.repository import Backup, Repository
from backupd.restoring.source import check_checksum
from backupd.roles import create_missing_roles
from backupd.stream import Pipeline

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.restore")


class DatabaseBuilder:
    """Creates a database and restores one backup into it; on any failure the database
    it created is dropped again, so nothing half-restored remains."""

    def __init__(self, settings: Settings, repo: Repository, backup: Backup, server: Server, jobs: int = 1,
                 no_owner: bool = False):
        self.settings, self.repo, self.backup, self.server = settings, repo, backup, server
        self.jobs, self.no_owner = jobs, no_owner

    def build(self, name: str, info: DatabaseInfo | None, access: DatabaseAccess | None = None,
              side_of: str | None = None) -> None:
        """Create ``name`` like ``info``, restore the data, then set its settings and its
        ``access`` (grants, connection limit): last, so neither can refuse the restore.
        ``side_of``: the live database this one is built beside, marked as such at once."""
        with self.server.wait_connect("postgres") as admin:
            tools = restore_tools(self.settings, admin, self.backup)
            _create_database(admin, name, info)
            if side_of is not None:
                try:
                    leftovers.mark(admin, name, side_of)
                except psycopg.Error as err:
                    drop_database(admin, name)
                    raise RestoreError(f"marking {name!r} as backupd's failed: {str(err).strip()}") from None
        try:
            _restore_data(self.settings, self.repo, self.backup, self.server, tools, name, self.jobs, self.no_owner)
            with self.server.wait_connect("postgres") as admin:
                _finish_database(admin, name, info, access)
        except BaseException as err:
            log.error("restore failed; dropping the database it created", database=name, error=str(err))
            self.drop(name)
            if isinstance(err, BackupdError) and not isinstance(err, RestoreError):
                raise RestoreError(f"restore of {self.backup.id} into {name!r} failed: {err}") from None
            raise

    def check(self, name: str) -> None:
        """The restored database must hold the manifest's tables and row counts."""
        with self.server.wait_connect(name) as conn:
            conn.execute("SET statement_timeout = 0")  # the database's own limit is for its app
            problems = compare_with_manifest(conn, self.backup.doc)
        if problems:
            raise RestoreError(f"{name!r} does not match the manifest of {self.backup.id}: " + "; ".join(problems))

    def drop(self, name: str) -> None:
        try:
            with self.server.wait_connect("postgres") as admin:
                drop_database(admin, name)
        except (psycopg.Error, BackupdError) as err:
            log.error("could not drop a database backupd created", database=name, error=str(err))



def restore_tools(settings: Settings, admin: psycopg.Connection, backup: Backup) -> Tools:
    """The tools of the server restored into, and at least as new as the pg_dump that wrote
    the archive; chosen before the database is created, so a refusal leaves nothing behind."""
    archive_major = pgtools.version_major(backup.pg_dump_version) or 0
    return pgtools.for_connection(settings.pg_bindir, admin, archive_major)



def _finish_database(admin: psycopg.Connection, name: str, info: DatabaseInfo | None,
                     access: DatabaseAccess | None) -> None:
    try:
        if info is not None:
            apply_database_settings(admin, name, info)
        if access is not None:
            apply_database_access(admin, name, access)
    except psycopg.Error as err:
        raise RestoreError(f"the settings or grants of {name!r} failed: {str(err).strip()}") from None



def backup_access(backup: Backup, live: DatabaseAccess | None) -> DatabaseAccess:
    """The grants and connection limit the backed-up database had. A backup made before
    backupd recorded grants keeps what a restore gave before: the replaced database's grants
    (``live``), or a new database's defaults; the connection limit it recorded still counts."""
    recorded = backup.doc.database_info if isinstance(backup.doc, DumpManifest) else None
    if recorded is not None and recorded.grants_recorded:
        grants = recorded.grants
        return DatabaseAccess(None if grants is None else tuple(
                                  Grant(g.grantee, g.privilege, g.grantable) for g in grants),
                              recorded.connection_limit, recorded.owner)
    kept = live or DatabaseAccess(None)
    log.warning("this backup did not record the database's grants: they are "
                + ("the replaced database's" if live else "a new database's defaults"), id=backup.id)
    limit = recorded.limit_recorded if recorded is not None else None
    return DatabaseAccess(kept.grants, kept.connection_limit if limit is None else limit, kept.owner)



def manifest_info(backup: Backup) -> DatabaseInfo | None:
    info = backup.doc.database_info if isinstance(backup.doc, DumpManifest) else None
    if info is None:
        return None
    return DatabaseInfo(owner=info.owner, encoding=info.encoding, collate=info.collate, ctype=info.ctype,
                        locale_provider=info.locale_provider, icu_locale=info.icu_locale,
                        settings=list(info.settings), acl=list(info.acl), connection_limit=info.connection_limit)



def restore_roles(repo: Repository, backup: Backup, server: Server, identity: str | None) -> list[str]:
    globals_id = backup.globals_id
    if not globals_id:
        return []
    try:
        globals_backup = repo.find(globals_id, kind="globals")
    except NotFoundError:
        log.warning("the globals dump of this backup is gone; roles are not created", globals_id=globals_id)
        return []
    check_checksum(globals_backup)
    script = read_decompressed(globals_backup, identity)
    with server.wait_connect("postgres") as admin:
        try:
            result = create_missing_roles(admin, script)
        except psycopg.Error as err:
            raise RestoreError(f"creating the missing roles failed: {str(err).strip()}") from None
    return result.created



def read_decompressed(backup: Backup, identity: str | None) -> str:
    """A small artifact (the roles dump), decrypted and decompressed into memory."""
    return read_small(backup.path, identity).decode("utf-8")



def _create_database(admin: psycopg.Connection, name: str, info: DatabaseInfo | None) -> None:
    if info is None:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return
    owner = info.owner
    if not role_exists(admin, owner):
        log.warning("the database's owner does not exist here; the restoring user owns it", owner=owner)
        owner = admin.info.user
    try:
        # Its settings come after the data: default_transaction_read_only=on would refuse the restore.
        create_database_like(admin, name, info, owner=owner, with_settings=False)
    except psycopg.errors.DuplicateDatabase:
        # Someone else created it meanwhile (another restore, an app): it is theirs, never dropped.
        raise RestoreError(f"creating database {name!r} failed: it was created by someone else meanwhile; "
                           f"it was left as it is") from None
    except psycopg.Error as err:
        drop_database(admin, name)  # ours: created, then its settings failed
        raise RestoreError(f"creating database {name!r} failed: {str(err).strip()}") from None



def _restore_data(settings: Settings, repo: Repository, backup: Backup, server: Server, tools: Tools, target: str,
                  jobs: int, no_owner: bool = False) -> None:
    fmt = backup.doc.format
    identity = settings.identity
    env, secrets = server.libpq_env(target), (*server.secrets, *((identity,) if identity else ()))
    transformed = is_transformed(backup.path)
    staged = fmt == "directory" or (fmt == "custom" and jobs > 1 and transformed)
    if not staged:
        source = backup.path if (fmt == "custom" and jobs > 1) else None
        consumer = restore_consumer(tools, fmt, target, jobs, source, no_owner)
        if source is not None:
            Pipeline([consumer], env=env, secrets=secrets, stdout=None).finish()
        else:
            run_consumer_on_stdin(backup.path, identity, consumer, env, secrets)
        return
    # pg_restore -j needs a seekable file or a folder: staged in BACKUP_DIR, removed after.
    staging = repo.root / f".restore-{target.encode().hex()[:40]}-{int(time.time())}.staging"
    _check_room(repo.root, backup.size * (1 if fmt == "directory" else 4))
    try:
        if fmt == "directory":
            unpack_directory_archive(backup.path, identity, staging)
            source = staging
        else:
            staging.mkdir(mode=0o700)
            source = staging / "archive.dump"
            decompress_to(backup.path, identity, source)
        consumer = restore_consumer(tools, fmt, target, jobs, source, no_owner)
        Pipeline([consumer], env=env, secrets=secrets, stdout=None).finish()
    finally:
        shutil.rmtree(staging, ignore_errors=True)



def _check_room(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise RestoreError(f"not enough free space in {folder} to stage the restore: about {needed} bytes "
                           f"needed, {free} free")
