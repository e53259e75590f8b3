"""The PITR verification (``backupd pitr verify``; the docs call what it runs the PITR
drill): the newest base backup and all the WAL received are recovered in a scratch data
directory by a temporary server on a Unix socket (no TCP), which must reach the newest WAL
position the receiver had flushed, and promote. Then everything goes. The base backup's
full sha256 and every WAL file are checked on the way: a damaged newest base backup fails
the drill (a restore would fall back to an older one; the drill says why)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from backupd import failures
from backupd.errors import BackupdError, RefusedError, RestoreError
from backupd.logging import get_logger
from backupd.pitr import cluster, wal
from backupd.pitr.restore import build_data_directory
from backupd.pitr.scratch_server import postgres_binary, server_user, stop, wait_for_promotion
from backupd.pitr.store import Base, Store
from backupd.postgres import Server
from backupd.process import dies_with_parent
from backupd.repository import iso, utc_now

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("pitr")

DRILL_PREFIX = ".backupd-pitr-drill-"


def verify_cluster(settings: Settings, store: Store) -> dict[str, Any]:
    """Recover ``store``'s cluster, check, clean up; the result is recorded (its verify.json,
    its failure file)."""
    started, clock = utc_now(), time.monotonic()
    result: dict[str, Any] = {"time": iso(started), "ok": False}
    try:
        bases = store.bases()
        if bases and bases[0].path.name.endswith(".age") and not settings.identity:
            # As for dumps: a sidecar without the identity cannot drill; a warning, not a failure.
            result.update(ok=None, reason="the base backups are encrypted and BACKUP_ENCRYPTION_IDENTITY is not "
                                          "set here: the drill needs it")
            return result
        result.update(_verify(settings, store))
        result["ok"] = True
        failures.clear(settings.backup_dir, failures.pitr("verify", store.system_identifier))
    except (BackupdError, OSError) as err:
        reason = str(err) if isinstance(err, BackupdError) else f"{err.filename or ''}: {err.strerror or err}"
        result["reason"] = reason
        failures.record(settings.backup_dir, failures.pitr("verify", store.system_identifier), reason, utc_now())
        raise
    finally:
        result["seconds"] = round(time.monotonic() - clock, 1)
        try:
            store.record_verify(result)
        except OSError as err:
            log.error("could not record the PITR drill", error=str(err))
        log.info("PITR drill finished", **result)
    return result


def _verify(settings: Settings, store: Store) -> dict[str, Any]:
    # Everything but the replay counts for the base rate, the cleaning up too: on a test
    # cluster the drill's whole duration is closest to a restore run as a command.
    clock = time.monotonic()
    parent = _scratch_parent(store)
    for stale in parent.glob(f"{DRILL_PREFIX}{store.system_identifier}-*"):  # a drill killed before it cleaned up
        shutil.rmtree(stale, ignore_errors=True)
    expected = _flushed_position(settings, store.system_identifier)
    scratch = parent / f"{DRILL_PREFIX}{store.system_identifier}-{os.getpid()}"
    scratch.mkdir(mode=0o700)
    try:
        built = build_data_directory(settings, None, scratch / "data", yes=False, store=store, strict=True)
        postgres = postgres_binary(settings.pg_bindir, built.major)
        replay_clock = time.monotonic()
        replayed = _recover(postgres, scratch, settings.db_user, settings.backup_timeout)
        replay_seconds = time.monotonic() - replay_clock
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if expected is not None and replayed < expected:
        raise RestoreError(f"the recovered server stopped at {wal.format_lsn(replayed)}, before the newest WAL the "
                           f"receiver had flushed ({wal.format_lsn(expected)}): WAL is missing")
    return {"base": built.base.id, "replayed_to": wal.format_lsn(replayed),
            "expected": wal.format_lsn(expected) if expected is not None else None, "wal_files": built.wal_files,
            **_rates(built.base, replayed, time.monotonic() - clock - replay_seconds, replay_seconds)}


def _rates(base: Base, replayed: int, build_seconds: float, replay_seconds: float) -> dict[str, float]:
    """What a restore's estimate is made of (pitr/estimate.py): the base backup's stored
    bytes per second of the drill's work other than the replay (asking the server, checking,
    extracting, copying the WAL, cleaning up), and WAL positions per second of the server's
    recovery (start to promotion and stop), from the base backup's start to where it stopped."""
    wal_bytes = max(replayed - wal.parse_lsn(base.doc.start_lsn), 0)
    return {"base_bytes_per_second": round(max(base.doc.size, 1) / max(build_seconds, 0.001), 1),
            "wal_bytes_per_second": round(wal_bytes / max(replay_seconds, 0.001), 1)}


def _scratch_parent(store: Store) -> Path:
    """Beside the archive, on its disk; but as root, the server runs as another user, who
    cannot enter BACKUP_DIR's private folders: then in TMPDIR."""
    return store.root if os.geteuid() != 0 else Path(tempfile.gettempdir())


def _flushed_position(settings: Settings, system_identifier: str) -> int | None:
    """What the receiver had flushed when the drill began (the slot's position); None when
    the server cannot be asked, or is another cluster (its slot says nothing of this one's
    WAL): the drill then checks that recovery ends and promotes."""
    try:
        with Server.from_settings(settings).connect() as conn:
            if cluster.cluster_info(conn).system_identifier != system_identifier:
                return None
            found = cluster.slot(conn, settings.pitr_slot)
    except (psycopg.Error, RefusedError):
        return None
    return found.restart_lsn if found else None


def _recover(postgres: Path, scratch: Path, user: str, timeout: float) -> int:
    """Start the server on the scratch data directory, wait for its promotion; returns the
    last WAL position it replayed."""
    # The socket's path must stay under 108 bytes: a short folder of its own in /tmp.
    data, hba = scratch / "data", scratch / "hba.conf"
    socket_dir = Path(tempfile.mkdtemp(prefix="backupd-", dir="/tmp"))
    hba.write_text("local all all trust\n")  # the socket's folder is private to the server's user
    uid, gid = server_user(data)
    for path in (scratch, socket_dir, hba):
        if os.geteuid() == 0:
            os.chown(path, uid, gid)
    argv = [str(postgres), "-D", str(data), "-c", "listen_addresses=", "-c", f"unix_socket_directories={socket_dir}",
            "-c", "port=5432", "-c", f"hba_file={hba}", "-c", "hot_standby=off", "-c", "archive_mode=off",
            "-c", "shared_preload_libraries=", "-c", "ssl=off", "-c", "logging_collector=off",
            "-c", "cluster_name=backupd-drill"]
    log_path = scratch / "server.log"
    with open(log_path, "wb") as server_log:
        root = os.geteuid() == 0  # then the server runs as the data directory's owner
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC"}
        server = subprocess.Popen(dies_with_parent(argv), stdin=subprocess.DEVNULL, stdout=server_log,
                                  stderr=server_log, env=env, process_group=0, user=uid if root else None,
                                  group=gid if root else None, extra_groups=[] if root else None)
    try:
        return wait_for_promotion(server, socket_dir, user, timeout, log_path)
    finally:
        stop(server)
        shutil.rmtree(socket_dir, ignore_errors=True)
