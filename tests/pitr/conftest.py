"""A cluster of its own for each PITR test (a slot, a WAL stream and a timeline are
per-cluster state), of the server major the test asks for, with backupd's PITR on."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import Backupd
from tests.pg import MATRIX, Cluster, free_port, matrix_bindir, remove_cluster, start_cluster


@pytest.fixture
def pitr_cluster(request):
    major = getattr(request, "param", 17)
    cluster = start_cluster(matrix_bindir(major))
    yield cluster
    remove_cluster(cluster)


@pytest.fixture
def pitr_env(pitr_cluster, backup_dir) -> dict[str, str]:
    return {**pitr_cluster.env(), "BACKUP_DIR": str(backup_dir), "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "5s",
            "PG_BINDIR": str(MATRIX), "PITR_ENABLED": "true", "PITR_MAX_LAG": "10s"}


@pytest.fixture
def pitr_backupd(pitr_env) -> Backupd:
    return Backupd(pitr_env)


class RecoveredServer:
    """A stock postgres started on a data directory that ``pitr restore`` built, as the
    database container would start it: its own port, as the postgres user."""

    def __init__(self, bindir: Path, data: Path):
        self.bindir, self.data, self.port = bindir, data, free_port()
        self.log = data / "backupd-test-server.log"
        subprocess.run(["chown", "-R", "postgres:postgres", str(data)], check=True)
        subprocess.run(["chmod", "0700", str(data)], check=True)
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=/tmp"
        self._pg_ctl("-l", str(self.log), "-o", options, "-w", "-t", "120", "start")

    def _pg_ctl(self, *args: str) -> None:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"pg_ctl {' '.join(args)} failed: {result.stderr}\n{log[-3000:]}")

    def as_cluster(self, model: Cluster) -> Cluster:
        return Cluster("127.0.0.1", self.port, model.user, model.password, self.data.parent, self.bindir)

    def wait_promoted(self, model: Cluster, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.as_cluster(model).connect() as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return
            time.sleep(0.3)
        raise AssertionError("the recovered server did not promote")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")


@pytest.fixture
def data_home():
    """Where restored data directories go: a folder the postgres user can enter (pytest's
    own are private to root)."""
    home = Path(tempfile.mkdtemp(prefix="backupd-pitr-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def recovered():
    started: list[RecoveredServer] = []

    def start(bindir: Path, data: Path) -> RecoveredServer:
        server = RecoveredServer(bindir, data)
        started.append(server)
        return server

    yield start
    for server in started:
        try:
            server.stop()
        except AssertionError:
            pass
