"""The WAL stream: pg_receivewal as a supervised child of the daemon, through the
replication slot, started again with backoff whenever it ends; completed segments are
archived as they come, and the server is asked every few seconds how far behind it is.

A slot that is missing (dropped, or never made) or lost (``max_slot_wal_keep_size``) means
WAL the archive will never get: that is a gap. The partial segment is kept, the gap is
recorded so no recovery window spans it, a new slot is made, and ``on_gap`` asks for a
new base backup at once."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from backupd import failures
from backupd.errors import BackupdError
from backupd.logging import get_logger
from backupd.pitr import cluster, diverged, wal, waldump, walrecords
from backupd.pitr.records import LiveProof
from backupd.pitr.store import Store
from backupd.pitr.wal_archiving import archive_completed, archive_partial, remove_stale_temporaries
from backupd.postgres import Server
from backupd.process import Child, spawn
from backupd.repository import iso, utc_now
from backupd.transforms import Transform

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("pitr")

WINDOW_CHECK_SECONDS = 60.0  # how often the stream checks that a base backup recovers to it
PROBE_SECONDS = 5.0  # how often the server is asked for its position and the slot's
MAX_BACKOFF = 60.0
STEADY_SECONDS = 60.0  # a child that ran this long was healthy: the backoff starts again from 1 s
BACKFILL_PER_TURN = 2  # archived files without a record, read each second: the stream comes first


class Receiver:
    def __init__(self, settings: Settings, on_gap: Callable[[str], None] = lambda reason: None) -> None:
        self.settings = settings
        self.server = Server.from_settings(settings)
        self.transform = Transform(settings)
        self.on_gap = on_gap
        self.stopping = threading.Event()
        self.child: Child | None = None
        self.store: Store | None = None  # the cluster last streamed from: the daemon's cluster
        self._cluster_now: str | None = None  # the cluster of this attempt, once the server said
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._probe_conn: psycopg.Connection | None = None
        self._samples: deque[tuple[float, int]] = deque()  # (monotonic time, server's LSN)
        self.streaming_since: datetime | None = None
        self.down_since: datetime | None = utc_now()
        self._down_clock = time.monotonic()  # how long it is down: a wall clock may jump back
        self.restarts = 0
        self.error: str | None = None
        self.archive_error: str | None = None
        self.lag_bytes: int | None = None
        self.lag_seconds: float | None = None
        self.slot_state: dict[str, Any] | None = None
        self.application_name = f"backupd_receiver_{os.getpid()}"
        self._attached = False  # the slot is held by our own pg_receivewal's walsender
        self._lock_fd: int | None = None
        self.waldump: Path | None = None  # of the server's major: what each WAL file proves
        self._live_seen: tuple[str, int] | None = None  # the partial segment last proven, and its mtime
        self._proven_at = 0.0
        self._live: LiveProof | None = None
        self._backfilled = False  # every archived file without a record was tried
        self._caught_up: datetime | None = None  # when the server was last at a position already received
        self._unreadable: set[str] = set()  # archived files without a record that cannot be read here

    # Lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="pitr-receiver", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self.stopping.set()
        self._stop_child()
        if self._thread:
            self._thread.join(timeout)

    def wait_streaming(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.streaming_since is None and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.5)
        return self.streaming_since is not None

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"streaming": self.streaming_since is not None, "streaming_since": iso(self.streaming_since),
                    "down_since": iso(self.down_since), "restarts": self.restarts, "error": self.error,
                    "down_seconds": (round(time.monotonic() - self._down_clock, 1)
                                     if self.down_since is not None else None),
                    "archive_error": self.archive_error, "lag_bytes": self.lag_bytes,
                    "lag_seconds": self.lag_seconds, "slot": self.slot_state,
                    "system_identifier": self.store.system_identifier if self.store else None}

    # The loop ---------------------------------------------------------------------------
    def _supervise(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            started, self._cluster_now = time.monotonic(), None
            try:
                self._stream()
            except (BackupdError, psycopg.Error, OSError) as err:
                self._set(error=_one_line(err))
            except Exception as err:  # a bug must not end the stream for good
                log.exception("the WAL receiver crashed")
                self._set(error=f"{type(err).__name__}: {err}")
            finally:
                self._release()
            with self._lock:
                if self.streaming_since is not None or self.down_since is None:
                    self.down_since, self._down_clock = utc_now(), time.monotonic()
                self.streaming_since = None
            if self.stopping.is_set():
                break
            if self.error:
                failures.record(self.settings.backup_dir, failures.pitr("receiver", self._cluster_now), self.error,
                                utc_now())
            backoff = 1.0 if time.monotonic() - started > STEADY_SECONDS else min(backoff * 2, MAX_BACKOFF)
            log.warning("the WAL receiver stopped; starting it again", error=self.error, retry_in=backoff)
            self.restarts += 1
            deadline = time.monotonic() + backoff
            while not self.stopping.is_set() and time.monotonic() < deadline:
                self._probe()  # the lag goes on growing while the stream is down: show it
                self.stopping.wait(1.0)
        self._close_probe()

    def _stream(self) -> None:
        store, tools = self._prepare()
        self.store = store
        self.waldump = waldump.tool(self.settings.pg_bindir, tools.major)
        argv = [tools.path("pg_receivewal"), "--directory", str(store.spool), "--slot", self.settings.pitr_slot,
                "--synchronous", "--no-loop", "--no-password"]
        # Its own application name: the probe tells our walsender from another process's.
        env = {**self.server.libpq_env(), "PGAPPNAME": self.application_name}
        self.child = spawn("pg_receivewal", argv, env=env, secrets=self.server.secrets, stdout=subprocess.DEVNULL)
        log.info("WAL receiver started", slot=self.settings.pitr_slot, folder=str(store.spool))
        checked = time.monotonic()
        try:
            while self.child.popen.poll() is None and not self.stopping.is_set():
                self._archive(store)
                self._probe()
                self._prove(store)
                if self.streaming_since is None and self._attached:
                    with self._lock:
                        self.streaming_since, self.down_since, self.error = utc_now(), None, None
                    failures.clear(self.settings.backup_dir, failures.pitr("receiver", store.system_identifier))
                    log.info("WAL stream is running")
                if time.monotonic() - checked > WINDOW_CHECK_SECONDS:
                    checked, self._backfilled = time.monotonic(), False
                    if store.window() is None:  # a segment went missing, or the base backup failed
                        self.on_gap("no base backup recovers to the newest WAL")
                    elif "base" in failures.of_cluster(self.settings.backup_dir, store.system_identifier):
                        self.on_gap("the last base backup failed")
                self.stopping.wait(1.0)
        finally:
            self._stop_child()
            self._archive(store)
        if not self.stopping.is_set():
            raise BackupdError(f"pg_receivewal ended: {self.child.describe_failure()}")

    def _hold(self, store: Store) -> None:
        """One receiver per cluster and BACKUP_DIR: only it archives, and cleans up after an
        archiving that was killed. A second daemon on the same folder waits its turn."""
        if self._lock_fd is not None:
            return
        fd = os.open(store.root / ".receiver.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BackupdError("another backupd receives this cluster's WAL into the same BACKUP_DIR") from None
        self._lock_fd = fd
        remove_stale_temporaries(store)

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _prepare(self) -> tuple[Store, Any]:
        """Know the cluster, and make sure the slot holds its WAL (a gap when it did not)."""
        with self.server.wait_connect() as conn:
            info = cluster.cluster_info(conn)
            self._cluster_now = info.system_identifier
            tools = cluster.pitr_tools(self.settings.pg_bindir, info.major)
            store = Store(self.settings.backup_dir, info.system_identifier)
            store.ensure()
            self._hold(store)
            store.remember_cluster(info.segment_size, info.major)
            _remove_unpadded_segment(store)
            found = cluster.slot(conn, self.settings.pitr_slot)
            if found is not None and found.lost:
                if found.active_pid is not None:  # a walsender that can send nothing more
                    conn.execute("SELECT pg_terminate_backend(%s)", (found.active_pid,))
                    time.sleep(1)
                cluster.drop_slot(conn, self.settings.pitr_slot)
                self._gap(store, f"the replication slot {self.settings.pitr_slot!r} was invalidated "
                                 f"(max_slot_wal_keep_size): the server removed WAL it had not sent")
                found = None
            elif (behind := diverged.rolled_back(store, info.timeline, cluster.current_lsn(conn))) is not None:
                self._gap(store, f"the server is at {wal.format_lsn(behind)}, behind WAL already received: "
                                 "it was put back to an older copy")
                diverged.set_aside(store, info.timeline, behind)  # the server writes those names again
            if found is None:
                if store.received() or store.archived():
                    self._gap(store, f"the replication slot {self.settings.pitr_slot!r} was missing "
                                     "(dropped, or the server was restored or replaced)")
                cluster.create_slot(conn, self.settings.pitr_slot)
                log.info("replication slot created", slot=self.settings.pitr_slot)
        return store, tools

    def _gap(self, store: Store, reason: str) -> None:
        log.error("the WAL stream has a gap; a new base backup follows", reason=reason)
        archive_partial(store, self.transform, self.waldump)
        store.record_gap(reason, utc_now())
        self.on_gap(reason)

    def _archive(self, store: Store) -> None:
        try:
            archive_completed(store, self.transform, self.waldump)
        except (BackupdError, OSError) as err:
            if self.archive_error is None:
                log.error("archiving received WAL failed; it stays in the receiver's folder", error=_one_line(err))
            self._set(archive_error=_one_line(err))
            return
        if self.archive_error:
            log.info("archiving received WAL works again")
        self._set(archive_error=None)

    def _prove(self, store: Store) -> None:
        """What the segment being written proves (read again when it changed, at most every
        few seconds); and, a few at a time, records for archived files that have none."""
        partials = sorted(n for n in store.received() if wal.PARTIAL.fullmatch(n))
        try:
            seen = (partials[-1], (store.spool / partials[-1]).stat().st_mtime_ns) if partials else None
            again = seen != self._live_seen and time.monotonic() - self._proven_at >= PROBE_SECONDS
            self._live = walrecords.prove_live(store, self.waldump, self._live, self._caught_up, again)
            if again:
                self._live_seen, self._proven_at = seen, time.monotonic()
            if not self._backfilled:  # archives made here come with their records: a pass now and then
                self._backfilled = not walrecords.backfill(store, self.waldump, self.settings.identity,
                                                           BACKFILL_PER_TURN, self._unreadable)
        except (BackupdError, OSError, ValueError) as err:
            log.warning("could not read what received WAL proves", error=_one_line(err))

    # How far behind ------------------------------------------------------------------
    def _probe(self) -> None:
        now = time.monotonic()
        if self._samples and now - self._samples[-1][0] < PROBE_SECONDS:
            return
        asked = utc_now()
        try:
            if self._probe_conn is None or self._probe_conn.closed:
                self._probe_conn = self.server.connect()
            position = cluster.current_lsn(self._probe_conn)
            found = cluster.slot(self._probe_conn, self.settings.pitr_slot)
            walsenders = {pid for (pid,) in self._probe_conn.execute(
                "SELECT pid FROM pg_stat_replication WHERE application_name = %s", (self.application_name,))}
        except psycopg.Error as err:
            self._close_probe()
            log.warning("could not ask the server how far the WAL stream is behind", error=_one_line(err))
            return
        self._attached = bool(found and found.active_pid and found.active_pid in walsenders)
        self._samples.append((now, position))
        horizon = max(self.settings.pitr_max_lag * 2, 60.0)
        while self._samples and now - self._samples[0][0] > horizon:
            self._samples.popleft()
        flushed = found.restart_lsn if found else None
        if self._attached and flushed is not None and flushed >= position:
            self._caught_up = asked  # all the server had written then is in BACKUP_DIR
        behind = [t for t, lsn in self._samples if flushed is None or lsn > flushed]
        with self._lock:
            self.lag_bytes = max(position - flushed, 0) if flushed is not None else None
            # The age of the oldest WAL the server had written that has not reached BACKUP_DIR.
            self.lag_seconds = round(now - behind[0], 1) if behind else 0.0
            self.slot_state = ({"name": found.name, "wal_status": found.wal_status, "active_pid": found.active_pid}
                               if found else {"name": self.settings.pitr_slot, "wal_status": "missing"})

    # Helpers ---------------------------------------------------------------------------
    def _stop_child(self) -> None:
        child = self.child
        if child is None or child.popen.poll() is not None:
            return
        try:
            child.popen.send_signal(signal.SIGINT)  # pg_receivewal flushes and ends cleanly
            child.popen.wait(10)
        except (subprocess.TimeoutExpired, OSError):
            child.kill()
            child.popen.wait()

    def _close_probe(self) -> None:
        if self._probe_conn is not None:
            try:
                self._probe_conn.close()
            except psycopg.Error:
                pass
        self._probe_conn = None

    def _set(self, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)


def _remove_unpadded_segment(store: Store) -> None:
    """pg_receivewal fills a new segment file with zeros before it writes into it; when that
    fails (a full disk) the file is left shorter, and every later start refuses it ("has N
    bytes, should be 0 or 16777216"). Such a file holds nothing received: it goes."""
    for name, path in store.received().items():
        if wal.PARTIAL.fullmatch(name) and path.stat().st_size not in (0, store.segment_size):
            log.warning("removing a WAL segment file whose preallocation failed; it holds no WAL", file=name)
            path.unlink()


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return " ".join(text.split()) if text else type(err).__name__
