"""Which backup a restore or a verification means: ``latest``, an id (looked up in the
repository, then on the replication targets), a URL of a file on a target, or a path to a
backup file; and the checks made before anything is touched (its checksum, and that it is
of the database ``--database`` names).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.documents import InvalidDocument, parse
from backupd.dump_formats import stored_transforms
from backupd.errors import IntegrityError, NotFoundError, RefusedError, UsageError
from backupd.logging import get_logger
from backupd.manifests import UnlistedFile, read_manifest
from backupd.origin import this_instance
from backupd.repository import FORMAT_SUFFIXES, Backup, Repository, looks_like_id
from backupd.stream import Progress, sha256_of
from backupd.targets import configured_targets
from backupd.targets import fetch as fetching

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.restore")


def resolve_source(repo: Repository, source: str, database: str | None, settings: Settings,
                   instance: str | None = None) -> Backup:
    """``latest``, an id (looked up inside the repository, then on the replication targets,
    never anywhere else), a URL of a file on a target, or a path to a backup file. Only this
    instance's backups, unless ``instance`` names another one: then only its, from the targets."""
    if instance is not None and instance != this_instance(settings):
        if source != "latest" and not looks_like_id(source):
            raise UsageError(f"--instance selects backups on the replication targets: {source!r} is neither "
                             f"'latest' nor a backup id")
        backup_id = fetching.newest_remote_id(settings, database, instance=instance) if source == "latest" \
            else source
        return fetching.fetch(settings, repo, backup_id, instance=instance)
    if source == "latest":
        try:
            return repo.latest(database)
        except NotFoundError:
            if not configured_targets(settings):
                raise
            return fetching.fetch(settings, repo, fetching.newest_remote_id(settings, database))
    if re.match(r"^(s3|ssh|file)://", source):
        return fetching.fetch_url(settings, repo, source)
    if looks_like_id(source):  # a database name may contain "/": an id is looked up before a path
        try:
            return repo.find(source)
        except NotFoundError:
            if Path(source).is_file():
                return backup_from_path(Path(source))
            if not configured_targets(settings):
                raise
            return fetching.fetch(settings, repo, source)
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
            found = read_manifest(manifest_path)
            if found.file == path.name:
                return Backup(found, path.parent)
        except (OSError, InvalidDocument) as err:
            log.warning("ignoring a manifest beside the file that cannot be used", manifest=str(manifest_path),
                        error=str(err))
    log.warning("restoring a file without its manifest: no checksum to check", file=str(path))
    unlisted = {"id": stem if looks_like_id(stem) else f"{stem}-00000000T000000Z", "kind": "database",
                "database": None, "file": path.name, "format": fmt, "compression": compression.name,
                "encryption": {"tool": "age"} if encrypted else None,
                "size_bytes": path.stat().st_size, "sha256": None}
    return Backup(parse(UnlistedFile, unlisted), path.parent)



def check_checksum(backup: Backup, progress: Progress | None = None) -> None:
    expected = backup.sha256
    if not expected:
        return
    actual = sha256_of(backup.path, progress)
    if actual != expected:
        raise IntegrityError(f"{backup.path.name} does not match its manifest: sha256 is {actual}, "
                             f"the manifest says {expected}; the file is damaged, nothing was restored")


def check_database_option(backup: Backup, database: str | None, advice: str) -> None:
    """``--database NAME`` with a backup of another database is a contradiction: say so
    (exit 2) instead of guessing which of the two the user meant."""
    own = backup.doc.database
    if database is not None and own is not None and database != own:
        raise RefusedError(f"backup {backup.id} is of database {own!r}, not {database!r}: --database selects "
                           f"backups (whose backup 'latest' means), it is never where a restore goes; {advice}; "
                           f"nothing was touched")
