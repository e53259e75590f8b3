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

import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from backupd import cancel, leftovers, pgtools
from backupd.archive import (
    decompress_to,
    is_transformed,
    read_small,
    restore_consumer,
    run_consumer_on_stdin,
    stored_transforms,
    unpack_directory_archive,
)
from backupd.dbnames import old_name, side_name
from backupd.docker_ctl import containers_stopped
from backupd.documents import InvalidDocument
from backupd.errors import Aborted, BackupdError, IntegrityError, NotFoundError, RefusedError, RestoreError, UsageError
from backupd.logging import get_logger
from backupd.manifests import as_dict, read_manifest
from backupd.pgtools import Tools
from backupd.postgres import (
    DatabaseAccess,
    DatabaseInfo,
    Grant,
    Server,
    advisory_lock,
    apply_database_access,
    apply_database_settings,
    compare_with_manifest,
    create_database_like,
    database_access,
    database_exists,
    database_info,
    drop_database,
    one,
    rename_database,
    role_exists,
    set_allow_connections,
)
from backupd.progress import TerminalProgress
from backupd.repository import FORMAT_SUFFIXES, Backup, Repository, looks_like_id
from backupd.roles import create_missing_roles
from backupd.stream import Pipeline, sha256_of

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


def resolve_source(repo: Repository, source: str, database: str | None, settings=None,
                   instance: str | None = None) -> Backup:
    """``latest``, an id (looked up inside the repository, then on the replication targets,
    never anywhere else), a URL of a file on a target, or a path to a backup file. Only this
    instance's backups, unless ``instance`` names another one: then only its, from the targets."""
    from backupd.actions import replicate
    from backupd.origin import this_instance

    if instance is not None and (settings is None or instance != this_instance(settings)):
        if source != "latest" and not looks_like_id(source):
            raise UsageError(f"--instance selects backups on the replication targets: {source!r} is neither "
                             f"'latest' nor a backup id")
        backup_id = replicate.newest_remote_id(settings, database, instance=instance) if source == "latest" \
            else source
        return replicate.fetch(settings, repo, backup_id, instance=instance)
    if source == "latest":
        try:
            return repo.latest(database)
        except NotFoundError:
            if settings is None or not replicate.configured_targets(settings):
                raise
            return replicate.fetch(settings, repo, replicate.newest_remote_id(settings, database))
    if re.match(r"^(s3|ssh|file)://", source):
        if settings is None:
            raise UsageError("a URL needs the replication settings")
        return replicate.fetch_url(settings, repo, source)
    if looks_like_id(source):  # a database name may contain "/": an id is looked up before a path
        try:
            return repo.find(source)
        except NotFoundError:
            if Path(source).is_file():
                return backup_from_path(Path(source))
            if settings is None or not replicate.configured_targets(settings):
                raise
            return replicate.fetch(settings, repo, source)
    path = Path(source)
    if "/" not in source and not path.exists():
        raise NotFoundError(f"{source!r} is neither 'latest', a backup id, nor an existing file")
    return backup_from_path(path)


def backup_from_path(path: Path) -> Backup:
    """A backup file named explicitly: its manifest beside it when there is one, else
    what its name says (format and compression), with no checksum to check."""
    if not path.is_file():
        raise NotFoundError(f"no backup file at {path}")
    encrypted, compression, stem = stored_transforms(path.name)
    fmt = next((f for f, suffix in FORMAT_SUFFIXES.items() if stem.endswith(suffix)), None)
    if fmt is None:
        raise UsageError(f"{path} is not a backup file: its name does not end in a dump suffix "
                         f"({', '.join(FORMAT_SUFFIXES.values())}, then optionally .zst/.gz/.bz2/.xz and .age)")
    if fmt == "directory":
        stem = stem[: -len(".dir.tar")]
    else:
        stem = stem[: -len(FORMAT_SUFFIXES[fmt])]
    manifest_path = path.with_name(f"{stem}.json")
    if manifest_path.is_file():
        try:
            manifest = as_dict(read_manifest(manifest_path))
            if manifest.get("file") == path.name:
                return Backup(manifest=manifest, folder=path.parent)
        except (OSError, InvalidDocument) as err:
            log.warning("ignoring a manifest beside the file that cannot be used", manifest=str(manifest_path),
                        error=str(err))
    log.warning("restoring a file without its manifest: no checksum to check", file=str(path))
    manifest = {"id": stem if looks_like_id(stem) else f"{stem}-00000000T000000Z", "kind": "database",
                "database": None, "file": path.name, "format": fmt, "compression": compression.name,
                "encryption": {"tool": "age"} if encrypted else None,
                "size_bytes": path.stat().st_size, "sha256": None}
    return Backup(manifest=manifest, folder=path.parent)


def check_checksum(backup: Backup, progress=None) -> None:
    expected = backup.manifest.get("sha256")
    if not expected:
        return
    actual = sha256_of(backup.path, progress)
    if actual != expected:
        raise IntegrityError(f"{backup.path.name} does not match its manifest: sha256 is {actual}, "
                             f"the manifest says {expected}; the file is damaged, nothing was restored")


Confirm = Callable[[Backup, str], bool]


def run_restore(settings, source: str, database: str | None = None, into: str | None = None, jobs: int = 1,
                yes: bool = False, drop_old: bool = False, in_place: bool = False,
                confirm: Confirm | None = None, show_progress: bool | None = None,
                over: str | None = None, instance: str | None = None) -> RestoreResult:
    """Restore ``source`` into its own database (a new one when it is gone), into a new
    database ``into``, or over the existing database ``over``. Over an existing database
    only with ``yes`` (or FORCE_RESTORE, or ``confirm`` answering yes): by a safe swap, or
    ``in_place``. ``database`` only selects backups and is never the destination. Raises
    RefusedError (exit 2), with nothing touched, when the destination is not the one the
    user named or an existing database would be touched without consent."""
    from backupd.actions.replicate import repository_holding

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


def _restore(settings, repo: Repository, backup: Backup, server: Server, target: str, exists: bool, jobs: int,
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
    own = backup.manifest.get("database")
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


def check_database_option(backup: Backup, database: str | None, advice: str) -> None:
    """``--database NAME`` with a backup of another database is a contradiction: say so
    (exit 2) instead of guessing which of the two the user meant."""
    own = backup.manifest.get("database")
    if database is not None and own is not None and database != own:
        raise RefusedError(f"backup {backup.id} is of database {own!r}, not {database!r}: --database selects "
                           f"backups (whose backup 'latest' means), it is never where a restore goes; {advice}; "
                           f"nothing was touched")


def _check_consent(settings, backup: Backup, target: str, exists: bool, into: str | None, over: str | None,
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


class DatabaseBuilder:
    """Creates a database and restores one backup into it; on any failure the database
    it created is dropped again, so nothing half-restored remains."""

    def __init__(self, settings, repo: Repository, backup: Backup, server: Server, jobs: int = 1,
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


def restore_tools(settings, admin: psycopg.Connection, backup: Backup) -> Tools:
    """The tools of the server restored into, and at least as new as the pg_dump that wrote
    the archive; chosen before the database is created, so a refusal leaves nothing behind."""
    archive_major = pgtools.version_major(str(backup.manifest.get("pg_dump_version") or "")) or 0
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
    recorded = backup.manifest.get("database_info") or {}
    if "grants" in recorded:
        grants = recorded["grants"]
        return DatabaseAccess(None if grants is None else tuple(
                                  Grant(g["grantee"], g["privilege"], g.get("grantable", False)) for g in grants),
                              recorded.get("connection_limit", -1), recorded.get("owner"))
    kept = live or DatabaseAccess(None)
    log.warning("this backup did not record the database's grants: they are "
                + ("the replaced database's" if live else "a new database's defaults"), id=backup.id)
    return DatabaseAccess(kept.grants, recorded.get("connection_limit", kept.connection_limit), kept.owner)


def manifest_info(backup: Backup) -> DatabaseInfo | None:
    info = backup.manifest.get("database_info")
    return DatabaseInfo.from_json(info) if info else None


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


def restore_roles(repo: Repository, backup: Backup, server: Server, identity: str | None) -> list[str]:
    globals_id = backup.manifest.get("globals_id")
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


def _restore_data(settings, repo: Repository, backup: Backup, server: Server, tools: Tools, target: str, jobs: int,
                  no_owner: bool = False) -> None:
    fmt = backup.manifest["format"]
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
