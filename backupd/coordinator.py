"""What follows each backup, decided in one place for the daemon and the CLI alike.

The verbs (``actions/``, ``pitr/``) each do one thing and know nothing of one another.
Here they are put together: after a database backup its pins, then retention of the
databases backed up; after a volume backup, retention of the volumes; after a base backup,
retention of that cluster's point-in-time recovery; ``prune`` applies all three, so
``backupd prune`` and the daemon's daily prune are the same function; and replication
sends each target the backups and then the PITR files. A replication follows each backup
that made something when there is anywhere to replicate to (``replication_follows``); how
it is run is the caller's (``then_replicate``: the daemon schedules one; the CLI's one-shot
commands pass none and leave it to the daemon's interval or ``backupd replicate``).

Like ``cli`` and ``daemon``, this module sits above the verbs: it is the one module
besides them that imports the verbs' modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.actions.backup import BackupResult, ProgressFactory, run_backup
from backupd.actions.prune import PruneResult, run_prune
from backupd.actions.replicate import AlsoSent, TargetOutcome, run_replicate
from backupd.actions.volumes import VolumeOutcome, VolumePrune, prune_volumes, run_volume_backup
from backupd.errors import BackupdError
from backupd.logging import get_logger
from backupd.repository import Repository, storage_error, utc_now
from backupd.targets import Target, target_urls
from backupd.targets.base import RemoteFile

if TYPE_CHECKING:
    from backupd.pitr.pruning import Pruned as PitrPruned
    from backupd.pitr.store import Base
    from backupd.settings import Settings

log = get_logger("backupd.coordinator")

Replicate = Callable[[], None]  # how the caller runs a replication that follows a backup


def backup(settings: Settings, databases: list[str] | None = None, label: str | None = None,
           scheduled_for: datetime | None = None, progress: ProgressFactory | None = None,
           pin: bool = False, then_replicate: Replicate | None = None) -> BackupResult:
    """A backup run, then what follows it: the new backups pinned (``--pin``) first, so the
    pins hold, then retention of each database backed up, never deleting this run's own;
    then a replication."""
    result = run_backup(settings, databases=databases, label=label, scheduled_for=scheduled_for, progress=progress)
    succeeded = [o for o in result.outcomes if o.ok and o.backup_id]
    repo = Repository(settings.backup_dir)
    try:
        for outcome in succeeded if pin else []:
            repo.update_state(repo.find(str(outcome.backup_id)), "pinned", True)
        if succeeded:
            result.pruned = len(run_prune(settings, databases=[o.database for o in succeeded],
                                          just_made=frozenset(str(o.backup_id) for o in succeeded)).deleted)
    except (OSError, BackupdError) as err:  # the backups are made and kept: say so, and fail the run
        error = storage_error(err, "finish the run (pins, retention)") if isinstance(err, OSError) else err
        result.finish_error = str(error)
        log.error("the backups were made, but finishing the run failed", error=result.finish_error)
    _replicate_after(settings, bool(succeeded), then_replicate)
    return result


def volume_backup(settings: Settings, names: list[str] | None = None,
                  then_replicate: Replicate | None = None) -> list[VolumeOutcome]:
    """Archive the volumes, then retention of the volumes, then a replication."""
    outcomes = run_volume_backup(settings, names)
    try:
        prune_volumes(settings)
    except (OSError, BackupdError) as err:  # the archives are made and kept: retention runs again daily
        log.error("the volume archives were made, but the retention after them failed", error=str(err))
    _replicate_after(settings, any(o.ok for o in outcomes), then_replicate)
    return outcomes


def base_backup(settings: Settings, reason: str, then_replicate: Replicate | None = None,
                incremental: bool = False) -> Base:
    """A base backup (``incremental``: against the newest one, where the server can), then
    retention of its cluster's archive (once: the daily prune does every cluster), then a
    replication."""
    from backupd.pitr.base import run_base_backup
    from backupd.pitr.pruning import prune as prune_pitr
    from backupd.pitr.store import Store

    base = run_base_backup(settings, reason, incremental)
    try:
        prune_pitr(settings, Store(settings.backup_dir, base.doc.system_identifier), utc_now())
    except (OSError, BackupdError) as err:  # the base backup is made and kept: retention runs again daily
        log.error("the base backup was made, but the retention after it failed", id=base.id, error=str(err))
    _replicate_after(settings, True, then_replicate)
    return base


def _replicate_after(settings: Settings, made: bool, then_replicate: Replicate | None) -> None:
    if made and then_replicate is not None and replication_follows(settings):
        then_replicate()


@dataclass
class Pruned:
    """What one ``prune`` decided: the database backups (and roles dumps), the volume
    archives, and each cluster's PITR files (system identifier, its base backups' decisions
    and the files)."""

    dumps: PruneResult
    volumes: VolumePrune = field(default_factory=VolumePrune)
    pitr: list[tuple[str, PitrPruned]] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        """Backups and volume archives deleted (``backupd_retention_deleted_total``)."""
        return len(self.dumps.deleted) + len(self.volumes.deleted)


def prune(settings: Settings, dry_run: bool = False, database: str | None = None) -> Pruned:
    """Retention of everything: database backups, volume archives, and with PITR each
    cluster by its own window (an old cluster stays restorable until its own retention
    says otherwise). ``database`` limits it to that database's backups."""
    result = Pruned(run_prune(settings, dry_run=dry_run, database=database))
    if database is not None:
        return result
    result.volumes = prune_volumes(settings, dry_run=dry_run)
    if settings.pitr_enabled:
        from backupd.pitr.pruning import prune as prune_pitr
        from backupd.pitr.store import Store

        result.pitr = [(store.system_identifier, prune_pitr(settings, store, utc_now(), dry_run=dry_run))
                       for store in Store.all(Path(settings.backup_dir))]
    return result


def replication_follows(settings: Settings) -> bool:
    """Is there anywhere to replicate to (after each backup, and on the interval)?"""
    return bool(target_urls(settings)) or (settings.replication_enabled and settings.replication_type == "custom")


def replicate(settings: Settings, url: str | None = None, budget: float | None = None) -> list[TargetOutcome]:
    """Every backup to each target (or the one named), then the PITR files of every
    cluster in the folder, each with its retention there."""
    return run_replicate(settings, url, budget, also=[_pitr_files(settings)])


def _pitr_files(settings: Settings) -> AlsoSent:
    root = Repository(settings.backup_dir).root
    retention = (settings.pitr_retention_days, settings.backup_min_keep)

    def send(target: Target, remote: dict[str, RemoteFile]) -> tuple[list[str], list[str]]:
        from backupd.pitr.replicate import replicate_store
        from backupd.pitr.store import Store

        sent: list[str] = []
        deleted: list[str] = []
        for store in Store.all(root):
            more_sent, more_deleted = replicate_store(target, remote, store, root, retention)
            sent += more_sent
            deleted += more_deleted
        return sent, deleted
    return send
