"""``backupd verify`` restores for real and compares; it fails loudly, and leaves no scratch database."""

from __future__ import annotations

import json
import signal
import time

import pytest
from psycopg import sql

from tests.content import AWKWARD_DB, create_awkward_database
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import flip_a_byte, make_database, start_backupd, wait_for_child
from tests.pg import remove_cluster, start_cluster


def scratch_databases(cluster) -> list[str]:
    with cluster.connect() as admin:
        return [n for (n,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'backupd_verify_%'")]


@pytest.fixture(scope="module")
def verify_db(cluster):
    make_database(cluster, "verify_db", rows=3000, payload=128)
    return "verify_db"


@pytest.mark.parametrize("fmt", ["custom", "plain", "directory"])
def test_verify_passes_on_good_backups_and_records_it(cluster, backupd, fmt):
    create_awkward_database(cluster)
    backup_id = backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB, "BACKUP_FORMAT": fmt}).stdout.splitlines()[0]
    result = backupd.ok("verify")
    assert f"{backup_id}: passed" in result.stdout
    assert "globals@" in result.stdout and result.stdout.count("passed") == 2
    (listed,) = backupd.listing()
    assert listed["verified"] == "passed"
    assert scratch_databases(cluster) == []


def test_verify_fails_on_a_flipped_byte(backupd, verify_db):
    backupd.ok("backup", extra_env={"DB_NAME": verify_db})
    (backup,) = backupd.listing()
    flip_a_byte(backup["file"])
    result = backupd("verify", "latest")
    assert result.returncode == 1
    assert "failed" in result.stdout and "does not match its manifest" in result.stdout
    assert backupd.listing()[0]["verified"] == "failed"


def test_verify_fails_on_a_truncated_file(backupd, verify_db):
    backupd.ok("backup", extra_env={"DB_NAME": verify_db})
    (backup,) = backupd.listing()
    with open(backup["file"], "r+b") as stored:
        stored.truncate(backup["size_bytes"] // 3)
    result = backupd("verify", backup["id"])
    assert result.returncode == 1 and "does not match its manifest" in result.stdout


def test_verify_fails_when_the_manifest_counts_disagree(cluster, backupd, backup_dir, verify_db):
    backupd.ok("backup", extra_env={"DB_NAME": verify_db})
    (manifest_path,) = (backup_dir / verify_db).glob("*Z.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"][0]["rows"] -= 7
    manifest_path.write_text(json.dumps(manifest))
    result = backupd("verify", "--database", verify_db)
    assert result.returncode == 1
    assert "has 3000 rows, the manifest says 2993" in result.stdout
    assert scratch_databases(cluster) == []


def test_verify_sql_must_return_true(backupd, verify_db):
    backupd.ok("backup", extra_env={"DB_NAME": verify_db})
    ok = backupd("verify", extra_env={"VERIFY_SQL": "SELECT count(*) = 3000 FROM items"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = backupd("verify", extra_env={"VERIFY_SQL": "SELECT count(*) > 5000 FROM items"})
    assert bad.returncode == 1 and "VERIFY_SQL returned False" in bad.stdout


def test_scratch_databases_never_outlive_a_verify_even_on_sigterm(cluster, env, backupd, verify_db):
    make_database(cluster, "verify_big", rows=60000, payload=512)
    backupd.ok("backup", extra_env={"DB_NAME": "verify_big"})
    proc = start_backupd(env, "verify")
    wait_for_child(proc, "pg_restore")
    assert scratch_databases(cluster)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143  # 128 + SIGTERM
    assert scratch_databases(cluster) == []


def test_a_scratch_database_left_by_a_killed_verify_is_dropped_by_the_next(cluster, env, backupd, verify_db):
    make_database(cluster, "verify_big", rows=60000, payload=512)
    backupd.ok("backup", extra_env={"DB_NAME": "verify_big"})
    proc = start_backupd(env, "verify")
    wait_for_child(proc, "pg_restore")
    proc.kill()  # SIGKILL: no cleanup possible
    proc.communicate(timeout=60)
    time.sleep(0.5)
    assert scratch_databases(cluster)
    backupd.ok("verify")
    assert scratch_databases(cluster) == []


def test_verify_runs_on_the_verify_server_when_one_is_set(cluster, backupd, verify_db):
    other = start_cluster()
    try:
        backupd.ok("backup", extra_env={"DB_NAME": verify_db})
        result = backupd("verify", extra_env={
            "VERIFY_DB_HOST": other.host, "VERIFY_DB_PORT": str(other.port), "VERIFY_DB_PASSWORD": other.password,
            "VERIFY_SQL": f"SELECT inet_server_port() = {other.port}"})
        assert result.returncode == 0, result.stdout + result.stderr
        assert other.password not in result.stdout + result.stderr
    finally:
        remove_cluster(other)


def test_a_failed_verification_makes_the_daemon_unhealthy(cluster, env, backupd, backup_dir, verify_db):
    backupd.ok("backup", extra_env={"DB_NAME": verify_db})
    (manifest_path,) = (backup_dir / verify_db).glob("*Z.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"][0]["rows"] += 1
    manifest_path.write_text(json.dumps(manifest))
    daemon = RunningDaemon(env, DB_NAME=verify_db)
    try:
        assert daemon.json("/healthz")[0] == 200
        backupd("verify")
        status, body = daemon.json("/healthz")
        assert status == 503 and any("verification" in reason for reason in body["reasons"])
        assert daemon.json("/status")[1]["databases"][verify_db]["newest_verification"]["result"] == "failed"
    finally:
        daemon.stop()


def test_a_database_with_a_63_byte_name_verifies(cluster, backupd):
    name = "v" * 63
    make_database(cluster, name, rows=50)
    try:
        backupd.ok("backup", extra_env={"DB_NAME": name})
        assert ": passed" in backupd.ok("verify").stdout
    finally:
        with cluster.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_metrics_show_the_last_successful_verification(env, backupd, verify_db):
    from tests.integration.test_daemon import metric_samples

    backupd.ok("backup", extra_env={"DB_NAME": verify_db})
    backupd.ok("verify")
    daemon = RunningDaemon(env, DB_NAME=verify_db)
    try:
        samples = metric_samples(daemon.get("/metrics")[1])
        (verified,) = [s for s in samples["backupd_verify_last_success_timestamp_seconds"]
                       if s.labels["database"] == verify_db]
        assert abs(verified.value - time.time()) < 120
    finally:
        daemon.stop()
