"""Prometheus metrics (interface §5).

Facts about stored backups are read from the repository at scrape time (cached
for a few seconds), so neither a restart nor a backup made with the CLI leaves
them wrong. Counters and job gauges belong to this process.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

from backupd import __version__
from backupd.actions.replicate import read_runs
from backupd.health import free_ratio, max_age
from backupd.repository import Repository, parse_iso, utc_now

LOCAL = "local"

disable_created_metrics()  # *_created series only confuse dashboards here


class RepositoryCollector:
    """Gauges computed from the manifests in BACKUP_DIR."""

    def __init__(self, repo: Repository, settings=None, ttl: float = 5.0):
        self.repo, self.settings, self.ttl = repo, settings, ttl
        self._cache: tuple[float, list] | None = None
        self._lock = threading.Lock()

    def _backups(self) -> list:
        with self._lock:
            if self._cache and time.monotonic() - self._cache[0] < self.ttl:
                return self._cache[1]
            backups = self.repo.backups(kind=None)
            self._cache = (time.monotonic(), backups)
            return backups

    def invalidate(self) -> None:
        with self._lock:
            self._cache = None

    def describe(self):
        return []

    def collect(self):
        backups = self._backups()
        last_success = GaugeMetricFamily("backupd_backup_last_success_timestamp_seconds",
                                         "Finish time of the newest good backup", labels=["database"])
        last_duration = GaugeMetricFamily("backupd_backup_last_duration_seconds",
                                          "Duration of the newest good backup", labels=["database"])
        last_size = GaugeMetricFamily("backupd_backup_last_size_bytes", "Size of the newest good backup",
                                      labels=["database"])
        stored = GaugeMetricFamily("backupd_stored_backups", "Backups kept", labels=["target", "database"])
        stored_bytes = GaugeMetricFamily("backupd_stored_bytes", "Bytes kept", labels=["target"])
        verified = GaugeMetricFamily("backupd_verify_last_success_timestamp_seconds",
                                     "Time of the newest verification that passed", labels=["database"])
        verified_at: dict[str, float] = {}
        for backup in backups:
            verification = backup.state.get("verification") or {}
            if verification.get("result") == "passed":
                at = parse_iso(verification["time"]).timestamp()
                verified_at[backup.database] = max(at, verified_at.get(backup.database, 0.0))
        for name, at in sorted(verified_at.items()):
            verified.add_metric([name], at)
        counts: dict[str, int] = {}
        seen: set[str] = set()
        for backup in backups:  # newest first
            name = backup.database
            counts[name] = counts.get(name, 0) + 1
            if name in seen or backup.kind != "database":
                continue
            seen.add(name)
            finished = parse_iso(backup.manifest.get("finished")) or backup.time
            last_success.add_metric([name], finished.timestamp())
            last_duration.add_metric([name], float(backup.manifest.get("duration_seconds", 0)))
            last_size.add_metric([name], float(backup.size))
        for name, count in sorted(counts.items()):
            stored.add_metric([LOCAL, name], count)
        stored_bytes.add_metric([LOCAL], float(sum(b.size for b in backups)))
        replicated = GaugeMetricFamily("backupd_replication_last_success_timestamp_seconds",
                                       "Finish time of the newest replication run that succeeded", labels=["target"])
        for url, run in sorted(read_runs(self.repo).items()):
            if run.get("last_success"):
                replicated.add_metric([url], parse_iso(run["last_success"]).timestamp())
            for name, count in sorted((run.get("stored") or {}).items()):
                stored.add_metric([url, name], count)
            if run.get("confirmed", True):
                stored_bytes.add_metric([url], float(run.get("stored_bytes", 0)))
        yield replicated
        volume_success = GaugeMetricFamily("backupd_volume_backup_last_success_timestamp_seconds",
                                           "Finish time of the newest archive of the volume", labels=["volume"])
        volumes_seen: set[str] = set()
        for backup in backups:
            if backup.kind == "volume" and backup.database not in volumes_seen:
                volumes_seen.add(backup.database)
                finished = parse_iso(backup.manifest.get("finished")) or backup.time
                volume_success.add_metric([backup.database], finished.timestamp())
        yield from (last_success, last_duration, last_size, stored, stored_bytes, verified, volume_success)
        free = free_ratio(self.repo)
        if free is not None:
            yield GaugeMetricFamily("backupd_disk_free_ratio", "Free space in BACKUP_DIR, 0 to 1", value=free)
        if self.settings is not None:
            limit = max_age(self.settings, utc_now()).total_seconds()
            yield GaugeMetricFamily("backupd_health_max_age_seconds",
                                    "HEALTH_MAX_AGE: a newest backup older than this is unhealthy", value=limit)


class PitrCollector:
    """The WAL stream and the recovery window, read at scrape time."""

    def __init__(self, settings, receiver_state):
        self.settings = settings
        self.receiver_state = receiver_state

    def describe(self):
        return []

    def collect(self):
        from backupd.pitr.store import Store

        stores = Store.all(self.settings.backup_dir)
        state = self.receiver_state() or {}
        if state.get("lag_bytes") is not None:
            yield GaugeMetricFamily("backupd_pitr_lag_bytes", "The server's current WAL position minus the "
                                    "newest received", value=state["lag_bytes"])
        if not stores:
            return
        store = stores[0]
        if (received := store.newest_received_time()) is not None:
            yield GaugeMetricFamily("backupd_pitr_last_received_timestamp_seconds",
                                    "When WAL last reached BACKUP_DIR", value=received.timestamp())
        if (window := store.window()) is not None:
            yield GaugeMetricFamily("backupd_pitr_window_start_timestamp_seconds", "The earliest restorable moment",
                                    value=window.start.timestamp())
        if bases := store.bases():
            yield GaugeMetricFamily("backupd_pitr_base_last_success_timestamp_seconds",
                                    "When the newest base backup ended", value=bases[0].stop_time.timestamp())
        drill = store.last_drill() or {}
        if success := parse_iso(drill.get("last_success")):
            yield GaugeMetricFamily("backupd_pitr_verify_last_success_timestamp_seconds",
                                    "When the last PITR drill succeeded", value=success.timestamp())


class Metrics:
    def __init__(self, repo: Repository, settings=None):
        self.registry = CollectorRegistry()
        self.repository = RepositoryCollector(repo, settings)
        self.registry.register(self.repository)
        self.backups_total = Counter("backupd_backups", "Backups attempted by this process",
                                     ["database", "result"], registry=self.registry)
        self.verify_total = Counter("backupd_verify", "Verifications run by this process",
                                    ["database", "result"], registry=self.registry)
        self.retention_deleted_total = Counter("backupd_retention_deleted", "Backups deleted by retention",
                                               ["target"], registry=self.registry)
        self.replication_total = Counter("backupd_replication", "Replication runs by this process",
                                         ["target", "result"], registry=self.registry)
        self.job_running = Gauge("backupd_job_running", "1 while the job runs", ["job"], registry=self.registry)
        self.next_run = Gauge("backupd_next_run_timestamp_seconds", "When the job runs next", ["job"],
                              registry=self.registry)
        build = Gauge("backupd_build_info", "backupd's version", ["version"], registry=self.registry)
        build.labels(__version__).set(1)

    def add_pitr(self, receiver_state) -> None:
        self.registry.register(PitrCollector(self.repository.settings, receiver_state))

    def render(self) -> bytes:
        return generate_latest(self.registry)
