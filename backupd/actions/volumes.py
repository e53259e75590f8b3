"""``backupd volumes backup|list|restore``: the files beside the database.

Each ``VOLUME_PATHS`` entry is archived as a tar stream through compression (and
encryption) and sha256 into an atomic file under ``_volumes/<name>/``, while the
labelled containers are stopped. A file that changes while it is read gives a
warning (GNU tar's exit 1), not a failed or corrupt archive. A restore makes the
destination identical to the archive: it is unpacked into a staging folder first,
so a damaged archive never touches the destination, then mirrored with rsync.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backupd import __version__, origin
from backupd.docker_ctl import containers_stopped
from backupd.dump_formats import reader_stages
from backupd.errors import BackupdError, NotFoundError, RefusedError, RestoreError, UsageError
from backupd.logging import get_logger
from backupd.process import run
from backupd.repository import Backup, Repository, encode_name, iso, looks_like_id, pending_path, utc_now
from backupd.restoring.source import check_checksum
from backupd.retention import Decision, Item, Policy, decide
from backupd.stream import Pipeline, stream_to_file
from backupd.targets import configured_targets
from backupd.targets.fetch import fetch, newest_remote_id
from backupd.transforms import Transform, commit_manifest

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.volumes")

TAR_FILE_CHANGED = 1  # GNU tar: "some files differ" (changed while being read); the archive is still whole


@dataclass
class VolumeOutcome:
    name: str
    ok: bool
    backup_id: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    size: int = 0


def _selected(settings: Settings, names: list[str] | None) -> dict[str, Path]:
    volumes = dict(settings.volume_paths)
    if not volumes:
        raise UsageError("no volumes are configured (VOLUME_PATHS=name=/path,...)")
    if names:
        unknown = sorted(set(names) - set(volumes))
        if unknown:
            raise UsageError(f"unknown volume(s) {', '.join(unknown)}; VOLUME_PATHS has {', '.join(volumes)}")
        volumes = {name: volumes[name] for name in names}
    return volumes


def run_volume_backup(settings: Settings, names: list[str] | None = None) -> list[VolumeOutcome]:
    repo = Repository(settings.backup_dir)
    volumes = _selected(settings, names)
    with containers_stopped(settings, "archiving volumes"):
        return [_guarded(settings, repo, name, path) for name, path in volumes.items()]


def _guarded(settings: Settings, repo: Repository, name: str, path: Path) -> VolumeOutcome:
    try:
        outcome = _archive(settings, repo, name, path)
    except BackupdError as err:
        log.error("volume backup failed", volume=name, error=str(err))
        return VolumeOutcome(name, ok=False, error=str(err))
    log.info("volume backup finished", volume=name, id=outcome.backup_id, size_bytes=outcome.size,
             warnings=outcome.warnings or None)
    return outcome


def _count(path: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            files += 1
            size += stat.st_size
    return files, size


def _archive(settings: Settings, repo: Repository, name: str, path: Path) -> VolumeOutcome:
    if not path.is_dir():
        raise BackupdError(f"volume {name!r}: {path} is not a folder (is it mounted into the sidecar?)")
    folder = repo.folder_for(name, "volume")
    transform = Transform(settings)
    started, clock = utc_now(), time.monotonic()
    with repo.lock(folder, "volume backup"):
        backup_id, _ = repo.reserve_id(name, "volume")
        final = folder / repo.file_name(backup_id, transform.suffix(".tar"))
        files, source_bytes = _count(path)
        tar = ("tar", ["tar", "--create", "--file=-", "--numeric-owner", "--directory", str(path), "."],
               (), (0, TAR_FILE_CHANGED))
        pipeline = Pipeline([tar, *transform.stages()])
        tar_child = pipeline.children[0]
        stream = stream_to_file(pipeline, pending_path(final), timeout=settings.backup_timeout, what="volume backup")
        warnings = []
        if tar_child.popen.returncode == TAR_FILE_CHANGED:
            warnings.append(f"files changed while they were read: {tar_child.tail}")
        commit_manifest(repo, folder, final, {
            "kind": "volume", "id": backup_id, "volume": name, "database": None, "source": str(path),
            "started": iso(started), "finished": iso(utc_now()), "duration_seconds": round(time.monotonic() - clock, 3),
            "format": "tar", **transform.manifest_fields(),
            "file": final.name, "size_bytes": stream.size, "sha256": stream.sha256,
            "file_count": files, "source_bytes": source_bytes, "warnings": warnings, "backupd_version": __version__,
            **origin.manifest_fields(settings),
        })
    return VolumeOutcome(name, ok=True, backup_id=backup_id, warnings=warnings, size=stream.size)


@dataclass
class VolumePrune:
    decisions: list[tuple[Backup, Decision]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # ids


def prune_volumes(settings: Settings, now: datetime | None = None, dry_run: bool = False) -> VolumePrune:
    """VOLUME_RETENTION_DAYS, the BACKUP_MIN_KEEP floor and pins, per volume. A damaged
    archive is no good one: it neither counts nor is deleted; it stays for a person."""
    repo = Repository(settings.backup_dir)
    listed = repo.backups(kind="volume")
    backups = [b for b in listed if not b.damaged]
    policy = Policy(days=settings.volume_retention_days, min_keep=settings.backup_min_keep,
                    timezone=settings.backup_timezone)
    by_id = {b.id: b for b in backups}
    result = VolumePrune()
    for decision in decide((Item(b.id, b.database, b.time, b.pinned) for b in backups), now or utc_now(), policy):
        result.decisions.append((by_id[decision.item.id], decision))
    result.decisions += [(b, Decision(Item(b.id, b.database, b.time, b.pinned),
                                      [f"damaged, kept for a person to look at: {b.damaged}"]))
                         for b in listed if b.damaged]
    for backup, decision in result.decisions:
        if not decision.keep and not dry_run and repo.delete(backup):
            result.deleted.append(backup.id)
            log.info("deleted by retention", id=backup.id, volume=backup.database)
    return result


def resolve_volume_backup(repo: Repository, source: str, name: str | None, settings: Settings | None = None) -> Backup:
    """``latest`` or an id: looked up locally, then on the replication targets (a new machine)."""
    if source != "latest" and not looks_like_id(source):
        raise UsageError(f"{source!r} is neither 'latest' nor a volume backup id")
    try:
        return repo.latest(name, kind="volume") if source == "latest" else repo.find(source, kind="volume")
    except NotFoundError:
        if settings is None or not configured_targets(settings):
            raise
    backup_id = newest_remote_id(settings, name, "volume") if source == "latest" else source
    return fetch(settings, repo, backup_id, kind="volume")


def _refuse_overlap(destination: Path, repository: Path) -> None:
    """A restore makes its destination identical to the archive, removing everything else:
    aimed at BACKUP_DIR, a folder holding it, or a folder inside it, it would delete backups."""
    where, root = destination.resolve(), repository.resolve()
    if where == root or root.is_relative_to(where) or where.is_relative_to(root):
        raise RefusedError(f"{destination} overlaps BACKUP_DIR ({repository}): restoring there would delete "
                           f"backups; choose another destination. Nothing was touched")


def run_volume_restore(settings: Settings, source: str, name: str | None = None, to: Path | None = None,
                       yes: bool = False) -> tuple[Backup, Path]:
    repo = Repository(settings.backup_dir)
    backup = resolve_volume_backup(repo, source, name, settings)
    destination = to or dict(settings.volume_paths).get(backup.database)
    if destination is None:
        raise UsageError(f"volume {backup.database!r} is not in VOLUME_PATHS: give --to PATH")
    destination = Path(destination)
    _refuse_overlap(destination, repo.root)
    if destination.exists() and any(destination.iterdir()) and not yes:
        raise RefusedError(f"{destination} is not empty: restoring makes it identical to the archive and removes "
                           f"files that are not in it; add --yes. Nothing was touched")
    check_checksum(backup)
    staging = repo.root / f".volume-restore-{encode_name(backup.id)}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700, parents=True)
    try:
        with open(backup.path, "rb") as stored:
            Pipeline([*reader_stages(backup.path, settings.identity),
                      ("tar", ["tar", "--extract", "--file=-", "--numeric-owner", "--same-permissions",
                               "--directory", str(staging)])], stdin=stored, stdout=None).finish()
        destination.mkdir(parents=True, exist_ok=True)
        with containers_stopped(settings, "restoring a volume"):
            code, _, err = run("rsync", ["rsync", "--archive", "--hard-links", "--numeric-ids", "--delete",
                                         f"{staging}/", f"{destination}/"])
        if code != 0:
            raise RestoreError(f"copying the archive into {destination} failed: {err}")
    except BackupdError as err:
        if isinstance(err, RestoreError):
            raise
        raise RestoreError(f"restoring {backup.id} failed: {err}; {destination} was not changed") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("volume restored", id=backup.id, destination=str(destination))
    return backup, destination


def list_volume_backups(settings: Settings, name: str | None = None) -> list[Backup]:
    backups = Repository(settings.backup_dir).backups(name, kind="volume")
    if name is not None and not backups:
        raise NotFoundError(f"no backups of volume {name!r}")
    return backups
