from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import shutil

import pytest

from tests.dockerd import ensure_engine
from tests.pg import Cluster, remove_cluster, start_cluster
from tests.servers import start_s3, start_sshd

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def docker_engine():
    """A running Docker engine for the whole session, as on a user's host with the socket
    mounted: every restore that swaps and every volume run talks to it. Without it, a socket
    file left behind by an engine that is gone makes those runs fail (rightly) at random."""
    ensure_engine()


@pytest.fixture(scope="session")
def cluster():
    cluster = start_cluster()
    yield cluster
    remove_cluster(cluster)


@pytest.fixture(scope="module")
def s3():
    """A real S3 API server (SeaweedFS) on 127.0.0.1, one per test module."""
    server = start_s3()
    yield server
    server.stop()
    shutil.rmtree(server.data, ignore_errors=True)


@pytest.fixture(scope="module")
def sshd():
    """A real sshd with rsync on 127.0.0.1, one per test module."""
    server = start_sshd()
    yield server
    server.stop()
    shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
def backup_dir(tmp_path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def env(cluster: Cluster, backup_dir: Path) -> dict[str, str]:
    """A complete environment for one backupd process against the session's cluster."""
    return {**cluster.env(), "BACKUP_DIR": str(backup_dir), "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "5s"}


def libfaketime() -> str:
    """The preload library itself, not the ``faketime`` wrapper: the wrapper creates a semaphore
    named by its own pid and fails ("sem_open: File exists") when one that a killed wrapper
    left behind carries the same pid."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    assert found, "libfaketime is installed by scripts/bootstrap (package faketime)"
    return str(found[0])


class Backupd:
    """Runs ``python -m backupd`` as a user would, with exactly the given environment."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "backupd", *args]

    def __call__(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300,
                 input: str | None = None) -> subprocess.CompletedProcess:
        return self.run_argv(self.argv(*args), extra_env=extra_env, timeout=timeout, input=input)

    def run_argv(self, argv: list[str], extra_env: dict[str, str] | None = None, timeout: float = 300,
                 input: str | None = None) -> subprocess.CompletedProcess:
        """Any command line with this environment."""
        full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                **self.env, **(extra_env or {})}
        return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=timeout, cwd=REPO, input=input)

    def at(self, clock: str, *args: str, extra_env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
        """``backupd args`` with its clock faked by libfaketime: ``clock`` is a moment it starts
        at ("2026-01-01 02:00:00", the clock then runs) or an offset ("-1d")."""
        faked = {"LD_PRELOAD": libfaketime(), "FAKETIME": clock if clock[0] in "+-" else f"@{clock}",
                 **(extra_env or {})}
        result = self.run_argv(self.argv(*args), extra_env=faked)
        if check:
            assert result.returncode == 0, \
                f"backupd {' '.join(args)} at {clock} exited {result.returncode}:\n{result.stderr}"
        return result

    def ok(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        result = self(*args, **kwargs)
        assert result.returncode == 0, f"backupd {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result

    def listing(self, *args: str) -> list[dict]:
        return json.loads(self.ok("list", "--json", *args).stdout)

    def listing_with(self, extra_env: dict[str, str], *args: str) -> list[dict]:
        return json.loads(self.ok("list", "--json", *args, extra_env=extra_env).stdout)


@pytest.fixture
def backupd(env) -> Backupd:
    return Backupd(env)


def log_lines(stderr: str) -> list[dict]:
    """Every stderr line must be a JSON object (docker logs)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]
