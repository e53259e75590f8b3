"""Class 4: failures show even when nothing can be written. A full disk, an unwritable or
unreadable repository: one clear line and exit 1, never a traceback, never "no backups";
the daemon keeps the failure in memory, so /healthz is 503 and the metrics count it.
An HTTP port in use stops the daemon at start with exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Backupd, log_lines
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import make_database
from tests.pg import free_port

# Root ignores file modes; without these two capabilities it is held to them like anyone.
WITHOUT_ROOT_POWERS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture(scope="module")
def shown_db(cluster):
    make_database(cluster, "shown_db", rows=200)
    return "shown_db"


@pytest.fixture
def full_disk(tmp_path, env, shown_db):
    """A repository with one backup on a tmpfs then filled to the last byte."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        backups = mount / "backups"
        Backupd({**env, "BACKUP_DIR": str(backups)}).ok("backup", "--database", shown_db)
        fill_up(mount)
        yield backups
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_up(mount: Path) -> None:
    """Write until the file system has not a block left."""
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # full to the last block
    finally:
        os.close(fd)


def _one_clear_line(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in log_lines(stderr) if line.get("level") == "error"]
    assert errors, stderr
    text = json.dumps(errors)
    for needle in needles:
        assert needle in text, stderr


def test_a_backup_on_a_full_disk_fails_in_one_clear_line(env, full_disk, shown_db):
    backupd = Backupd({**env, "BACKUP_DIR": str(full_disk)})
    before = backupd.listing()
    result = backupd("backup", "--database", shown_db)
    assert result.returncode == 1
    _one_clear_line(result.stderr, "No space left on device")
    assert backupd.listing() == before


def test_the_daemon_on_a_full_disk_is_unhealthy_and_counts_the_failure(env, full_disk, shown_db):
    daemon = RunningDaemon({**env, "BACKUP_DIR": str(full_disk)}, DB_NAME=shown_db, BACKUP_ON_START="true")
    try:
        daemon.wait_until(lambda: (daemon.json("/status")[1]["jobs"]["backup"]["last_run"] or {}).get("result"),
                          timeout=60, what="the backup on start")
        status, health = daemon.json("/healthz")
        assert status == 503, health
        assert any(shown_db in reason and "space" in reason for reason in health["reasons"]), health
        _, metrics = daemon.get("/metrics")
        assert f'backupd_backups_total{{database="{shown_db}",result="failure"}} 1.0' in metrics
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.stderr


@pytest.fixture
def locked_repository(tmp_path, env, shown_db):
    """A repository with a backup, owned by another user: ``mode`` decides what we may do."""
    backups = tmp_path / "locked"
    Backupd({**env, "BACKUP_DIR": str(backups)}).ok("backup", "--database", shown_db)
    subprocess.run(["chown", "-R", "nobody", str(backups)], check=True)
    return backups


def _as_someone_else(env: dict[str, str], backups: Path, *args: str) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ["PATH"], "HOME": "/tmp", "LANG": "C.UTF-8", **env, "BACKUP_DIR": str(backups)}
    return subprocess.run([*WITHOUT_ROOT_POWERS, sys.executable, "-m", "backupd", *args], env=full, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [["list"], ["list", "--json"], ["restore", "latest", "--into", "never_made"],
                                  ["verify"], ["verify", "latest"], ["prune"], ["backup"]])
def test_an_unreadable_repository_is_never_reported_as_empty(env, locked_repository, args):
    os.chmod(locked_repository, 0o700)
    result = _as_someone_else(env, locked_repository, *args)
    assert result.returncode == 1, result.stderr
    _one_clear_line(result.stderr, "cannot be read", str(locked_repository))
    assert result.stdout.strip() in ("", "[]") and "no backups" not in result.stderr
    assert result.stdout.strip() != "[]"


def test_an_unwritable_repository_fails_a_backup_in_one_clear_line(env, locked_repository, shown_db):
    for path in [locked_repository, *locked_repository.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    listed = _as_someone_else(env, locked_repository, "list", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1  # reading still works
    result = _as_someone_else(env, locked_repository, "backup", "--database", shown_db)
    assert result.returncode == 1
    _one_clear_line(result.stderr, "Permission denied")


def test_an_http_port_in_use_stops_the_daemon_at_start_with_exit_2(env, tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        started = time.monotonic()
        result = Backupd({**env, "BACKUP_DIR": str(tmp_path / "b")}).run_argv(
            [sys.executable, "-m", "backupd", "run"], extra_env={"HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port)},
            timeout=60)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30
    assert "Traceback" not in result.stderr
    assert "HTTP_PORT" in result.stderr and str(port) in result.stderr


def test_verify_with_an_unreadable_database_folder_fails_never_says_no_backups(env, locked_repository, shown_db):
    """BACKUP_DIR is readable, the database's folder is not: its newest backup is hidden, so
    verify fails for it (exit 1, naming the folder), never "no backups to verify" (exit 2)."""
    os.chmod(locked_repository, 0o755)
    subprocess.run(["chown", "root", str(locked_repository)], check=True)
    result = _as_someone_else(env, locked_repository, "verify")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "no backups" not in result.stderr
    folder = str(locked_repository / shown_db)
    assert f"{folder}: failed" in result.stdout and "cannot be read" in result.stdout, result.stdout


@pytest.fixture
def read_only_repository(tmp_path, env, shown_db):
    """A repository with a backup, mounted read-only (as a volume mounted :ro would be)."""
    source, mount = tmp_path / "source", tmp_path / "read-only"
    Backupd({**env, "BACKUP_DIR": str(source)}).ok("backup", "--database", shown_db)
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_verify_on_a_read_only_repository_tells_the_result_and_that_it_was_not_recorded(env, read_only_repository,
                                                                                        shown_db):
    result = Backupd({**env, "BACKUP_DIR": str(read_only_repository)})("verify", "--database", shown_db)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(f"{shown_db}-")]
    assert ": passed in " in line and "not recorded" in line and "Read-only file system" in line, result.stdout


def test_a_backup_on_a_read_only_repository_fails_in_one_clear_line(env, read_only_repository, shown_db):
    backupd = Backupd({**env, "BACKUP_DIR": str(read_only_repository)})
    result = backupd("backup", "--database", shown_db)
    assert result.returncode == 1
    _one_clear_line(result.stderr, "Read-only file system")
    assert result.stdout.strip() == ""


def test_a_failure_kept_in_memory_clears_on_the_next_success(tmp_path):
    """The daemon's memory of a failure it could not write goes like the file would: on the
    database's next success (pure logic, on a real full tmpfs)."""
    from backupd import failures
    from backupd.actions.backup import Outcome, _guarded
    from backupd.errors import StorageError
    from backupd.repository import Repository

    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        fill_up(mount)
        repo = Repository(mount / "backups")

        def no_space() -> Outcome:
            raise StorageError("cannot write the backup of 'shop': No space left on device")

        assert not _guarded(repo, "shop", "database", no_space).ok
        assert [f.error for f in failures.of_repository(repo.root) if f.job.name == "shop"] == [
            "cannot write the backup of 'shop': No space left on device"]
        (mount / "filler").unlink()
        assert _guarded(repo, "shop", "database", lambda: Outcome("shop", ok=True, backup_id="shop-x")).ok
        assert failures.of_repository(repo.root) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_list_shows_what_it_can_and_fails_on_a_folder_it_cannot_read(env, tmp_path, cluster, shown_db):
    make_database(cluster, "shown_other", rows=10)
    backups = tmp_path / "partly"
    Backupd({**env, "BACKUP_DIR": str(backups)}).ok("backup", "--database", shown_db, "--database", "shown_other")
    subprocess.run(["chown", "-R", "nobody", str(backups / "shown_other")], check=True)
    os.chmod(backups / "shown_other", 0o700)
    result = _as_someone_else(env, backups, "list", "--json")
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    assert [r["database"] for r in rows if r["status"] == "ok"] == [shown_db]
    assert [r["file"] for r in rows if r["status"] == "unreadable"] == [str(backups / "shown_other")]
    _one_clear_line(result.stderr, "cannot be read", "shown_other")
