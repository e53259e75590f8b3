"""Fetching from the replication targets: a backup (with its roles dump) or a volume
archive of this instance, or of another one, brought back into a local repository and
checked against its manifest before anything of it is kept (disaster recovery, a new
machine); the backups a target holds, listed; and which targets a command means.

Used by restoring, verification and the volume verbs alike, so none of them reaches into
another verb for it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from backupd import origin
from backupd.documents import InvalidDocument
from backupd.errors import IntegrityError, NotFoundError, UsageError
from backupd.logging import get_logger
from backupd.manifests import StoredManifest, read_manifest
from backupd.origin import INSTANCE_PATTERN, check_fetched, instance_of
from backupd.repository import Backup, Repository, decode_name, encode_name, parse_id
from backupd.stream import fsync_dir, sha256_of
from backupd.targets import Target, TargetError, configured_targets
from backupd.targets.base import with_retries
from backupd.targets.layout import RemoteBackup, remote_backups, split_instance

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.fetch")


def targets_for(settings: Settings, url: str | None = None) -> list[Target]:
    targets = configured_targets(settings)
    if url:
        targets = [t for t in targets if t.url == url or t.url.rstrip("/") == url.rstrip("/")]
        if not targets:
            raise UsageError(f"{url!r} is not one of the configured replication targets")
    if not targets:
        raise UsageError("no replication targets are configured (REPLICATION_TARGETS)")
    return targets


def read_remote_manifest(target: Target, relative: str) -> StoredManifest | None:
    """A manifest on the target, validated; None when it cannot be fetched or is not a
    manifest of backupd's."""
    with tempfile.TemporaryDirectory(prefix="backupd-manifest-") as folder:
        local = Path(folder) / "manifest.json"
        try:
            with_retries(f"fetch {relative}", partial(target.get, relative, local))
            return read_manifest(local)
        except (TargetError, OSError, InvalidDocument) as err:
            log.warning("a manifest on the target cannot be read", manifest=relative, target=target.url,
                        error=str(err))
            return None


FOREIGN = ".instances"  # BACKUP_DIR/.instances/<instance>/: another instance's backups, fetched to restore


def foreign_repository(settings: Settings, instance: str) -> Repository:
    """Where another instance's backups are fetched: never among this instance's own (an id
    of the same second would collide, and retention or replication would take them for
    this instance's). The folder is hidden, so the repository never lists it."""
    holder = Path(settings.backup_dir) / FOREIGN
    Repository(Path(settings.backup_dir)).ensure_folder(holder)
    return Repository(holder / instance)


def forget_foreign(settings: Settings) -> None:
    """Remove what was fetched of other instances (after the restore that needed it)."""
    shutil.rmtree(Path(settings.backup_dir) / FOREIGN, ignore_errors=True)


def repository_holding(repo: Repository, backup: Backup) -> Repository:
    """The repository a backup was found or fetched into (its roles dump is there too)."""
    holder = repo.root / FOREIGN
    if backup.folder.is_relative_to(holder) and backup.folder != holder:
        return Repository(holder / backup.folder.relative_to(holder).parts[0])
    return repo


def list_remote(settings: Settings, url: str, instance: str | None = None) -> list[tuple[Backup, str]]:
    """The backups on a target (every instance's, or ``instance``'s), with their manifests
    read from there, each with the instance that made it."""
    (target,) = targets_for(settings, url)
    me = origin.this_instance_or_none(settings) or "-"
    remote = with_retries(f"list {target.url}", target.list)
    backups = []
    for remote_backup in remote_backups(remote):
        owner = remote_backup.instance or me
        if remote_backup.kind == "volume" or (instance is not None and owner != instance):
            continue
        manifest = read_remote_manifest(target, remote_backup.manifest)
        if manifest is None or manifest.id != remote_backup.id:
            log.warning("not listed: its manifest on the target is not valid", manifest=remote_backup.manifest,
                        target=target.url)
            continue
        backups.append((Backup(manifest, Path(remote_backup.manifest).parent), instance_of(manifest, owner)))
    backups.sort(key=lambda found: (found[0].time, found[0].id, found[1]), reverse=True)
    return backups


def _pick(copies: list[RemoteBackup], instance: str, me: str) -> RemoteBackup | None:
    """``instance``'s copy, the one under its folder before an older top-level one."""
    return next((b for b in sorted(copies, key=lambda b: b.instance is None) if b.in_space(instance, me)), None)


def fetch(settings: Settings, repo: Repository, backup_id: str, targets: list[Target] | None = None,
          kind: str = "database", instance: str | None = None) -> Backup:
    """Bring a backup (and its roles dump) or a volume archive of this instance, or of
    ``instance``, from the first target that has it into the local repository, checked
    against its manifest; the local repository may be empty (a new machine). Another
    instance's backup goes to a repository of its own (``foreign_repository``)."""
    me = origin.this_instance(settings)
    asked = instance or me
    into = repo if asked == me else foreign_repository(settings, asked)
    elsewhere: set[str] = set()
    for target in targets if targets is not None else [t for t in configured_targets(settings) if t.confirms]:
        try:
            remote = with_retries(f"list {target.url}", target.list)
        except TargetError as err:
            log.warning("target not reachable", target=target.url, error=str(err))
            continue
        every = remote_backups(remote)
        copies = [b for b in every
                  if b.id == backup_id and (b.kind == kind or kind == "database" and b.kind == "globals")]
        found = _pick(copies, asked, me)
        if found is None:
            elsewhere.update(b.instance for b in copies if b.instance and b.instance != asked)
            continue
        backup = _fetch_files(target, into, found, asked)
        log.info("fetched from a target", id=backup_id, target=target.url, instance=asked)
        globals_id = backup.globals_id
        if globals_id and globals_id != backup_id:
            try:
                into.find(globals_id, kind="globals")
            except NotFoundError:
                remote_globals = _pick([b for b in every if b.id == globals_id and b.kind == "globals"], asked, me)
                if remote_globals:
                    _fetch_files(target, into, remote_globals, asked)
        return backup
    hint = (f"; instance {', '.join(sorted(elsewhere))} has a backup of that id: name it with --instance"
            if elsewhere else "")
    raise NotFoundError(f"no backup with id {backup_id!r} of instance {asked!r} locally or on any replication "
                        f"target{hint}")


def newest_remote_id(settings: Settings, database: str | None, kind: str = "database",
                     instance: str | None = None) -> str:
    """The newest backup id of ``database`` (or volume) of this instance (or ``instance``) on
    the targets (``latest`` on a new machine)."""
    noun, option = ("volume", "--volume") if kind == "volume" else ("database", "--database")
    me = origin.this_instance(settings)
    asked = instance or me
    ids = []
    for target in (t for t in configured_targets(settings) if t.confirms):
        try:
            remote = with_retries(f"list {target.url}", target.list)
        except TargetError:
            continue
        ids += [b for b in remote_backups(remote) if b.kind == kind and b.in_space(asked, me)
                and (database is None or b.database == database)]
    if not ids:
        raise NotFoundError(f"no backups of {noun} {database or ''!r} of instance {asked!r} locally or on any "
                            f"replication target")
    if database is None and len({b.database for b in ids}) > 1:
        raise UsageError(f"'latest' needs {option}: the targets hold backups of several")
    return max(ids, key=lambda b: parse_id(b.id)[1]).id


def _fetch_files(target: Target, repo: Repository, found: RemoteBackup, instance: str) -> Backup:
    remote_folder = found.manifest.rpartition("/")[0]  # e.g. "site-a/shop", "shop" or "site-a/_volumes/uploads"
    folder = repo.ensure_folder(repo.root / split_instance(found.manifest)[1].rpartition("/")[0])
    with repo.lock(folder, "fetch"), tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as staging:
        staged_manifest = Path(staging) / "manifest.json"
        with_retries(f"fetch {found.manifest}", lambda: target.get(found.manifest, staged_manifest))
        try:
            manifest: StoredManifest | None = read_manifest(staged_manifest)
        except InvalidDocument:
            manifest = None
        if manifest is not None:  # refused (exit 2) before anything of it is kept
            check_fetched(manifest, instance, f"{target.url}/{found.manifest}")
        if manifest is None or not _describes(manifest, found.id, folder):
            raise IntegrityError(f"the manifest of {found.id} on {target.url} is not backupd's manifest of "
                                 f"that backup (its id, file name, size or checksum); nothing was fetched")
        data_name = manifest.file
        staged_data = Path(staging) / data_name
        with_retries(f"fetch {data_name}", lambda: target.get(f"{remote_folder}/{data_name}", staged_data))
        if sha256_of(staged_data) != manifest.sha256:
            raise IntegrityError(f"the copy of {found.id} on {target.url} does not match its manifest")
        staged_data.chmod(0o600)
        staged_manifest.chmod(0o600)
        shutil.move(staged_data, folder / data_name)
        shutil.move(staged_manifest, folder / f"{encode_name(manifest.id)}.json")
        fsync_dir(folder)
    return repo.find(manifest.id, kind="volume" if found.kind == "volume" else "database")


def _describes(manifest: StoredManifest, backup_id: str, folder: Path) -> bool:
    """A fetched manifest is believed only about the backup it was fetched as, and only about
    a file of backupd's own name: it can never name, and so overwrite, anything else."""
    return manifest.id == backup_id and Repository.accounts_for(Backup(manifest, folder),
                                                                f"{encode_name(backup_id)}.json")


def fetch_url(settings: Settings, repo: Repository, url: str) -> Backup:
    """``backupd restore URL``: the URL of a backup file (or its manifest) on a target. The
    path names the instance (its folder; the top level is this instance's): naming the
    file is naming the instance."""
    from backupd.redact import strip_url_credentials

    shown = strip_url_credentials(url)
    for target in configured_targets(settings):
        if target.confirms and shown.startswith(target.url.rstrip("/") + "/"):
            relative = shown[len(target.url.rstrip("/")) + 1:]
            break
    else:
        target, relative = _unconfigured_target(settings, url)
    match = _FILE_OF_BACKUP.match(relative.rpartition("/")[2])
    if not match:
        raise UsageError(f"{shown!r} does not name a backup file (<id>.<ext> or <id>.json)")
    return fetch(settings, repo, decode_name(match.group(1)), [target], instance=split_instance(relative)[0])


def _unconfigured_target(settings: Settings, url: str) -> tuple[Target, str]:
    """Not a configured target: the layout is ``<root>/<instance>/<folder>/<file>``, or
    ``<root>/<folder>/<file>`` from before instances; the first that the target has."""
    from backupd.targets import make_target

    parts = url.rsplit("/", 3)
    if len(parts) == 4 and INSTANCE_PATTERN.fullmatch(parts[1]) and "://" in parts[0][:-1]:
        target, relative = make_target(parts[0], settings), "/".join(parts[1:])
        try:
            if relative in with_retries(f"list {target.url}", target.list):
                return target, relative
        except TargetError:
            pass  # perhaps not a root at all: the older layout below
    root, folder, name = url.rsplit("/", 2)
    return make_target(root, settings), f"{folder}/{name}"


# "<encoded id>.<ext>": the id ends with its time, so a dot inside a database name is no trouble.
_FILE_OF_BACKUP = re.compile(r"^(.+-\d{8}T\d{6}Z|globals@\d{8}T\d{6}Z)(?:\..*)?$")
