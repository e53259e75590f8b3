"""A compose user's story, against a real cluster: PITR on, rows committed, a table dropped
by mistake; the data directory that ``pitr restore --time`` builds, started by a stock
postgres, holds exactly the rows committed before that moment."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.integration.daemon_helpers import RunningDaemon
from tests.pg import matrix_bindir


def commit_times(cluster, values: list[int]) -> list[datetime]:
    """Insert each value in its own transaction; returns the server's commit times."""
    times = []
    with cluster.connect("shop") as conn:
        for value in values:
            with conn.transaction():
                conn.execute("INSERT INTO orders (n) VALUES (%s)", (value,))
                times.append(conn.execute("SELECT clock_timestamp()").fetchone()[0])
            time.sleep(1.1)
    return times


def wait_for_window(daemon: RunningDaemon, after: datetime, timeout: float = 60) -> dict:
    def reached():
        status, body = daemon.json("/status")
        window = (body.get("pitr") or {}).get("window")
        return window if window and datetime.fromisoformat(window["end"]) >= after else None
    return daemon.wait_until(reached, timeout, "the WAL to reach BACKUP_DIR")


@pytest.mark.parametrize("pitr_cluster", [17], indirect=True)
def test_a_dropped_table_comes_back_as_of_one_second_before_the_drop(pitr_cluster, pitr_env, pitr_backupd,
                                                                    data_home, recovered):
    with pitr_cluster.connect() as admin:
        admin.execute("CREATE DATABASE shop")
    with pitr_cluster.connect("shop") as conn:
        conn.execute("CREATE TABLE orders (n int)")
    daemon = RunningDaemon(pitr_env)
    try:
        daemon.wait_until(lambda: (daemon.json("/status")[1].get("pitr") or {}).get("window"), 90,
                          "the first base backup")
        first, second = commit_times(pitr_cluster, [1, 2])
        before_drop = datetime.now(UTC)
        time.sleep(1.1)
        with pitr_cluster.connect("shop") as conn:
            conn.execute("DROP TABLE orders")
        wait_for_window(daemon, datetime.now(UTC))
        status, health = daemon.json("/healthz")
        assert status == 200, health
        # Idle now: within seconds everything the server wrote is in BACKUP_DIR.
        daemon.wait_until(lambda: (daemon.json("/status")[1]["pitr"]["receiver"] or {}).get("lag_bytes") == 0, 30,
                          "no lag")
        assert "backupd_pitr_lag_bytes 0.0" in daemon.get("/metrics")[1]
    finally:
        assert daemon.stop() == 0, daemon.stderr

    # A folder with something in it is never emptied without --yes; with it, its content is kept aside.
    target = data_home / "restored"
    target.mkdir()
    (target / "notes.txt").write_text("someone's notes")
    refused = pitr_backupd("pitr", "restore", "--time", before_drop.isoformat(), "--to", str(target))
    assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stderr
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    result = pitr_backupd.ok("pitr", "restore", "--time", before_drop.isoformat(), "--to", str(target), "--yes")
    (aside,) = data_home.glob("restored.backupd-replaced-*")
    assert (aside / "notes.txt").read_text() == "someone's notes"
    assert "recovers to" in result.stdout
    server = recovered(matrix_bindir(17), target)
    server.wait_promoted(pitr_cluster)
    with server.as_cluster(pitr_cluster).connect("shop") as conn:
        assert [n for (n,) in conn.execute("SELECT n FROM orders ORDER BY n")] == [1, 2]
