"""``backupd restore``: restore a backup into a new database.

Given the settings and the source (an id, ``latest`` or a path), returns a
``RestoreResult``. The checksum is checked before anything is touched; missing
roles are created from the matching globals dump (existing roles are never
altered); the new database gets the original's owner, encoding, locale and
settings. A failed restore drops the database it created, so nothing is left
half-restored. Restoring over an existing database is refused (exit 2).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from backupd.archive import (decompress_to, restore_consumer, run_consumer_on_stdin, unpack_directory_archive)
from backupd.errors import BackupdError, IntegrityError, NotFoundError, RefusedError, RestoreError, UsageError
from backupd.logging import get_logger
from backupd.postgres import DatabaseInfo, Server, create_database_like, database_exists, drop_database, role_exists
from backupd.progress import TerminalProgress
from backupd.repository import FORMAT_SUFFIXES, Backup, Repository, looks_like_id
from backupd.roles import create_missing_roles
from backupd.stream import Pipeline, compression_for_suffix, sha256_of

log = get_logger("backupd.restore")


@dataclass
class RestoreResult:
    backup_id: str
    database: str
    seconds: float
    size: int
    roles_created: list[str]

    @property
    def throughput(self) -> float:
        return self.size / self.seconds if self.seconds > 0 else 0.0


def resolve_source(repo: Repository, source: str, database: str | None) -> Backup:
    """``latest``, an id (looked up only inside the repository) or a path to a backup file."""
    if source == "latest":
        return repo.latest(database)
    if looks_like_id(source):
        return repo.find(source)
    path = Path(source)
    if "/" not in source and not path.exists():
        raise NotFoundError(f"{source!r} is neither 'latest', a backup id, nor an existing file")
    return backup_from_path(path)


def backup_from_path(path: Path) -> Backup:
    """A backup file named explicitly: its manifest beside it when there is one, else
    what its name says (format and compression), with no checksum to check."""
    if not path.is_file():
        raise NotFoundError(f"no backup file at {path}")
    compression = compression_for_suffix(path.name)
    stem = path.name[: len(path.name) - len(compression.suffix)] if compression.suffix else path.name
    fmt = next((f for f, suffix in FORMAT_SUFFIXES.items() if stem.endswith(suffix)), None)
    if fmt is None:
        raise UsageError(f"{path} is not a backup file: its name does not end in a dump suffix "
                         f"({', '.join(FORMAT_SUFFIXES.values())}, then optionally .zst/.gz/.bz2/.xz)")
    if fmt == "directory":
        stem = stem[: -len(".dir.tar")]
    else:
        stem = stem[: -len(FORMAT_SUFFIXES[fmt])]
    manifest_path = path.with_name(f"{stem}.json")
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("file") == path.name:
                return Backup(manifest=manifest, folder=path.parent)
        except ValueError:
            log.warning("ignoring unreadable manifest beside the file", manifest=str(manifest_path))
    log.warning("restoring a file without its manifest: no checksum to check", file=str(path))
    manifest = {"id": stem if looks_like_id(stem) else f"{stem}-00000000T000000Z", "kind": "database",
                "database": None, "file": path.name, "format": fmt, "compression": compression.name,
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


def run_restore(settings, source: str, database: str | None = None, into: str | None = None,
                jobs: int = 1, show_progress: bool | None = None) -> RestoreResult:
    repo = Repository(settings.backup_dir)
    backup = resolve_source(repo, source, database)
    if backup.kind != "database":
        raise UsageError(f"{backup.id} is a {backup.kind} backup, not a database backup")
    target = into or database or backup.manifest.get("database")
    if not target:
        raise UsageError("the file has no manifest naming its database: give --into NEWDB")
    server = Server.from_settings(settings)
    with server.wait_connect("postgres") as admin:
        if database_exists(admin, target):
            raise RefusedError(
                f"database {target!r} exists; restoring over an existing database is not supported yet: "
                f"restore into a new one with --into NEWDB"
            )
    check_checksum(backup, TerminalProgress(f"checking {backup.id}", enabled=show_progress))
    started = time.monotonic()
    roles_created = _restore_roles(repo, backup, server)
    with server.wait_connect("postgres") as admin:
        _create_target(admin, target, backup)
    try:
        _restore_data(settings, repo, backup, server, target, jobs, show_progress)
    except BaseException as err:
        log.error("restore failed; dropping the database it created", database=target, error=str(err))
        try:
            with server.wait_connect("postgres") as admin:
                drop_database(admin, target)
        except (psycopg.Error, BackupdError) as drop_err:
            log.error("could not drop the half-restored database", database=target, error=str(drop_err))
        if isinstance(err, BackupdError) and not isinstance(err, RestoreError):
            raise RestoreError(f"restore of {backup.id} into {target!r} failed: {err}") from None
        raise
    seconds = time.monotonic() - started
    log.info("restore finished", id=backup.id, database=target, duration_seconds=round(seconds, 3),
             size_bytes=backup.size, roles_created=roles_created)
    return RestoreResult(backup.id, target, seconds, backup.size, roles_created)


def _restore_roles(repo: Repository, backup: Backup, server: Server) -> list[str]:
    globals_id = backup.manifest.get("globals_id")
    if not globals_id:
        return []
    try:
        globals_backup = repo.find(globals_id)
    except NotFoundError:
        log.warning("the globals dump of this backup is gone; roles are not created", globals_id=globals_id)
        return []
    check_checksum(globals_backup)
    script = read_decompressed(globals_backup)
    with server.wait_connect("postgres") as admin:
        try:
            result = create_missing_roles(admin, script)
        except psycopg.Error as err:
            raise RestoreError(f"creating the missing roles failed: {str(err).strip()}") from None
    return result.created


def read_decompressed(backup: Backup) -> str:
    """A small artifact (the globals dump) decompressed into memory."""
    argv = compression_for_suffix(backup.path.name).decompress_argv()
    if not argv:
        return backup.path.read_text(encoding="utf-8")
    with open(backup.path, "rb") as source:
        pipeline = Pipeline([(argv[0], argv)], stdin=source)
    data = pipeline.output.read()
    pipeline.finish()
    return data.decode("utf-8")


def _create_target(admin: psycopg.Connection, target: str, backup: Backup) -> None:
    info_json = backup.manifest.get("database_info")
    if not info_json:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
        return
    info = DatabaseInfo.from_json(info_json)
    owner = info.owner
    if not role_exists(admin, owner):
        log.warning("the database's owner does not exist here; the restoring user owns it", owner=owner)
        owner = admin.info.user
    try:
        create_database_like(admin, target, info, owner=owner)
    except psycopg.Error as err:
        drop_database(admin, target)
        raise RestoreError(f"creating database {target!r} failed: {str(err).strip()}") from None


def _restore_data(settings, repo: Repository, backup: Backup, server: Server, target: str, jobs: int,
                  show_progress: bool | None) -> None:
    fmt = backup.manifest["format"]
    compression = compression_for_suffix(backup.path.name)
    env, secrets = server.libpq_env(target), server.secrets
    staged = fmt == "directory" or (fmt == "custom" and jobs > 1 and compression.name != "none")
    if not staged:
        source = backup.path if (fmt == "custom" and jobs > 1) else None
        consumer = restore_consumer(fmt, target, jobs, source)
        if source is not None:
            Pipeline([consumer], env=env, secrets=secrets, stdout=None).finish()
        else:
            run_consumer_on_stdin(backup.path, compression, consumer, env, secrets)
        return
    # pg_restore -j needs a seekable file or a folder: staged in BACKUP_DIR, removed after.
    staging = repo.root / f".restore-{target.encode().hex()[:40]}-{int(time.time())}.staging"
    _check_room(repo.root, backup.size * (1 if fmt == "directory" else 4))
    try:
        if fmt == "directory":
            unpack_directory_archive(backup.path, compression, staging)
            source = staging
        else:
            staging.mkdir(mode=0o700)
            source = staging / "archive.dump"
            decompress_to(backup.path, compression, source)
        Pipeline([restore_consumer(fmt, target, jobs, source)], env=env, secrets=secrets, stdout=None).finish()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_room(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise RestoreError(f"not enough free space in {folder} to stage the restore: about {needed} bytes "
                           f"needed, {free} free")
