"""``backupd run``: the scheduler, the job wrapper, the HTTP endpoints and a clean stop.

Each job runs inside one wrapper that logs, counts and reports its result; a
failing job never stops the daemon. Adding a job is one ``add_job`` line.
On SIGTERM or SIGINT scheduling stops, a running job gets SHUTDOWN_GRACE to
finish, and is then aborted: its children are killed and its partial files
removed. The process exits 0.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from backupd import cancel, coordinator, failures, origin, pgtools, statuspage
from backupd.actions.verify import run_verify
from backupd.channels import configured as configured_channels
from backupd.errors import BackupdError, NotFoundError, UsageError
from backupd.health import evaluate
from backupd.httpserver import Endpoints, serve
from backupd.leftovers import LeftoverView
from backupd.logging import get_logger
from backupd.metrics import LOCAL, Metrics
from backupd.notify import report_changes
from backupd.pitr import clusters as pitr_clusters
from backupd.pitr.base import needs_base
from backupd.pitr.receiver import Receiver
from backupd.pitr.store import Store
from backupd.pitr.verify import verify_cluster
from backupd.repository import Repository, iso, utc_now
from backupd.schedule import previous_run, trigger
from backupd.view import Job, Live
from backupd.view import build as build_view
from backupd.view import render as render_view

if TYPE_CHECKING:
    from backupd.settings import Settings

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("backupd.daemon")

MISFIRE_GRACE = timedelta(hours=1)
PRUNE_SCHEDULE = "45 4 * * *"  # daily; retention also runs after every backup
MONITOR_SCHEDULE = "7 * * * *"  # hourly: warnings and staleness reach people without a job failing
JobFunction = Callable[[datetime | None], Any]

TOOLS_VIEW_SECONDS = 60.0
PITR_BASE_RETRY = 600.0  # seconds before a failed base backup is tried again


@dataclass
class JobState:
    name: str
    cron: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: dict[str, Any] | None = None


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.repo = Repository(settings.backup_dir)
        self.metrics = Metrics(self.repo, settings)
        self.metrics.add_health(self.live)
        self.metrics.add_instance()
        for channel in configured_channels(settings):  # each configured channel's series starts at 0
            self.metrics.notifications_failed_total.labels(channel.scheme)
        self.started_at = utc_now()
        self.stopping = threading.Event()
        self.jobs: dict[str, JobState] = {}
        self._busy = 0
        self._idle = threading.Condition()
        self._tools_view: tuple[float, dict[str, Any]] | None = None  # (monotonic time, pgtools.summary)
        self._tools_lock = threading.Lock()
        self.leftovers = LeftoverView(settings)  # side databases that interrupted restores left
        self._tools_refreshing = False
        self.scheduler = BackgroundScheduler(
            timezone=settings.backup_timezone,
            job_defaults={"max_instances": 1, "coalesce": True,
                          "misfire_grace_time": int(MISFIRE_GRACE.total_seconds())})
        self.add_job("backup", settings.backup_schedule, self._backup, run_on_start=settings.backup_on_start)
        if settings.verify_enabled:
            self.add_job("verify", settings.verify_schedule, self._verify)
        self.add_job("prune", PRUNE_SCHEDULE, self._prune)
        if settings.volume_paths:
            self.add_job("volumes", settings.volume_schedule, self._volumes)
        self.add_job("monitor", MONITOR_SCHEDULE, self._monitor)
        self.receiver: Receiver | None = None
        self.one_base = threading.Lock()  # a full and an incremental base backup due together: in turn
        if settings.pitr_enabled:
            self.receiver = Receiver(settings, on_gap=lambda reason: self.pitr_base_soon())
            self.metrics.add_pitr()
            self.add_job("pitr-base", settings.pitr_base_schedule, self._pitr_base, run_on_start=True)
            if settings.pitr_incremental_schedule:
                self.add_job("pitr-incremental", settings.pitr_incremental_schedule, self._pitr_incremental)
            if settings.verify_enabled:
                self.add_job("pitr-verify", settings.pitr_verify_cron, self._pitr_verify)
        self.replicating = coordinator.replication_follows(settings)
        if self.replicating:
            self.add_job("replicate", None, self._replicate, every=settings.replication_interval)

    # Jobs ------------------------------------------------------------------------------
    def add_job(self, name: str, cron: str | None, function: JobFunction, run_on_start: bool = False,
                every: float | None = None) -> None:
        """A job on a cron schedule, or ``every`` so many seconds."""
        state = self.jobs[name] = JobState(name, cron or f"every {every:g}s")
        when = trigger(cron, self.settings.backup_timezone) if cron else IntervalTrigger(seconds=every)
        self.scheduler.add_job(self._wrap(state, function, scheduled=bool(cron)), when, id=name, name=name)
        if run_on_start:
            self.scheduler.add_job(self._wrap(state, function, scheduled=False), id=f"{name}-on-start",
                                   name=f"{name} (on start)", next_run_time=datetime.now(UTC))

    def _wrap(self, state: JobState, function: JobFunction, scheduled: bool) -> Callable[[], None]:
        def job() -> None:
            if self.stopping.is_set():
                return
            if not state.lock.acquire(blocking=False):
                log.info("job is still running; this run is skipped", job=state.name)
                return
            started, clock = utc_now(), time.monotonic()
            scheduled_for = (previous_run(state.cron, self.settings.backup_timezone, datetime.now(UTC),
                                          MISFIRE_GRACE) if scheduled and state.cron else None)
            with self._idle:
                self._busy += 1
            self.metrics.job_running.labels(state.name).set(1)
            log.info("job started", job=state.name, scheduled_for=iso(scheduled_for))
            result, error = "success", None
            try:
                outcome = function(scheduled_for)
                if outcome is False:
                    result = "failure"
            except BackupdError as err:
                result, error = "failure", str(err)
            except Exception as err:  # a bug in one job must not stop the daemon
                log.exception("job crashed", job=state.name)
                result, error = "failure", f"{type(err).__name__}: {err}"
            finally:
                self.metrics.job_running.labels(state.name).set(0)
                state.last = {"started": iso(started), "finished": iso(utc_now()), "result": result, "error": error}
                state.lock.release()
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()
                self._publish_next_runs()
            log.info("job finished", job=state.name, result=result, error=error,
                     duration_seconds=round(time.monotonic() - clock, 3))
            self._report(state.name, result, error)
        return job

    def _report(self, job: str | None = None, result: str | None = None, error: str | None = None) -> None:
        """Tell people what changed (new problems, recoveries); never fails the job."""
        try:
            health = evaluate(self.settings, self.repo, utc_now(), self.started_at, self.scheduler_running(),
                              leftovers=self.leftovers.current())
            report_changes(self.settings, health, job if job != "monitor" else None, result, error,
                           count_failure=lambda scheme: self.metrics.notifications_failed_total.labels(scheme).inc())
        except Exception as err:
            log.error("could not send notifications", error=str(err))

    def _monitor(self, scheduled_for: datetime | None) -> bool:
        return True  # the wrapper reports after every job, this one included

    def _backup(self, scheduled_for: datetime | None) -> bool:
        try:
            result = coordinator.backup(self.settings, scheduled_for=scheduled_for,
                                        then_replicate=self.replicate_soon)
        except BackupdError:
            for name in self.settings.databases or ["all"]:
                self.metrics.backups_total.labels(name, "failure").inc()
            raise
        self.metrics.retention_deleted_total.labels(LOCAL).inc(result.pruned)
        for outcome in [*result.outcomes, *([result.globals] if result.globals else [])]:
            if not outcome.skipped:
                self.metrics.backups_total.labels(outcome.database, "success" if outcome.ok else "failure").inc()
        return result.ok

    def _volumes(self, scheduled_for: datetime | None) -> bool:
        outcomes = coordinator.volume_backup(self.settings, then_replicate=self.replicate_soon)
        return all(o.ok for o in outcomes)

    def _replicate(self, scheduled_for: datetime | None) -> bool:
        outcomes = coordinator.replicate(self.settings)
        for outcome in outcomes:
            self.metrics.replication_total.labels(outcome.url, "success" if outcome.ok else "failure").inc()
        return all(o.ok for o in outcomes)

    def replicate_soon(self) -> None:
        """After a backup: replicate now (the job's own lock keeps runs from overlapping)."""
        state = self.jobs["replicate"]
        self.scheduler.add_job(self._wrap(state, self._replicate, scheduled=False), id="replicate-after-backup",
                               name="replicate (after a backup)", next_run_time=datetime.now(UTC),
                               replace_existing=True)

    def _prune(self, scheduled_for: datetime | None) -> bool:
        pruned = coordinator.prune(self.settings)  # the same as ``backupd prune``
        self.metrics.retention_deleted_total.labels(LOCAL).inc(pruned.deleted)
        return True

    def _verify(self, scheduled_for: datetime | None) -> bool:
        try:
            outcomes = run_verify(self.settings)
        except NotFoundError:
            log.info("nothing to verify yet")
            return True
        for outcome in outcomes:
            if outcome.result != "skipped":
                self.metrics.verify_total.labels(outcome.database, outcome.result).inc()
        return not any(o.failed for o in outcomes)

    def _pitr_base(self, scheduled_for: datetime | None) -> bool:
        """On its schedule; at start and after a gap only when no base backup recovers to
        the newest WAL. The stream runs first, so the WAL from the backup's start on arrives."""
        assert self.receiver is not None
        if scheduled_for is None:
            # The server's own cluster, asked (the stream may not have begun): never another
            # cluster's base backups in the same folder.
            server = self.pitr_cluster() or pitr_clusters.connected(self.settings)
            store = Store(self.settings.backup_dir, server) if server else None
            if not needs_base(store) and "base" not in failures.of_cluster(self.settings.backup_dir, server):
                return True
        if not self.receiver.wait_streaming(self.settings.db_wait_timeout + 60):
            log.warning("taking the base backup although the WAL stream is not running yet",
                        error=self.receiver.state()["error"])
        with self.one_base:
            base = coordinator.base_backup(self.settings, "scheduled" if scheduled_for else "needed",
                                           then_replicate=self.replicate_soon)
        log.info("base backup done", id=base.id)
        return True

    def _pitr_incremental(self, scheduled_for: datetime | None) -> bool:
        """An incremental base backup against the newest one (a full one where the server cannot)."""
        with self.one_base:  # due with a full one: after it, and against it
            base = coordinator.base_backup(self.settings, "scheduled", then_replicate=self.replicate_soon,
                                           incremental=True)
        log.info("incremental base backup done", id=base.id, parent=base.doc.parent)
        return True

    def pitr_base_soon(self) -> None:
        """After a gap, or while no base backup recovers to the stream; a failed one is tried
        again after PITR_BASE_RETRY, not at every check."""
        failed = failures.of_cluster(self.settings.backup_dir, self.pitr_cluster()).get("base")
        if failed and (utc_now() - (failed.time or utc_now())).total_seconds() < PITR_BASE_RETRY:
            return
        state = self.jobs["pitr-base"]
        self.scheduler.add_job(self._wrap(state, self._pitr_base, scheduled=False), id="pitr-base-after-gap",
                               name="pitr-base (after a gap)", next_run_time=datetime.now(UTC), replace_existing=True)

    def _pitr_verify(self, scheduled_for: datetime | None) -> bool:
        """The drill of the cluster the daemon streams from (its server's, asked when the
        stream has not begun)."""
        server = self.pitr_cluster() or pitr_clusters.connected(self.settings)
        store = Store(self.settings.backup_dir, server) if server else None
        if store is None or not store.bases():
            log.info("no base backup to drill yet")
            return True
        try:
            verify_cluster(self.settings, store)
        except NotFoundError:
            log.info("no base backup to drill yet")
        return True

    def _publish_next_runs(self) -> None:
        for job in self.scheduler.get_jobs():
            if job.id in self.jobs and job.next_run_time:
                self.metrics.next_run.labels(job.id).set(job.next_run_time.timestamp())

    # Views -----------------------------------------------------------------------------
    def scheduler_running(self) -> bool:
        thread = getattr(self.scheduler, "_thread", None)
        return bool(self.scheduler.running and thread is not None and thread.is_alive())

    def health(self) -> tuple[bool, dict[str, Any]]:
        health = evaluate(self.settings, self.repo, utc_now(), self.started_at, self.scheduler_running(),
                          self.pitr_state(), self.leftovers.current())
        return health.healthy, health.to_json()

    def pitr_state(self) -> dict[str, Any] | None:
        return self.receiver.state() if self.receiver else None

    def pitr_cluster(self) -> str | None:
        """The system identifier of the cluster the WAL stream last came from."""
        return self.receiver.store.system_identifier if self.receiver and self.receiver.store else None

    def live(self) -> Live:
        """What this process knows in memory, for the view /status, / and /metrics render."""
        jobs = [Job(job.id, state.cron, getattr(job, "next_run_time", None), state.lock.locked(), state.last)
                for job in self.scheduler.get_jobs() if (state := self.jobs.get(job.id))]
        return Live(self.started_at, self.scheduler_running(), self.pitr_state(), self.leftovers.current(), jobs)

    def status(self) -> dict[str, Any]:
        return render_view.status_json(build_view(self.settings, self.repo, self.live()), self.tools_view())

    def page_view(self) -> dict[str, Any]:
        """What the status page shows, read at request time from the same view as /status."""
        return render_view.page_model(self.settings, build_view(self.settings, self.repo, self.live()))

    def tools_view(self) -> dict[str, Any]:
        """Which client tools each server gets, as last looked up. A look costs a connection
        attempt (seconds while a server is down), so it runs in the background at most once a
        minute and /status never waits for it."""
        with self._tools_lock:
            view, stale = self._tools_view, (self._tools_view is None
                                             or time.monotonic() - self._tools_view[0] > TOOLS_VIEW_SECONDS)
            if stale and not self._tools_refreshing:
                self._tools_refreshing = True
                threading.Thread(target=self._refresh_tools_view, name="tools view", daemon=True).start()
        return view[1] if view else {"installed": [], "servers": [], "pending": "being looked up"}

    def _refresh_tools_view(self) -> None:
        try:
            summary = pgtools.summary(self.settings)
        except Exception as err:  # never let a look at the tools break /status
            summary = {"installed": [], "servers": [], "error": str(err)}
        with self._tools_lock:
            self._tools_view, self._tools_refreshing = (time.monotonic(), summary), False

    # Life ------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        self.stopping.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        endpoints = Endpoints(self.health, self.status, self.metrics.render, self.settings.auth_token,
                              page=lambda: statuspage.render(self.page_view()))
        self.tools_view()  # looked up in the background from the start
        host, port = self.settings.http_host, self.settings.http_port
        try:  # first: a daemon nobody can ask about its health must not start at all
            http = serve(host, port, endpoints)
        except OSError as err:
            raise UsageError(f"HTTP_HOST={host} HTTP_PORT={port}: cannot listen there: {err.strerror or err} "
                             f"(is another backupd or program using the port?)") from None
        try:
            self.repo.clean_unfinished()
        except BackupdError as err:  # reported by /healthz and by every job until it is fixed
            log.error("the repository cannot be cleaned up", error=str(err))
        if self.receiver:
            self.receiver.start()
        self.scheduler.start()
        self._publish_next_runs()
        log.info("backupd is running", http=f"{self.settings.http_host}:{self.settings.http_port}",
                 instance=origin.this_instance_or_none(self.settings),
                 jobs={name: state.cron for name, state in self.jobs.items()},
                 next_backup=iso(self.scheduler.get_job("backup").next_run_time))
        while not self.stopping.wait(1.0):
            if not self.scheduler_running():
                log.error("the scheduler stopped; /healthz reports it")
        self.scheduler.shutdown(wait=False)
        if self.receiver:
            self.receiver.stop()
        self._finish_running_jobs()
        http.shutdown()
        log.info("stopped")
        return 0

    def _finish_running_jobs(self) -> None:
        grace = self.settings.shutdown_grace
        deadline = time.monotonic() + grace
        with self._idle:
            if self._busy:
                log.info("waiting for running jobs to finish", grace_seconds=grace)
            while self._busy and time.monotonic() < deadline:
                self._idle.wait(min(1.0, max(deadline - time.monotonic(), 0.01)))
            if not self._busy:
                return
        log.warning("running jobs did not finish within SHUTDOWN_GRACE; aborting them", grace_seconds=grace)
        cancel.abort_all("backupd is shutting down")
        with self._idle:
            # Aborted work cleans up quickly (children killed, partials removed); wait for that.
            end = time.monotonic() + 30
            while self._busy and time.monotonic() < end:
                self._idle.wait(1.0)
