"""Is backupd healthy? Decided from the repository (so backups and failures of CLI
runs and of earlier processes count) plus whether the scheduler runs.

Unhealthy: the scheduler has stopped, a database's newest good backup is older
than HEALTH_MAX_AGE, or its newest backup failed. A fresh daemon with an empty
repository is healthy until its first backup is due, plus that margin.
Warnings never make it unhealthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backupd.repository import Repository
from backupd.schedule import longest_gap, next_runs


@dataclass
class Health:
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        if self.healthy:
            return {"status": "ok", "warnings": self.warnings}
        return {"status": "unhealthy", "reasons": self.reasons, "warnings": self.warnings}


def max_age(settings, now: datetime) -> timedelta:
    """HEALTH_MAX_AGE, or twice the longest gap between two runs of BACKUP_SCHEDULE."""
    if settings.health_max_age:
        return timedelta(seconds=settings.health_max_age)
    return 2 * longest_gap(settings.backup_schedule, settings.backup_timezone, now)


def describe_age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 120:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def evaluate(settings, repo: Repository, now: datetime, started_at: datetime,
             scheduler_running: bool | None = None) -> Health:
    health = Health()
    limit = max_age(settings, now)
    if scheduler_running is False:
        health.reasons.append("the scheduler is not running")
    newest: dict[str, Any] = {}
    for backup in repo.backups():
        newest.setdefault(backup.database, backup)
    for name, backup in sorted(newest.items()):
        age = now - backup.time
        if age > limit:
            health.reasons.append(f"the newest backup of {name!r} is {describe_age(age)} old "
                                  f"(more than HEALTH_MAX_AGE, {describe_age(limit)})")
    for name, verification in sorted(newest_verifications(repo).items()):
        if verification["result"] == "failed":
            health.reasons.append(f"the newest verification of {name!r} ({verification['id']}) failed: "
                                  f"{verification['reason']}")
        elif verification["result"] == "unverifiable":
            health.warnings.append(f"the newest backup of {name!r} is unverifiable: {verification['reason']}")
    from backupd.actions.replicate import read_runs

    for url, run in sorted(read_runs(repo).items()):
        if not run.get("ok"):
            health.warnings.append(f"the newest replication to {url} failed at {run.get('time')}: {run.get('error')}")
    failures = repo.failures()
    for failure in sorted(failures, key=lambda f: (f.get("database") or "", f.get("time") or "")):
        name, kind = failure.get("database"), failure.get("kind", "database")
        if name is None:
            health.reasons.append(f"the last backup run failed at {failure['time']}: {failure['error']}")
        elif kind == "globals":
            health.reasons.append(f"the newest dump of roles and tablespaces failed at {failure['time']}: {failure['error']}")
        else:
            health.reasons.append(f"the newest backup of {name!r} failed at {failure['time']}: {failure['error']}")
    if not newest and not failures:
        first_due = next_runs(settings.backup_schedule, settings.backup_timezone, started_at, 1)
        if first_due and now > first_due[0] + limit:
            health.reasons.append(f"no backup yet, although the first was due at {first_due[0].isoformat()}")
    return health



def newest_verifications(repo: Repository) -> dict[str, dict[str, Any]]:
    """database -> the most recent verification of any of its backups, with the backup's id."""
    newest: dict[str, dict[str, Any]] = {}
    for backup in repo.backups(kind=None):
        verification = backup.state.get("verification")
        if not verification:
            continue
        current = newest.get(backup.database)
        if current is None or verification["time"] > current["time"]:
            newest[backup.database] = {**verification, "id": backup.id}
    return newest
