"""Prometheus metrics.

Facts about stored backups are read from the repository at scrape time, so neither a
restart nor a backup made with the CLI leaves them wrong: each scrape builds one
``backupd.view.View`` (one read of the repository, the run history and the PITR
clusters), and every collector here renders from it. Counters and job gauges belong to
this process.

/metrics never goes dark: a folder that cannot be read keeps the series of its last
good reading and is named by ``backupd_repository_folder_readable``; an unreadable
BACKUP_DIR sets ``backupd_repository_readable`` to 0; and any part of the scrape that
fails is logged, left out and counted in ``backupd_metrics_errors_total``, while
the other parts answer.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from backupd import __version__, origin
from backupd.health import free_ratio, max_age
from backupd.logging import get_logger
from backupd.manifests import TargetRun
from backupd.repository import PITR, Backup, Repository, parse_iso, utc_now
from backupd.view import Inventory, Live, View, build, read_inventory

if TYPE_CHECKING:
    from backupd.settings import Settings

LOCAL = "local"
# The parts of a scrape that fail alone; each starts at 0 in backupd_metrics_errors_total.
PARTS = ("repository", "backups", "verification", "replication", "volumes", "disk", "settings", "pitr", "health")

log = get_logger("backupd.metrics")
disable_created_metrics()  # *_created series only confuse dashboards here

Sample = tuple[str, list[str], float]  # (family, label values, value)
T = TypeVar("T")
ViewSource = Callable[[], View | None]  # the view of the scrape under way

# name -> (help, label names); unlabelled families appear only when they have a value.
FAMILIES: dict[str, tuple[str, list[str]]] = {
    "backupd_repository_readable": ("1 when BACKUP_DIR and all its folders could be read; 0 when not "
                                    "(the series of what cannot be read are from its last good reading)", []),
    "backupd_repository_folder_readable": ("1 when this folder of BACKUP_DIR could be read, 0 when not",
                                           ["folder"]),
    "backupd_replication_last_success_timestamp_seconds": (
        "Finish time of the newest replication run that succeeded", ["target"]),
    "backupd_backup_last_success_timestamp_seconds": ("Finish time of the newest good backup", ["database"]),
    "backupd_backup_last_duration_seconds": ("Duration of the newest good backup", ["database"]),
    "backupd_backup_last_size_bytes": ("Size of the newest good backup", ["database"]),
    "backupd_stored_backups": ("Backups kept", ["target", "database"]),
    "backupd_stored_bytes": ("Bytes kept", ["target"]),
    "backupd_verify_last_success_timestamp_seconds": ("Time of the newest verification that passed", ["database"]),
    "backupd_volume_backup_last_success_timestamp_seconds": ("Finish time of the newest archive of the volume",
                                                             ["volume"]),
    "backupd_disk_free_ratio": ("Free space in BACKUP_DIR, 0 to 1", []),
    "backupd_health_max_age_seconds": ("HEALTH_MAX_AGE: a newest backup older than this is unhealthy", []),
}


class Guard:
    """Runs one part of a scrape; a part that raises is logged (once, until it recovers),
    counted and left out, and the rest of the scrape goes on."""

    def __init__(self, errors: Counter):
        self.errors = errors
        self._failing: dict[str, str] = {}
        self._lock = threading.Lock()

    def one(self, part: str, produce: Callable[[], T]) -> T | None:
        """``produce()``, or None when it raised: the view's ``Attempt``."""
        got = self.run(part, lambda: [produce()])
        return got[0] if got else None

    def run(self, part: str, produce: Callable[[], Iterable[Any]], **context: str) -> list[Any]:
        key = " ".join([part, *context.values()])
        try:
            produced = list(produce())  # all of the part or none of it: never half a family
        except Exception as err:  # a bug or a surprise in one part must not take /metrics down
            self.errors.labels(part).inc()
            message = f"{type(err).__name__}: {err}"
            with self._lock:
                first = self._failing.get(key) != message
                self._failing[key] = message
            if first:
                log.error("a part of /metrics failed and is left out", part=part, error=message, **context)
            return []
        with self._lock:
            if self._failing.pop(key, None) is not None:
                log.info("a part of /metrics works again", part=part, **context)
        return produced


@dataclass
class Reading:
    """The repository as one scrape sees it."""

    backups: list[Backup]  # newest first; those of unreadable folders from their last good reading
    folders: dict[str, bool] = field(default_factory=dict)  # folder (relative to BACKUP_DIR) -> readable
    root_readable: bool = True

    @property
    def readable(self) -> bool:
        return self.root_readable and all(self.folders.values())


class RepositoryReader:
    """Remembers each folder's backups at its last good reading, so a folder that cannot be
    read keeps its series instead of vanishing under a 200."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self._known: dict[Path, list[Backup]] = {}

    def read(self) -> Reading:
        return self.recall(read_inventory(self.repo))

    def recall(self, inventory: Inventory) -> Reading:
        """``inventory``, with what could not be read now as it was at the last good reading."""
        if inventory.unreadable is not None:
            return Reading(_newest_first(b for known in self._known.values() for b in known), root_readable=False)
        folders, backups = inventory.folders, inventory.backups
        unreadable = {p.path if p.path in folders else p.path.parent for p in inventory.problems
                      if p.kind == "unreadable"}
        # A folder that held backups and is now a link to nowhere (a disk not mounted) or a
        # file is not a folder backupd can read; one that is gone altogether was deleted.
        lost = [f for f in self._known if f not in folders and os.path.lexists(f)]
        folders, unreadable = [*folders, *lost], unreadable | set(lost)
        known: dict[Path, list[Backup]] = {}
        for folder in folders:
            now = [b for b in backups if b.folder == folder]
            if folder in unreadable:  # what could not be read now is what was there last time
                ids = {b.id for b in now}
                now += [b for b in self._known.get(folder, []) if b.id not in ids]
            known[folder] = now
        self._known = known
        readable = {folder.relative_to(self.repo.root).as_posix(): folder not in unreadable for folder in folders}
        if inventory.pitr_readable is not None:  # point-in-time recovery's own layout
            readable[PITR] = inventory.pitr_readable
        return Reading(_newest_first(b for found in known.values() for b in found), readable)


def _newest_first(backups: Iterable[Backup]) -> list[Backup]:
    return sorted(backups, key=lambda b: (b.time, b.id), reverse=True)


class RepositoryCollector:
    """Gauges computed from the manifests in BACKUP_DIR, as the scrape's view read them."""

    def __init__(self, view: ViewSource, repo: Repository, guard: Guard, settings: Settings | None = None):
        self.view, self.settings, self.guard = view, settings, guard
        self.reader = RepositoryReader(repo)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        samples: list[Sample] = []
        view = self.view()
        inventory = view.inventory if view is not None else None
        if inventory is not None:  # None: the reading failed, and was counted
            samples += self._reading_samples(self.reader.recall(inventory))
        if view is not None and view.runs is not None:
            runs = view.runs
            samples += self.guard.run("replication", lambda: _replication_samples(runs))
        if view is not None:
            root = view.root
            samples += self.guard.run("disk", lambda: _disk_samples(root))
        if self.settings is not None:
            settings = self.settings
            limit = self.guard.run("settings", lambda: [max_age(settings, utc_now()).total_seconds()])
            samples += [("backupd_health_max_age_seconds", [], value) for value in limit]
        yield from _families(samples)

    def _reading_samples(self, reading: Reading) -> list[Sample]:
        samples: list[Sample] = [("backupd_repository_readable", [], float(reading.readable))]
        samples += [("backupd_repository_folder_readable", [name], float(ok))
                    for name, ok in sorted(reading.folders.items())]
        by_database: dict[str, list[Backup]] = {}
        for backup in reading.backups:
            if backup.kind == "database":
                by_database.setdefault(backup.database, []).append(backup)
        for name, backups in sorted(by_database.items()):
            samples += self.guard.run("backups", partial(_database_samples, name, backups), database=name)
        samples += self.guard.run("backups", lambda: _local_totals(reading.backups))
        samples += self.guard.run("verification", lambda: _verified_samples(reading.backups))
        samples += self.guard.run("volumes", lambda: _volume_samples(reading.backups))
        return samples


def _families(samples: list[Sample]) -> Iterator[Metric]:
    """One family per name, in FAMILIES' order (one name twice would be an invalid exposition)."""
    for name, (documentation, labels) in FAMILIES.items():
        mine = [(values, value) for family, values, value in samples if family == name]
        if not mine and not labels:
            continue
        family = GaugeMetricFamily(name, documentation, labels=labels or None)
        for values, value in mine:
            family.add_metric(values, value)
        yield family


def _database_samples(name: str, backups: list[Backup]) -> list[Sample]:
    """The newest backup of one database (``backups`` newest first)."""
    newest = backups[0]
    return [("backupd_backup_last_success_timestamp_seconds", [name], newest.finished.timestamp()),
            ("backupd_backup_last_duration_seconds", [name], newest.doc.duration_seconds),
            ("backupd_backup_last_size_bytes", [name], float(newest.size))]


def _local_totals(backups: list[Backup]) -> list[Sample]:
    counts: dict[str, int] = {}
    for backup in backups:
        counts[backup.database] = counts.get(backup.database, 0) + 1
    return [*(("backupd_stored_backups", [LOCAL, name], float(count)) for name, count in sorted(counts.items())),
            ("backupd_stored_bytes", [LOCAL], float(sum(b.size for b in backups)))]


def _verified_samples(backups: list[Backup]) -> list[Sample]:
    verified_at: dict[str, float] = {}
    for backup in backups:
        verification = backup.state_doc.verification
        if verification is not None and verification.result == "passed":
            at = verification.time.replace(microsecond=0).timestamp()
            verified_at[backup.database] = max(at, verified_at.get(backup.database, 0.0))
    return [("backupd_verify_last_success_timestamp_seconds", [name], at) for name, at in sorted(verified_at.items())]


def _volume_samples(backups: list[Backup]) -> list[Sample]:
    samples: list[Sample] = []
    seen: set[str] = set()
    for backup in backups:
        if backup.kind == "volume" and backup.database not in seen:
            seen.add(backup.database)
            samples.append(("backupd_volume_backup_last_success_timestamp_seconds", [backup.database],
                            backup.finished.timestamp()))
    return samples


def _replication_samples(runs: dict[str, TargetRun]) -> list[Sample]:
    samples: list[Sample] = []
    for url, run in sorted(runs.items()):
        if run.last_success:
            samples.append(("backupd_replication_last_success_timestamp_seconds", [url],
                            run.last_success.replace(microsecond=0).timestamp()))
        samples += [("backupd_stored_backups", [url, name], float(count)) for name, count in sorted(run.stored.items())]
        if run.confirmed:
            samples.append(("backupd_stored_bytes", [url], float(run.stored_bytes)))
    return samples


def _seconds(text: Any) -> float:
    """A stored ISO time as a Unix time; one that is missing or malformed fails its part."""
    when = parse_iso(text)
    if when is None:
        raise ValueError(f"not a time: {text!r}")
    return when.timestamp()


def _disk_samples(root: Path) -> list[Sample]:
    free = free_ratio(root)
    return [] if free is None else [("backupd_disk_free_ratio", [], free)]


class PitrCollector:
    """The WAL stream and the recovery window of the cluster this daemon streams from."""

    def __init__(self, view: ViewSource, guard: Guard):
        self.view, self.guard = view, guard

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.guard.run("pitr", self._collect)

    def _collect(self) -> Iterator[Metric]:
        if (view := self.view()) is None:
            return
        state = view.live.receiver or {}
        if state.get("lag_bytes") is not None:
            yield GaugeMetricFamily("backupd_pitr_lag_bytes", "The server's current WAL position minus the "
                                    "newest received", value=state["lag_bytes"])
        report = view.pitr or {}
        if report.get("system_identifier") is None:  # not known yet, or not readable (counted)
            return
        if (received := report.get("newest_received")) is not None:
            yield GaugeMetricFamily("backupd_pitr_last_received_timestamp_seconds",
                                    "When WAL last reached BACKUP_DIR", value=_seconds(received))
        if (window := report.get("window")) is not None:
            yield GaugeMetricFamily("backupd_pitr_window_start_timestamp_seconds", "The earliest restorable moment",
                                    value=_seconds(window["start"]))
        if bases := report.get("base_backups"):
            yield GaugeMetricFamily("backupd_pitr_base_last_success_timestamp_seconds",
                                    "When the newest base backup ended", value=_seconds(bases[0]["stop_time"]))
        drill = report.get("last_drill") or {}
        if success := parse_iso(drill.get("last_success")):
            yield GaugeMetricFamily("backupd_pitr_verify_last_success_timestamp_seconds",
                                    "When the last PITR drill succeeded", value=success.timestamp())
        if isinstance(drilled := drill.get("seconds"), int | float):
            yield GaugeMetricFamily("backupd_pitr_drill_seconds", "How long the last PITR drill took", value=drilled)
        if isinstance(restore := report.get("restore_estimate_seconds"), int | float):
            yield GaugeMetricFamily("backupd_pitr_restore_estimate_seconds", "How long a restore to now would take, "
                                    "from the last drill's rates", value=restore)


class HealthCollector:
    """``backupd_healthy``: what /healthz says, so a fleet's health is one query. Judged
    from the scrape's view: no second read of the repository."""

    def __init__(self, view: ViewSource, guard: Guard):
        self.view, self.guard = view, guard

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.guard.run("health", self._collect)

    def _collect(self) -> Iterator[Metric]:
        view = self.view()
        if view is not None and view.health is not None:  # None: its reading failed, and was counted
            yield GaugeMetricFamily("backupd_healthy", "1 when /healthz answers ok, 0 when unhealthy",
                                    value=float(view.health.healthy))


class InstanceCollector:
    """``backupd_instance_info``: this sidecar's BACKUP_INSTANCE as a label, so dashboards
    and alerts can name it beside Prometheus' own ``instance`` (host:port). Left out until
    the name is known; never asks the server, so a scrape never waits for it."""

    def __init__(self, settings: Settings, guard: Guard):
        self.settings, self.guard = settings, guard

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self.guard.run("settings", self._collect)

    def _collect(self) -> Iterator[Metric]:
        name = origin.instance_if_known(self.settings)
        if name is None:
            return
        family = GaugeMetricFamily("backupd_instance_info", "This sidecar's instance name (BACKUP_INSTANCE or "
                                   "its default) and its server's system identifier (empty until known)",
                                   labels=["backup_instance", "system_identifier"])
        family.add_metric([name, origin.system_identifier_if_known() or ""], 1.0)
        yield family


class Metrics:
    def __init__(self, repo: Repository, settings: Settings | None = None):
        self.repo, self.settings = repo, settings
        self.registry = CollectorRegistry()
        # Rendered after everything else, so a scrape counts its own failures.
        self.errors_registry = CollectorRegistry()
        errors = Counter("backupd_metrics_errors", "Parts of a scrape left out because they failed (see the log)",
                         ["part"], registry=self.errors_registry)
        for part in PARTS:
            errors.labels(part)
        self.guard = Guard(errors)
        self._started = utc_now()
        self._live: Callable[[], Live] = lambda: Live(started_at=self._started)
        self._judge, self._pitr = False, False  # build only what a collector shows
        self._view: View | None = None  # the scrape under way's
        self._scrape = threading.Lock()
        self.registry.register(RepositoryCollector(self.current, repo, self.guard, settings))
        self._counters()

    def _counters(self) -> None:
        self.backups_total = Counter("backupd_backups", "Backups attempted by this process",
                                     ["database", "result"], registry=self.registry)
        self.verify_total = Counter("backupd_verify", "Verifications run by this process",
                                    ["database", "result"], registry=self.registry)
        self.retention_deleted_total = Counter("backupd_retention_deleted", "Backups deleted by retention",
                                               ["target"], registry=self.registry)
        self.replication_total = Counter("backupd_replication", "Replication runs by this process",
                                         ["target", "result"], registry=self.registry)
        self.notifications_failed_total = Counter(
            "backupd_notifications_failed", "Notifications a channel did not take after every retry",
            ["channel"], registry=self.registry)
        self.job_running = Gauge("backupd_job_running", "1 while the job runs", ["job"], registry=self.registry)
        self.next_run = Gauge("backupd_next_run_timestamp_seconds", "When the job runs next", ["job"],
                              registry=self.registry)
        build_info = Gauge("backupd_build_info", "backupd's version", ["version"], registry=self.registry)
        build_info.labels(__version__).set(1)

    def current(self) -> View | None:
        return self._view

    def add_pitr(self) -> None:
        self._pitr = True
        self.registry.register(PitrCollector(self.current, self.guard))

    def add_instance(self) -> None:
        if self.settings is not None:
            self.registry.register(InstanceCollector(self.settings, self.guard))

    def add_health(self, live: Callable[[], Live]) -> None:
        """``live``: the daemon's state in memory (scheduler, WAL stream, leftovers)."""
        self._live, self._judge = live, True
        self.registry.register(HealthCollector(self.current, self.guard))

    def render(self) -> bytes:
        with self._scrape:  # one view per scrape, read before any collector runs
            live = self.guard.one("health", self._live) or Live(started_at=self._started)
            self._view = build(self.settings, self.repo, live, self.guard.one, health=self._judge,
                               pitr="streamed" if self._pitr else None)
            try:
                return generate_latest(self.registry) + generate_latest(self.errors_registry)
            finally:
                self._view = None
