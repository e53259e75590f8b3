"""A failed dump never looks like a backup: exit 1, nothing listed, no partial left."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.integration.helpers import leftovers, make_database, small_disk, start_backupd, table_locked, wait_for_child
from tests.pg import free_port


@pytest.fixture(scope="module")
def small_db(cluster):
    make_database(cluster, "failures_small", rows=200)
    return "failures_small"


def assert_failed_cleanly(result, backupd, backup_dir, *, message: str):
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert backupd.listing() == []
    assert leftovers(backup_dir) == []


def test_wrong_password_fails_without_a_backup(backupd, backup_dir, small_db):
    result = backupd("backup", extra_env={"DB_NAME": small_db, "DB_PASSWORD": "not-the-password"})
    assert_failed_cleanly(result, backupd, backup_dir, message="password authentication failed")
    assert "not-the-password" not in result.stderr


def test_server_down_fails_after_the_wait_timeout(backupd, backup_dir, small_db):
    started = time.monotonic()
    result = backupd("backup", extra_env={"DB_PORT": str(free_port()), "DB_WAIT_TIMEOUT": "2s"})
    assert 1.5 < time.monotonic() - started < 30
    assert_failed_cleanly(result, backupd, backup_dir, message="not reachable within 2s")


def test_missing_database_fails(backupd, backup_dir):
    result = backupd("backup", extra_env={"DB_NAME": "no_such_database"})
    assert_failed_cleanly(result, backupd, backup_dir, message="no_such_database")


def test_killed_pg_dump_fails_and_leaves_no_partial(cluster, env, backupd, backup_dir, small_db):
    with table_locked(cluster, small_db):
        proc = start_backupd({**env, "DB_NAME": small_db, "BACKUP_GLOBALS": "false"}, "backup")
        pid = wait_for_child(proc, "pg_dump")
        time.sleep(0.3)  # pg_dump is now waiting for the lock, its partial file open
        assert any(p.name.endswith(".partial") for p in backup_dir.rglob("*"))
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_failed_cleanly(result, backupd, backup_dir, message="pg_dump was killed by SIGKILL")
    assert stdout == ""


def test_lock_wait_timeout_fails_instead_of_queueing_forever(cluster, backupd, backup_dir, small_db):
    with table_locked(cluster, small_db):
        result = backupd("backup", extra_env={"DB_NAME": small_db, "BACKUP_LOCK_WAIT_TIMEOUT": "1s"}, timeout=60)
    assert_failed_cleanly(result, backupd, backup_dir, message="LOCK TABLE")


def test_backup_timeout_aborts_a_stuck_backup(cluster, backupd, backup_dir, small_db):
    started = time.monotonic()
    with table_locked(cluster, small_db):
        result = backupd("backup", extra_env={"DB_NAME": small_db, "BACKUP_TIMEOUT": "2s"}, timeout=60)
    assert time.monotonic() - started < 30
    assert_failed_cleanly(result, backupd, backup_dir, message="time limit")


def test_some_databases_failing_keeps_the_good_ones(cluster, backupd, small_db):
    with table_locked(cluster, small_db):
        result = backupd("backup", extra_env={"DB_NAME": f"postgres,{small_db}", "BACKUP_LOCK_WAIT_TIMEOUT": "1s"})
    assert result.returncode == 1
    assert [b["database"] for b in backupd.listing()] == ["postgres"]
    assert result.stdout.split() == [backupd.listing()[0]["id"]]


@pytest.fixture
def tiny_disk(tmp_path):
    with small_disk(tmp_path / "tiny", "2m") as mount:
        yield mount


def test_full_disk_fails_cleanly_and_keeps_older_backups(cluster, env, tiny_disk):
    from tests.conftest import Backupd

    make_database(cluster, "failures_big", rows=3000, payload=1024)  # ~3 MB of incompressible-ish text
    backupd = Backupd({**env, "BACKUP_DIR": str(tiny_disk / "backups"), "BACKUP_COMPRESSION": "none",
                       "BACKUP_GLOBALS": "false"})
    backupd.ok("backup", extra_env={"DB_NAME": "failures_small"})
    before = backupd.listing()
    result = backupd("backup", extra_env={"DB_NAME": "failures_big"})
    assert result.returncode == 1
    assert "No space left on device" in result.stderr
    assert backupd.listing() == before
    assert leftovers(tiny_disk / "backups") == []
