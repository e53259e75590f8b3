"""A ``postgres`` this process starts on a scratch data directory (the PITR verification's,
a single-database restore's private server): which server binary of a major, as which user,
waiting until it has recovered and promoted, and stopping it."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import psycopg

from backupd.errors import RefusedError, RestoreError
from backupd.pgtools import installed
from backupd.pitr import wal

STOP_SECONDS = 60.0


def postgres_binary(pg_bindir: Path, major: int) -> Path:
    for tools in installed(pg_bindir):
        if tools.major == major and (tools.bindir / "postgres").exists():
            return tools.bindir / "postgres"
    raise RefusedError(f"recovering needs the PostgreSQL {major} server (postgres) under PG_BINDIR={pg_bindir}: "
                       f"install postgresql-{major}")


def wait_for_promotion(server: subprocess.Popen[bytes], socket_dir: Path, user: str, timeout: float,
                        log_path: Path) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RestoreError(f"the recovering server stopped (exit {server.returncode}): {log_tail(log_path)}")
        try:
            with psycopg.connect(host=str(socket_dir), port=5432, user=user, dbname="postgres",
                                 connect_timeout=5, autocommit=True) as conn:
                row = conn.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text").fetchone()
                if row and not row[0]:
                    return wal.parse_lsn(row[1]) if row[1] else 0
        except psycopg.OperationalError as err:
            if "does not exist" in str(err):  # it has promoted, and the role or database is not there: final
                raise RestoreError(f"the recovered server cannot be used: {str(err).strip()}") from None
            # else: not accepting connections until recovery ends (hot_standby=off)
        time.sleep(0.5)
    raise RestoreError(f"the recovering server did not finish within {timeout:g}s: {log_tail(log_path)}")


def server_user(data: Path) -> tuple[int, int]:
    """The server runs as the data's owner; never as root (postgres refuses), so data that
    root owns is handed to the ``postgres`` user, or ``nobody``."""
    owner = (data / "PG_VERSION").stat()
    if owner.st_uid != 0 or os.geteuid() != 0:
        return owner.st_uid, owner.st_gid
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        account = pwd.getpwnam("nobody")
    for folder, _, files in os.walk(data):
        os.chown(folder, account.pw_uid, account.pw_gid)
        for name in files:
            os.chown(os.path.join(folder, name), account.pw_uid, account.pw_gid)
    return account.pw_uid, account.pw_gid


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    os.kill(server.pid, signal.SIGINT)  # fast shutdown
    try:
        server.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def log_tail(path: Path, size: int = 2000) -> str:
    try:
        return " ".join(path.read_bytes()[-size:].decode("utf-8", "replace").split())
    except OSError:
        return "(no server log)"
