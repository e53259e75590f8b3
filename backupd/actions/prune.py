"""``backupd prune``: apply retention to the local repository.

Given the settings (and optionally one database, ``dry_run`` and the time to
judge by), returns every backup with its decision and reason, and what was
deleted. Globals dumps follow their database backups: one is kept while a kept
backup refers to it (and the newest always). Unfinished files older than a day
are removed.
"""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backupd.logging import get_logger
from backupd.repository import GLOBALS, Backup, Repository, encode_name, utc_now
from backupd.retention import Decision, Item, Policy, decide

log = get_logger("backupd.prune")

STALE_AFTER = 86400.0


@dataclass
class PruneResult:
    decisions: list[tuple[Backup, Decision]] = field(default_factory=list)
    deleted: list[Backup] = field(default_factory=list)
    leftovers_removed: list[Path] = field(default_factory=list)


def run_prune(settings, dry_run: bool = False, database: str | None = None,
              now: datetime | None = None, databases: list[str] | None = None) -> PruneResult:
    """Retention for every database, or only ``database`` / ``databases`` (the ones a run
    just backed up); roles dumps are decided once, over the whole repository."""
    repo = Repository(settings.backup_dir)
    now = now or utc_now()
    policy = Policy.from_settings(settings)
    result = PruneResult()
    chosen = [database] if database else databases
    backups = [b for name in chosen for b in repo.backups(name)] if chosen is not None else repo.backups()
    by_id = {b.id: b for b in backups}
    for decision in decide((Item(b.id, b.database, b.time, b.pinned) for b in backups), now, policy):
        result.decisions.append((by_id[decision.item.id], decision))
    kept_ids = {b.id for b, d in result.decisions if d.keep}
    doomed = [b for b, d in result.decisions if not d.keep]
    result.decisions += _globals_decisions(repo, kept_ids | {b.id for b in repo.backups() if b.id not in by_id})
    doomed += [b for b, d in result.decisions if not d.keep and b.kind == "globals"]
    if dry_run:
        return result
    for backup in doomed:
        delete_backup(repo, backup)
        result.deleted.append(backup)
        log.info("deleted by retention", id=backup.id, database=backup.database,
                 reason="no retention rule keeps it")
    result.leftovers_removed = remove_leftovers(repo)
    return result


def _globals_decisions(repo: Repository, kept_database_ids: set[str]) -> list[tuple[Backup, Decision]]:
    """A globals dump is kept while a kept database backup refers to it; the newest always."""
    wanted = {repo_backup.manifest.get("globals_id") for repo_backup in repo.backups()
              if repo_backup.id in kept_database_ids}
    decisions = []
    for index, backup in enumerate(repo.backups(kind="globals")):
        decision = Decision(Item(backup.id, GLOBALS, backup.time, backup.pinned))
        if index == 0:
            decision.reasons.append("the newest roles dump")
        if backup.id in wanted:
            decision.reasons.append("a kept backup needs it")
        if backup.pinned:
            decision.reasons.append("pinned")
        decisions.append((backup, decision))
    return decisions


def delete_backup(repo: Repository, backup: Backup) -> None:
    """Manifest first, so the backup stops being listed at once; then its file and state."""
    with repo.lock(backup.folder, "prune"):
        backup.manifest_path.unlink(missing_ok=True)
        backup.path.unlink(missing_ok=True)
        (backup.folder / f"{encode_name(backup.id)}.state.json").unlink(missing_ok=True)


def remove_leftovers(repo: Repository, older_than: float = STALE_AFTER) -> list[Path]:
    """Partial files and staging folders of runs that died, and files no manifest names,
    once they are older than a day (a running backup's files are younger)."""
    if not repo.root.is_dir():
        return []
    named: set[Path] = set()
    for backup in repo.backups(kind=None):
        named |= {backup.path, backup.manifest_path, backup.folder / f"{encode_name(backup.id)}.state.json"}
    cutoff = time.time() - older_than
    removed = []
    for folder in [repo.root, *[p for p in repo.root.iterdir() if p.is_dir()]]:
        for path in folder.iterdir():
            hidden_leftover = path.name.endswith((".partial", ".staging"))
            orphan = not path.name.startswith(".") and path.is_file() and path not in named and folder != repo.root
            if (hidden_leftover or orphan) and path.lstat().st_mtime < cutoff:
                with repo.lock(folder, "cleanup") if folder != repo.root else nullcontext():
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                removed.append(path)
                log.warning("removed a leftover file", file=str(path))
    return removed

