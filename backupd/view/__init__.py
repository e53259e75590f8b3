"""One reading of everything backupd knows, for /status, the status page and /metrics.

``build`` reads the repository (backups and stored problems, its folders), the failure
records, the replication run history and every PITR cluster once, and judges health from
that same reading. The three outputs render from the ``View`` it returns (render.py, and
metrics.py), so a scrape or a request reads BACKUP_DIR once instead of once per part.

A part that cannot be read never takes the others with it: ``attempt`` runs each part;
the one given by /metrics counts a part that raised in ``backupd_metrics_errors_total``,
the default logs it. Such a part is None in the view, and each output leaves it out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from backupd import failures as failure_records
from backupd import origin
from backupd.errors import RepositoryUnreadable
from backupd.failures import Failure
from backupd.health import Facts, Health, judge
from backupd.leftovers import Leftover
from backupd.logging import get_logger
from backupd.manifests import TargetRun
from backupd.repository import PITR, Backup, Problem, Repository, utc_now
from backupd.runs import read_runs

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.view")
T = TypeVar("T")


class Attempt(Protocol):
    """Runs one part of a reading; None when it raised (and says so its own way)."""

    def __call__(self, part: str, produce: Callable[[], T]) -> T | None: ...


def logged(part: str, produce: Callable[[], T]) -> T | None:
    """The default ``Attempt``: a part that raises is logged and left out of the answer."""
    try:
        return produce()
    except Exception as err:  # a bug or a surprise in one part must not take an endpoint down
        log.error("a part of the status could not be read and is left out", part=part,
                  error=f"{type(err).__name__}: {err}")
        return None


@dataclass(frozen=True)
class Job:
    """A scheduled job as the daemon knows it (in memory)."""

    name: str
    schedule: str | None
    next_run: datetime | None
    running: bool
    last: dict[str, Any] | None = None


@dataclass(frozen=True)
class Live:
    """What the daemon holds in memory: reading it costs nothing."""

    started_at: datetime
    scheduler_running: bool | None = None
    receiver: dict[str, Any] | None = None  # the WAL stream's state; None without one
    leftovers: list[Leftover] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)


@dataclass(frozen=True)
class Inventory:
    """The repository's backups and the folders they were read from."""

    backups: list[Backup]  # newest first
    problems: list[Problem]
    folders: list[Path]  # every folder that holds backups
    unreadable: str | None = None  # why BACKUP_DIR itself cannot be read
    pitr_readable: bool | None = None  # None: there is no _pitr folder


@dataclass(frozen=True)
class View:
    """Everything /status, the status page and /metrics show, read at one moment. A part
    that could not be read is None."""

    now: datetime
    root: Path
    live: Live
    inventory: Inventory | None
    failures: list[Failure] | None  # the repository's failure records
    runs: dict[str, TargetRun] | None  # replication target -> its newest run
    pitr: dict[str, Any] | None  # pitr.status.describe: every cluster, this server's at the top
    health: Health | None
    instance: str | None

    @property
    def backups(self) -> list[Backup]:
        return self.inventory.backups if self.inventory else []


def read_inventory(repo: Repository) -> Inventory:
    """The backups (one scan of each folder), or why BACKUP_DIR cannot be read."""
    try:
        backups, problems = repo.inventory(kind=None)
        folders = repo.folders()
    except RepositoryUnreadable as err:
        return Inventory([], [], [], unreadable=str(err))
    pitr = repo.root / PITR
    return Inventory(backups, problems, folders, pitr_readable=_listable(pitr) if pitr.exists() else None)


def _listable(folder: Path) -> bool:
    try:
        os.listdir(folder)
    except OSError:
        return False
    return True


def build(settings: Settings | None, repo: Repository, live: Live, attempt: Attempt = logged,
          health: bool = True, pitr: Literal["every", "streamed"] | None = "every") -> View:
    """One reading. ``pitr``: every cluster in the folder (/status, the page), only the one
    the WAL stream comes from (/metrics), or none; ``health`` False leaves the verdict out
    (a /metrics without ``backupd_healthy``)."""
    now = utc_now()
    inventory = attempt("repository", lambda: read_inventory(repo))
    failures = attempt("health", lambda: failure_records.of_repository(repo.root))
    runs = attempt("replication", lambda: read_runs(repo))
    described: dict[str, Any] | None = None
    if settings is not None and settings.pitr_enabled and pitr is not None:
        described = attempt("pitr", lambda: _describe_pitr(settings, live.receiver, pitr == "streamed"))
    verdict = None
    if settings is not None and health:
        verdict = attempt("health", lambda: _judge(settings, now, repo.root, inventory, failures, runs, live))
    instance = origin.instance_if_known(settings) if settings is not None else None
    return View(now, repo.root, live, inventory, failures, runs, described, verdict, instance)


def _describe_pitr(settings: Settings, receiver: dict[str, Any] | None, streamed: bool) -> dict[str, Any] | None:
    """``streamed``: the cluster the WAL stream comes from alone; None before the stream's
    server first answered, or while that cluster has no folder yet."""
    from backupd.pitr import status as pitr_status

    if not streamed:
        return pitr_status.describe(settings, receiver)
    server = (receiver or {}).get("system_identifier")
    if server is None or not str(server).isdigit() or not (Path(settings.backup_dir) / PITR / server).is_dir():
        return None
    return pitr_status.describe(settings, receiver, cluster=server)


def _judge(settings: Settings, now: datetime, root: Path, inventory: Inventory | None,
           failures: list[Failure] | None, runs: dict[str, TargetRun] | None, live: Live) -> Health:
    if inventory is None:
        raise RuntimeError("the repository's reading failed (see the log)")
    facts: Facts | str = inventory.unreadable or Facts(root, inventory.backups, inventory.problems,
                                                       failures or [], runs or {})
    health = judge(settings, facts, now, live.started_at, live.scheduler_running, live.receiver, live.leftovers)
    # A part that could not be read is no evidence that nothing failed (the log says why)
    if failures is None:
        health.fail("failures", "the records of failed jobs could not be read")
    if runs is None:
        health.fail("replication", "the replication history could not be read")
    return health
