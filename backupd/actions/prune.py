"""``backupd prune``: apply retention to the local repository.

Given the settings (and optionally one database, ``dry_run`` and the time to
judge by), returns every backup with its decision and reason, and what was
deleted. Globals dumps follow their database backups: one is kept while a kept
backup refers to it (and the newest always). What runs that died left behind
(backupd's own partial files and staging folders) is removed; nothing else is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.logging import get_logger
from backupd.repository import GLOBALS, Backup, Repository, utc_now
from backupd.retention import Decision, Item, Policy, decide

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.prune")

STALE_AFTER = 86400.0


@dataclass
class PruneResult:
    decisions: list[tuple[Backup, Decision]] = field(default_factory=list)
    deleted: list[Backup] = field(default_factory=list)


def run_prune(settings: Settings, dry_run: bool = False, database: str | None = None,
              now: datetime | None = None, databases: list[str] | None = None,
              just_made: frozenset[str] = frozenset()) -> PruneResult:
    """Retention for every database, or only ``database`` / ``databases`` (the ones a run
    just backed up); roles dumps are decided once, over the whole repository. A damaged
    backup (its file's size is not the manifest's) is no good backup: it neither counts
    for ``BACKUP_MIN_KEEP`` nor is deleted; it stays for a person to look at."""
    repo = Repository(settings.backup_dir)
    now = now or utc_now()
    policy = Policy.from_settings(settings)
    result = PruneResult()
    chosen = [database] if database else databases
    listed = [b for name in chosen for b in repo.backups(name)] if chosen is not None else repo.backups()
    backups = [b for b in listed if not b.damaged]
    by_id = {b.id: b for b in backups}
    for decision in decide((Item(b.id, b.database, b.time, b.pinned) for b in backups), now, policy):
        if decision.item.id in just_made:  # never by its own run (a backup dated in the future may look newer)
            decision.reasons.append("made by this run")
        result.decisions.append((by_id[decision.item.id], decision))
    for backup in listed:
        if backup.damaged:
            result.decisions.append((backup, Decision(Item(backup.id, backup.database, backup.time, backup.pinned),
                                                      [f"damaged, kept for a person to look at: {backup.damaged}"])))
    kept_ids = {b.id for b, d in result.decisions if d.keep}
    doomed = [b for b, d in result.decisions if not d.keep]
    everything, problems = repo.inventory()
    hidden = [str(p.path) for p in problems if p.kind == "unreadable"]
    result.decisions += _globals_decisions(repo, everything, kept_ids | {b.id for b in everything if b.id not in by_id},
                                           keep_all=bool(hidden))
    doomed += [b for b, d in result.decisions if not d.keep and b.kind == "globals"]
    if dry_run:
        return result
    for backup in doomed:
        if not repo.delete(backup):
            continue
        result.deleted.append(backup)
        log.info("deleted by retention", id=backup.id, database=backup.database,
                 reason="no retention rule keeps it")
    remove_leftovers(repo)
    return result


def _globals_decisions(repo: Repository, database_backups: list[Backup], kept_database_ids: set[str],
                       keep_all: bool = False) -> list[tuple[Backup, Decision]]:
    """A globals dump is kept while a kept database backup (of ``database_backups``, the whole
    repository's) refers to it; the newest always. ``keep_all``: a folder cannot be read, so
    its backups' needs are unknown: every one stays."""
    wanted = {backup.globals_id for backup in database_backups if backup.id in kept_database_ids}
    decisions = []
    for index, backup in enumerate(repo.backups(kind="globals")):
        decision = Decision(Item(backup.id, GLOBALS, backup.time, backup.pinned))
        if index == 0:
            decision.reasons.append("the newest roles dump")
        if backup.id in wanted:
            decision.reasons.append("a kept backup needs it")
        if keep_all:
            decision.reasons.append("a folder of the repository cannot be read: its backups may need it")
        if backup.pinned:
            decision.reasons.append("pinned")
        if backup.damaged:
            decision.reasons.append(f"damaged, kept for a person to look at: {backup.damaged}")
        decisions.append((backup, decision))
    return decisions


def remove_leftovers(repo: Repository, older_than: float = STALE_AFTER) -> list[Path]:
    """What runs that died left behind, and only that: backupd's own partial files, staging
    folders and half-done deletions. A stored file whose manifest is lost is never removed:
    ``list`` and ``/healthz`` report it, and it can be restored by path."""
    return repo.remove_stale_temporaries(older_than) + repo.clean_unfinished()
