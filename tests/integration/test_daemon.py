"""``backupd run``: schedules, tells the truth on /healthz, /metrics and /status, stops cleanly."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backupd.actions.backup import run_backup
from backupd.settings import load_settings
from tests.conftest import log_lines
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import descendants, leftovers, make_database, table_locked, wait_for_child
from tests.pg import free_port


@pytest.fixture(scope="module")
def daemon_db(cluster):
    make_database(cluster, "daemon_db", rows=500)
    return "daemon_db"


def metric_samples(text: str) -> dict[str, list]:
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def test_backup_on_start_then_health_metrics_status_and_a_clean_stop(env, daemon_db):
    daemon = RunningDaemon(env, DB_NAME=daemon_db, BACKUP_ON_START="true")
    try:
        newest = daemon.wait_until(lambda: daemon.newest_backup(daemon_db), what="the first backup")
        assert newest["id"].startswith(f"{daemon_db}-")
        status, health = daemon.json("/healthz")
        assert (status, health) == (200, {"status": "ok", "warnings": []})
        status, body = daemon.json("/status")
        assert body["jobs"]["backup"]["schedule"] == "0 2 * * *"
        assert body["jobs"]["backup"]["next_run"].endswith("T02:00:00Z")
        # Which PostgreSQL client tools the server gets (Debian's 15 for the session's server).
        (database_server,) = body["postgresql"]["servers"]
        assert database_server["role"] == "database" and database_server["tools"]["major"] == 15
        assert 15 in [tools["major"] for tools in body["postgresql"]["installed"]]
        status, text = daemon.get("/metrics")
        samples = metric_samples(text)
        for name in ("backupd_backup_last_success_timestamp_seconds", "backupd_backup_last_duration_seconds",
                     "backupd_backup_last_size_bytes", "backupd_backups_total", "backupd_stored_backups",
                     "backupd_stored_bytes", "backupd_job_running", "backupd_next_run_timestamp_seconds",
                     "backupd_build_info"):
            assert name in samples, name
        (success,) = [s for s in samples["backupd_backups_total"] if s.labels["database"] == daemon_db]
        assert success.labels["result"] == "success" and success.value == 1
        (last,) = samples["backupd_backup_last_success_timestamp_seconds"]
        assert abs(last.value - time.time()) < 120
        assert not [n for n in samples if n.endswith("_created")]
    finally:
        assert daemon.stop() == 0
    events = log_lines(daemon.stderr)  # every line of docker logs is JSON
    assert {"backupd is running", "job finished", "stopped"} <= {e["event"] for e in events}


def test_metrics_reflect_backups_made_with_the_cli(env, backupd, daemon_db):
    daemon = RunningDaemon(env, DB_NAME=daemon_db)
    try:
        backupd.ok("backup")
        time.sleep(5.5)  # the repository is read again after the short cache expires
        status, text = daemon.get("/metrics")
        stored = {s.labels["database"]: s.value for s in metric_samples(text)["backupd_stored_backups"]}
        assert stored[daemon_db] == 1
    finally:
        daemon.stop()


def test_sigterm_in_the_middle_of_a_backup_exits_cleanly_and_leaves_nothing(cluster, env, backupd, backup_dir, daemon_db):
    with table_locked(cluster, daemon_db):
        daemon = RunningDaemon(env, DB_NAME=daemon_db, BACKUP_ON_START="true", SHUTDOWN_GRACE="1s",
                               BACKUP_GLOBALS="false")
        dump = wait_for_child(daemon.proc, "pg_dump")
        started = time.monotonic()
        assert daemon.stop(timeout=30) == 0
        assert time.monotonic() - started < 15
        assert dump not in descendants(daemon.proc.pid)
    assert backupd.listing() == []
    assert leftovers(backup_dir) == []
    assert "aborting" in daemon.stderr
    # An abort at shutdown is not the database's failure: a new daemon is healthy.
    again = RunningDaemon(env, DB_NAME=daemon_db)
    try:
        assert again.json("/healthz")[0] == 200
    finally:
        again.stop()


def test_a_fresh_daemon_with_an_empty_repository_is_healthy(env, daemon_db):
    daemon = RunningDaemon(env, DB_NAME=daemon_db)
    try:
        assert daemon.json("/healthz") == (200, {"status": "ok", "warnings": []})
    finally:
        daemon.stop()


def test_healthz_is_unhealthy_when_the_newest_backup_is_too_old(env, backupd, daemon_db):
    backupd.ok("backup", extra_env={"DB_NAME": daemon_db})
    daemon = RunningDaemon(env, DB_NAME=daemon_db, HEALTH_MAX_AGE="2s")
    try:
        time.sleep(2.5)
        status, body = daemon.json("/healthz")
        assert status == 503
        assert any("old" in reason and daemon_db in reason for reason in body["reasons"])
        check = backupd("health", extra_env={"HTTP_PORT": str(daemon.port), "HTTP_HOST": "127.0.0.1"})
        assert check.returncode == 1 and '"unhealthy"' in check.stdout
    finally:
        daemon.stop()


def test_healthz_is_unhealthy_after_a_failed_run_and_recovers_after_a_good_one(env, backupd, daemon_db):
    daemon = RunningDaemon(env, DB_NAME=daemon_db, BACKUP_ON_START="true", DB_PORT=str(free_port()),
                           DB_WAIT_TIMEOUT="1s")
    try:
        status, body = daemon.wait_until(lambda: (r := daemon.json("/healthz"))[0] == 503 and r,
                                         what="unhealthy after the failed run")
        assert any("failed" in reason for reason in body["reasons"])
        failures = [s for s in metric_samples(daemon.get("/metrics")[1])["backupd_backups_total"]
                    if s.labels["result"] == "failure"]
        assert failures and failures[0].value == 1
        backupd.ok("backup", extra_env={"DB_NAME": daemon_db})  # the server is back: a CLI backup succeeds
        assert daemon.json("/healthz") == (200, {"status": "ok", "warnings": []})
    finally:
        daemon.stop()


def test_the_auth_token_guards_metrics_and_status_but_not_healthz(env, daemon_db):
    daemon = RunningDaemon(env, DB_NAME=daemon_db, HTTP_AUTH_TOKEN="s3cr3t-token")
    try:
        assert daemon.get("/metrics")[0] == 401
        assert daemon.get("/status")[0] == 401
        assert daemon.get("/metrics", token="wrong")[0] == 401
        assert daemon.get("/metrics", token="s3cr3t-token")[0] == 200
        status, body = daemon.get("/status", token="s3cr3t-token")
        assert status == 200 and "s3cr3t-token" not in body
        assert daemon.get("/healthz")[0] == 200
    finally:
        daemon.stop()


def test_health_command_reports_a_daemon_that_is_not_running(backupd):
    result = backupd("health", extra_env={"HTTP_PORT": str(free_port())})
    assert result.returncode == 1
    assert "does not answer" in result.stdout


def test_a_scheduled_backup_that_exists_already_is_skipped(env, backupd, daemon_db):
    settings = load_settings({**env, "DB_NAME": daemon_db, "BACKUP_GLOBALS": "false"})
    scheduled = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)
    first = run_backup(settings, scheduled_for=scheduled)
    second = run_backup(settings, scheduled_for=scheduled)
    assert first.outcomes[0].backup_id and not first.outcomes[0].skipped
    assert second.outcomes[0].skipped and "exists" in second.outcomes[0].skipped
    assert len(backupd.listing()) == 1


@pytest.mark.slow
def test_two_daemons_on_one_server_run_each_scheduled_backup_once(cluster, env, tmp_path, daemon_db):
    """Separate repositories, so only the advisory lock on the server keeps them apart."""
    from tests.conftest import Backupd

    # Start shortly before a minute boundary, so the every-minute schedule fires once soon.
    while datetime.now().second < 40 or datetime.now().second > 50:
        time.sleep(0.5)
    dirs = [tmp_path / "one", tmp_path / "two"]
    with table_locked(cluster, daemon_db):  # holds the winner's dump past the loser's start
        daemons = [RunningDaemon({**env, "BACKUP_DIR": str(d)}, DB_NAME=daemon_db, BACKUP_SCHEDULE="* * * * *",
                                 BACKUP_GLOBALS="false") for d in dirs]
        daemons[0].wait_until(lambda: any(d.json("/status")[1]["jobs"]["backup"]["running"] for d in daemons),
                              timeout=40, what="the scheduled run")
        time.sleep(3)  # both daemons have fired by now; one holds the advisory lock
    try:
        for daemon in daemons:
            daemon.wait_until(lambda: not daemon.json("/status")[1]["jobs"]["backup"]["running"], what="the run to end")
    finally:
        for daemon in daemons:
            daemon.stop()
    listings = [Backupd({**env, "BACKUP_DIR": str(d)}).listing() for d in dirs]
    assert sorted(len(listing) for listing in listings) == [0, 1]
    assert any("another backupd is backing up this database" in d.stderr for d in daemons)
