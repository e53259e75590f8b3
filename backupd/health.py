"""Is backupd healthy? Decided from the repository (so backups and failures of CLI
runs and of earlier processes count) plus whether the scheduler runs.

Unhealthy (reasons): the scheduler has stopped, a database's newest good backup is
older than HEALTH_MAX_AGE, its newest backup or verification failed, its newest
backup's file is damaged, or the repository cannot be read. A fresh daemon
with an empty repository is healthy until its first backup is due, plus that margin.
Warnings never make it unhealthy: a backup much smaller than the one before, low disk,
fewer good backups than BACKUP_MIN_KEEP, an unverifiable backup, a failed replication,
a stored file without a readable manifest.

Each finding is a Condition with a stable key, so notifications can tell a new
problem from one already reported, and notice when it is gone.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd import failures
from backupd.errors import RepositoryUnreadable
from backupd.failures import Failure
from backupd.leftovers import Leftover
from backupd.manifests import TargetRun, Verification, iso_text
from backupd.repository import Backup, Problem, Repository, iso
from backupd.schedule import longest_gap, next_runs

if TYPE_CHECKING:
    from backupd.settings import Settings


@dataclass(frozen=True)
class Condition:
    key: str  # stable while the problem lasts, e.g. "stale:shop"
    message: str  # for people; may change (ages, times)
    severity: str  # "failure" (unhealthy) or "warning"


@dataclass
class Health:
    conditions: list[Condition] = field(default_factory=list)

    def fail(self, key: str, message: str) -> None:
        self.conditions.append(Condition(key, message, "failure"))

    def warn(self, key: str, message: str) -> None:
        self.conditions.append(Condition(key, message, "warning"))

    @property
    def reasons(self) -> list[str]:
        return [c.message for c in self.conditions if c.severity == "failure"]

    @property
    def warnings(self) -> list[str]:
        return [c.message for c in self.conditions if c.severity == "warning"]

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        if self.healthy:
            return {"status": "ok", "warnings": self.warnings}
        return {"status": "unhealthy", "reasons": self.reasons, "warnings": self.warnings}


@dataclass(frozen=True)
class Facts:
    """What the verdict is judged from, read once by the caller (``evaluate``, or the view
    that /status, the status page and /metrics share)."""

    root: Path
    backups: list[Backup]  # newest first
    problems: list[Problem]
    failures: list[Failure]  # the repository's failure records
    runs: dict[str, TargetRun]  # replication target -> its newest run


def max_age(settings: Settings, now: datetime) -> timedelta:
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


def evaluate(settings: Settings, repo: Repository, now: datetime, started_at: datetime,
             scheduler_running: bool | None = None, pitr_receiver: dict[str, Any] | None = None,
             leftovers: Iterable[Leftover] = ()) -> Health:
    """The verdict, reading the repository for it (notifications, one-shot commands)."""
    from backupd.runs import read_runs

    try:
        backups, problems = repo.inventory(kind=None)  # newest first
    except RepositoryUnreadable as err:
        facts: Facts | str = str(err)
    else:
        facts = Facts(repo.root, backups, problems, failures.of_repository(repo.root), read_runs(repo))
    return judge(settings, facts, now, started_at, scheduler_running, pitr_receiver, leftovers)


def judge(settings: Settings, facts: Facts | str, now: datetime, started_at: datetime,
          scheduler_running: bool | None = None, pitr_receiver: dict[str, Any] | None = None,
          leftovers: Iterable[Leftover] = ()) -> Health:
    """``facts``: what was read, or why BACKUP_DIR cannot be read. ``pitr_receiver``: the
    daemon's WAL stream (Receiver.state), judged with the PITR files; ``leftovers``: side
    databases that interrupted restores left on the server."""
    health = Health()
    for leftover in leftovers:
        health.warn(f"leftover:{leftover.name}", leftover.detail)
    if scheduler_running is False:
        health.fail("scheduler", "the scheduler is not running")
    if settings.pitr_enabled:
        _pitr(settings, health, pitr_receiver, now)
    if isinstance(facts, str):
        health.fail("repository", facts)
        return health
    by_database: dict[str, list[Backup]] = {}
    for backup in facts.backups:
        if backup.kind == "database":
            by_database.setdefault(backup.database, []).append(backup)
    _freshness(settings, health, by_database, now)
    _damage(health, by_database, facts.problems)
    _verifications(health, facts.backups)
    _failures(health, facts.failures, by_database)
    _replication(health, facts.runs)
    _sizes(settings, health, by_database)
    _disk(settings, health, facts.root)
    if not by_database and not facts.failures:
        limit = max_age(settings, now)
        first_due = next_runs(settings.backup_schedule, settings.backup_timezone, started_at, 1)
        if first_due and now > first_due[0] + limit:
            health.fail("no-backup", f"no backup yet, although the first was due at {first_due[0].isoformat()}")
    return health


def _pitr(settings: Settings, health: Health, receiver: dict[str, Any] | None, now: datetime) -> None:
    from backupd.pitr.status import problems

    try:
        fails, warns = problems(settings, receiver, now)
    except OSError as err:
        health.fail("pitr", f"the point-in-time recovery files cannot be read: {err.strerror or err}")
        return
    for key, message in fails:
        health.fail(key, message)
    for key, message in warns:
        health.warn(key, message)


def _freshness(settings: Settings, health: Health, by_database: dict[str, list[Backup]], now: datetime) -> None:
    limit = max_age(settings, now)
    for name, backups in sorted(by_database.items()):
        good = [b for b in backups if not b.damaged]
        if not good:
            continue  # _damage tells
        age = now - good[0].time
        if age > limit:
            health.fail(f"stale:{name}", f"the newest backup of {name!r} is {describe_age(age)} old "
                                          f"(more than HEALTH_MAX_AGE, {describe_age(limit)})")
        if len(good) < settings.backup_min_keep:
            health.warn(f"min-keep:{name}", f"{name!r} has {len(good)} good backups, fewer than "
                                            f"BACKUP_MIN_KEEP ({settings.backup_min_keep})")


def _damage(health: Health, by_database: dict[str, list[Backup]], problems: list[Problem]) -> None:
    """A newest backup whose file is not what its manifest says is no good backup; an older
    damaged one, and a stored file that no manifest accounts for, need a person's look."""
    for name, backups in sorted(by_database.items()):
        for index, backup in enumerate(backups):
            if backup.damaged and index == 0:
                health.fail(f"damaged:{name}", f"the newest backup of {name!r} ({backup.id}) is damaged: "
                                               f"{backup.damaged}")
            elif backup.damaged:
                health.warn(f"damaged:{backup.id}", f"backup {backup.id} of {name!r} is damaged: {backup.damaged}")
    for problem in problems:
        message = f"{problem.path}: {problem.detail} (see `backupd list`)"
        if problem.kind == "unreadable":  # its backups are out of sight: freshness cannot be judged
            health.fail(f"unreadable:{problem.path}", message)
        else:
            health.warn(f"{problem.kind}:{problem.path}", message)


def _verifications(health: Health, backups: list[Backup]) -> None:
    for name, (verification, backup_id) in sorted(newest_verifications(backups).items()):
        if verification.result == "failed":
            health.fail(f"verify:{name}", f"the newest verification of {name!r} ({backup_id}) failed: "
                                          f"{verification.reason}")
        elif verification.result == "unverifiable":
            health.warn(f"unverifiable:{name}", f"the newest backup of {name!r} is unverifiable: "
                                                f"{verification.reason}")


def _failures(health: Health, failures: list[Failure], by_database: dict[str, list[Backup]]) -> None:
    for failure in sorted(failures, key=lambda f: (f.job.name or "", iso(f.time) or "")):
        name, kind = failure.job.name, failure.job.kind
        when, error = iso(failure.time) or "", failure.error
        newest = by_database.get(name) if kind == "database" and name else None
        if newest and failure.time and newest[0].time > failure.time.replace(microsecond=0):
            continue  # a later backup (another process's, say) succeeded: the failure is over
        if name is None:
            health.fail("run", f"the last backup run failed at {when}: {error}")
        elif kind == "globals":
            health.fail("globals", f"the newest dump of roles and tablespaces failed at {when}: {error}")
        else:
            health.fail(f"backup:{name}", f"the newest backup of {name!r} failed at {when}: {error}")


def _replication(health: Health, runs: dict[str, TargetRun]) -> None:
    for url, run in sorted(runs.items()):
        if not run.ok:
            health.warn(f"replication:{url}", f"the newest replication to {url} failed at {iso_text(run.time)}: "
                                              f"{run.error}")


def _sizes(settings: Settings, health: Health, by_database: dict[str, list[Backup]]) -> None:
    drop = settings.backup_size_drop_percent
    for name, backups in sorted(by_database.items()):
        if len(backups) >= 2 and drop and backups[0].size < backups[1].size * (1 - drop / 100):
            health.warn(f"size-drop:{name}", f"the newest backup of {name!r} ({backups[0].size} bytes) is more than "
                                             f"{drop}% smaller than the one before ({backups[1].size} bytes)")


def _disk(settings: Settings, health: Health, root: Path) -> None:
    free = free_ratio(root)
    if free is not None and free * 100 < settings.disk_min_free_percent:
        health.warn("disk", f"{root} has {free * 100:.1f}% free, less than DISK_MIN_FREE_PERCENT "
                            f"({settings.disk_min_free_percent}%)")


def free_ratio(root: Path) -> float | None:
    try:
        usage = shutil.disk_usage(root)
    except OSError:
        return None
    return usage.free / usage.total if usage.total else None


def newest_verifications(backups: Iterable[Backup]) -> dict[str, tuple[Verification, str]]:
    """database -> the most recent verification of any of ``backups``, with the backup's id
    (from a listing the caller made already: reading the repository costs a scan)."""
    newest: dict[str, tuple[Verification, str]] = {}
    for backup in backups:
        verification = backup.state_doc.verification
        if verification is None:
            continue
        current = newest.get(backup.database)
        if current is None or verification.time.replace(microsecond=0) > current[0].time.replace(microsecond=0):
            newest[backup.database] = (verification, backup.id)
    return newest
