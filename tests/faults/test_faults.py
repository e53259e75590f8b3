"""Fault injection. Each case ends with no backup listed that is not complete and
restorable, no good backup lost, and the truth in /healthz, metrics and the logs.
Every case is bounded in time. (Two daemons on one server: tests/integration/test_daemon.py.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from backupd.health import evaluate
from backupd.repository import Repository, utc_now
from backupd.settings import load_settings
from tests.conftest import Backupd
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import cmdline, descendants, flip_a_byte, leftovers, make_database, start_backupd, table_locked, \
    wait_for_child
from tests.servers import start_s3

DB = "faults_db"


@pytest.fixture(scope="module")
def faults_db(cluster):
    make_database(cluster, DB, rows=3000, payload=256)
    return DB


def health(env: dict[str, str]):
    return evaluate(load_settings(env), Repository(Path(env["BACKUP_DIR"])), utc_now(), utc_now())


def restorable(backupd: Backupd, cluster) -> None:
    """Every listed backup verifies: complete, checksummed, restorable."""
    if backupd.listing():
        result = backupd("verify")
        assert result.returncode == 0, result.stdout + result.stderr


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_kill_9_mid_dump_leaves_nothing_listed_and_no_child_writing(cluster, env, backupd, backup_dir, faults_db):
    backupd.ok("backup", extra_env={"DB_NAME": faults_db})
    good = backupd.listing()
    with table_locked(cluster, faults_db):
        proc = start_backupd({**env, "DB_NAME": faults_db}, "backup")
        dump = wait_for_child(proc, "pg_dump")
        children = descendants(proc.pid)
        time.sleep(0.3)
        proc.kill()
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if alive(pid)], "children outlived backupd"
        assert dump in children
    assert backupd.listing() == good  # the killed run is not listed; the good one is kept
    assert leftovers(backup_dir)  # the partial is still there after a kill -9 ...
    daemon = RunningDaemon(env, DB_NAME=faults_db)  # ... and the next start removes it
    daemon.stop()
    assert leftovers(backup_dir) == []
    restorable(backupd, cluster)


def test_postgres_restarted_mid_dump_fails_truthfully_then_the_next_run_succeeds(cluster, env, backupd, faults_db):
    conn = cluster.connect(faults_db, autocommit=False)
    conn.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
    proc = start_backupd({**env, "DB_NAME": faults_db, "DB_WAIT_TIMEOUT": "2s"}, "backup")
    wait_for_child(proc, "pg_dump")
    cluster.stop("fast")
    cluster.start()
    _, stderr = proc.communicate(timeout=60)
    conn.close()
    assert proc.returncode == 1 and "backup failed" in stderr
    assert backupd.listing() == []
    state = health(env)
    assert not state.healthy and any(faults_db in reason for reason in state.reasons)
    backupd.ok("backup", extra_env={"DB_NAME": faults_db})
    assert health(env).healthy
    restorable(backupd, cluster)


def test_sigterm_during_a_restore_leaves_the_live_database_untouched(cluster, env, backupd, faults_db):
    make_database(cluster, "faults_big", rows=60000, payload=512)
    backupd.ok("backup", extra_env={"DB_NAME": "faults_big"})
    with cluster.connect("faults_big") as conn:
        conn.execute("INSERT INTO items (payload) VALUES ('after the backup')")
        (before,) = conn.execute("SELECT count(*) FROM items").fetchone()
    proc = start_backupd(env, "restore", "latest", "--database", "faults_big", "--yes")
    wait_for_child(proc, "pg_restore")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143  # 128 + SIGTERM
    with cluster.connect("faults_big") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (before,)
    with cluster.connect() as admin:
        assert not admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'faults_big__%'").fetchall()


def test_a_replication_target_that_stops_and_comes_back_gets_the_backlog_once(backupd, faults_db):
    server = start_s3()
    try:
        server.client().create_bucket(Bucket="faults")
        env = {**server.env("faults", "p"), "DB_NAME": faults_db, "BACKUP_RETENTION_DAYS": "0"}
        for _ in range(3):
            backupd.ok("backup", extra_env=env)
        server.stop()
        down = backupd("replicate", extra_env=env, timeout=180)
        assert down.returncode == 1 and "FAILED" in down.stdout
        server.start_again()
        time.sleep(1)
        assert "sent 6" in backupd.ok("replicate", extra_env=env).stdout  # 3 backups and 3 roles dumps
        assert "sent 0" in backupd.ok("replicate", extra_env=env).stdout
        keys = [o["Key"] for o in server.client().list_objects_v2(Bucket="faults")["Contents"]]
        assert len(keys) == len(set(keys)) == 12  # each file once, with its manifest
    finally:
        server.stop()


def test_a_corrupted_file_fails_verify_is_never_replicated_and_turns_health_red(cluster, backupd, env, tmp_path, faults_db):
    offsite = tmp_path / "offsite"
    offsite.mkdir()
    replication = {"REPLICATION_TARGETS": offsite.as_uri(), "DB_NAME": faults_db, "BACKUP_GLOBALS": "false"}
    backupd.ok("backup", extra_env=replication)
    (backup,) = backupd.listing()
    flip_a_byte(backup["file"])
    assert backupd("verify", extra_env=replication).returncode == 1
    assert backupd("replicate", extra_env=replication).returncode == 1
    assert not list(offsite.rglob("*.dump.zst"))
    state = health({**env, **replication})
    assert not state.healthy and any("verification" in reason for reason in state.reasons)


def test_the_clock_jumping_back_a_day_deletes_nothing_it_should_not(backupd, faults_db):
    env = {"DB_NAME": faults_db, "BACKUP_RETENTION_DAYS": "1", "BACKUP_GLOBALS": "false"}
    for _ in range(3):
        backupd.ok("backup", extra_env=env)
    made = {b["id"] for b in backupd.listing()}
    result = backupd.at("-1d", "prune", extra_env=env)
    assert result.returncode == 0
    assert {b["id"] for b in backupd.listing()} == made  # backups "from the future" are young, not old
    backupd.at("-1d", "backup", extra_env=env)
    assert made <= {b["id"] for b in backupd.listing()}


def test_a_server_out_of_connections_gets_bounded_retries_then_a_clear_failure(cluster, env, backupd, faults_db):
    with cluster.connect() as admin:
        admin.execute("DROP ROLE IF EXISTS faults_reader")
        admin.execute("CREATE ROLE faults_reader LOGIN PASSWORD 'reader-pw'")
        (limit,) = admin.execute("SELECT setting::int FROM pg_settings WHERE name = 'max_connections'").fetchone()
        (used,) = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()
    hogs = []
    try:
        for _ in range(limit - 3 - used):  # every slot but those reserved for superusers
            try:
                hogs.append(cluster.connect())
            except psycopg.OperationalError:
                break
        started = time.monotonic()
        result = backupd("backup", extra_env={"DB_NAME": faults_db, "DB_USER": "faults_reader",
                                              "DB_PASSWORD": "reader-pw", "DB_WAIT_TIMEOUT": "3s"})
        elapsed = time.monotonic() - started
        assert result.returncode == 1
        assert "not reachable within 3s" in result.stderr and "connection slots" in result.stderr
        assert 2.5 < elapsed < 60
        assert backupd.listing() == []
    finally:
        for hog in hogs:
            hog.close()
        with cluster.connect() as admin:
            admin.execute("DROP ROLE IF EXISTS faults_reader")


def test_a_hundred_databases_under_all_with_bounded_concurrency(cluster, env, backupd):
    names = [f"faults_many_{i:03d}" for i in range(100)]
    with cluster.connect() as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        proc = start_backupd({**env, "DB_NAME": ",".join(names), "BACKUP_CONCURRENCY": "4",
                              "BACKUP_GLOBALS": "false"}, "backup")
        most = 0
        while proc.poll() is None:
            dumps = [p for p in descendants(proc.pid) if "--format=custom" in cmdline(p)]
            most = max(most, len(dumps))
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        assert len(stdout.split()) == 100
        assert 1 < most <= 4
        assert {b["database"] for b in backupd.listing()} == set(names)
    finally:
        with cluster.connect() as admin:
            for name in names:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
