"""A private ``postgres`` on a data directory that ``pitr restore`` built in a scratch
folder: the cluster's own major, run as the data's owner, listening on a Unix socket only
(``listen_addresses=''``) in a 0700 folder inside the scratch folder, trust for that socket
alone. It recovers to the target and promotes; then it serves reads (a dump) until it is
stopped. Nothing it does reaches out: no archiving, no streaming from a primary, no logical
replication workers, no preloaded libraries, no synchronous standby to wait for. Its memory
is PostgreSQL's default, whatever the live server was given."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from backupd import cancel
from backupd.errors import RefusedError, UsageError
from backupd.logging import get_logger
from backupd.pitr.scratch_server import postgres_binary, server_user, stop, wait_for_promotion
from backupd.postgres import Server
from backupd.process import dies_with_parent

if TYPE_CHECKING:
    from backupd.settings import Settings

log = get_logger("pitr")

PORT = 5432  # on a socket of its own: no clash with any other server
SOCKET_PATH_MAX = 100  # a Unix socket's path is at most 107 bytes: ".s.PGSQL.5432" must fit


class _Killer:
    """Registered with ``cancel``: a signal stops the private server at once, so that a
    wait for its promotion ends (with an error) and the caller cleans up."""

    def __init__(self, server: subprocess.Popen[bytes]):
        self.server = server

    def abort(self, reason: str) -> None:
        if self.server.poll() is None:
            self.server.kill()


def _argv(postgres: Path, data: Path, socket_dir: Path, hba: Path) -> list[str]:
    return [str(postgres), "-D", str(data), "-c", "listen_addresses=", "-c", f"unix_socket_directories={socket_dir}",
            "-c", "unix_socket_permissions=0700", "-c", f"port={PORT}", "-c", f"hba_file={hba}",
            "-c", "hot_standby=off", "-c", "archive_mode=off", "-c", "primary_conninfo=", "-c", "primary_slot_name=",
            "-c", "shared_preload_libraries=", "-c", "session_preload_libraries=", "-c", "local_preload_libraries=",
            "-c", "max_logical_replication_workers=0", "-c", "synchronous_standby_names=", "-c", "ssl=off",
            # Beside the live server, on its machine: not the live server's memory, nor its CPU.
            "-c", "shared_buffers=128MB", "-c", "autovacuum=off",
            "-c", "logging_collector=off", "-c", "cluster_name=backupd-pitr-database"]


def server_binary(settings: Settings, major: int) -> Path:
    """That major's ``postgres``, or a refusal that says what to install."""
    try:
        return postgres_binary(settings.pg_bindir, major)
    except RefusedError:
        raise RefusedError(f"restoring one database needs the PostgreSQL {major} server (postgres) under "
                           f"PG_BINDIR={settings.pg_bindir}: install postgresql-{major}; nothing was touched") from None


@contextmanager
def serving(settings: Settings, scratch: Path, major: int) -> Iterator[Server]:
    """Start the server on ``scratch/data``, wait until it has promoted, yield where to
    connect (as the cluster's bootstrap superuser); stopped on leaving, whatever happens."""
    postgres = server_binary(settings, major)
    data, hba, socket_dir = scratch / "data", scratch / "hba.conf", scratch / "socket"
    if len(str(socket_dir / f".s.PGSQL.{PORT}")) > SOCKET_PATH_MAX:
        raise UsageError(f"the scratch folder {scratch} is too long a path for a Unix socket: set TMPDIR to a "
                         "shorter folder")
    socket_dir.mkdir(mode=0o700)
    hba.write_text("local all all trust\n")  # the socket's folder is private to the server's user
    uid, gid = server_user(data)
    if os.geteuid() == 0:
        for path in (scratch, socket_dir, hba):
            os.chown(path, uid, gid)
    log_path = scratch / "server.log"
    with open(log_path, "wb") as server_log:
        root = os.geteuid() == 0  # then the server runs as the data directory's owner
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC"}
        server = subprocess.Popen(dies_with_parent(_argv(postgres, data, socket_dir, hba)), stdin=subprocess.DEVNULL,
                                  stdout=server_log, stderr=server_log, env=env, process_group=0,
                                  user=uid if root else None, group=gid if root else None,
                                  extra_groups=[] if root else None)
    killer = _Killer(server)
    cancel.register(killer)
    try:
        if reason := cancel.requested():  # the signal came while it started
            killer.abort(reason)
        log.info("recovering the cluster in a private server", folder=str(scratch), pid=server.pid)
        wait_for_promotion(server, socket_dir, settings.db_user, settings.backup_timeout, log_path)
        yield _superuser(settings, socket_dir)
    finally:
        cancel.unregister(killer)
        stop(server)
        log.info("the private server stopped", pid=server.pid)


def _superuser(settings: Settings, socket_dir: Path) -> Server:
    """The cluster's bootstrap superuser (oid 10): whatever backupd's own role may read, a
    dump of the whole database and of the roles needs one."""
    private = Server(str(socket_dir), PORT, settings.db_user, None, "disable", 10.0)
    with private.connect() as conn:
        row = conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
    return Server(str(socket_dir), PORT, str(row[0]) if row else settings.db_user, None, "disable", 10.0)
