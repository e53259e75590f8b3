"""Every moment ``pitr status`` advertises restores, and a restore takes only what its
recovery reads, against a real cluster:
- the window's very first second, after a base backup taken under write load, gives a
  directory a stock postgres recovers and promotes (not "requested recovery stop point is
  before consistent recovery point");
- a target soon after the base backup copies the few WAL segments recovery reads, not every
  newer one;
- a target between PREPARE TRANSACTION and COMMIT PREPARED is named in a note (the
  transaction stays prepared, holding its locks)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.daemon_helpers import RunningDaemon
from tests.pg import matrix_bindir
from tests.pitr.helpers import commit, make_shop, rows, wait_for_window


class Writer:
    """Commits a row every few milliseconds in a thread, until stopped."""

    def __init__(self, cluster):
        self.cluster, self.stopping = cluster, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.cluster.connect("shop") as conn:
            n = 1000
            while not self.stopping.is_set():
                conn.execute("INSERT INTO orders (n) VALUES (%s)", (n,))
                n += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


@pytest.mark.parametrize("pitr_cluster", [17], indirect=True)
def test_the_first_advertised_second_after_a_base_taken_under_load_restores(pitr_cluster, pitr_env, pitr_backupd,
                                                                           data_home, recovered):
    make_shop(pitr_cluster)
    writer = Writer(pitr_cluster)
    daemon = RunningDaemon(pitr_env)
    try:
        window = wait_for_window(daemon)
        start = datetime.fromisoformat(window["start"])
        wait_for_window(daemon, reaching=start + timedelta(seconds=2))
    finally:
        writer.stop()
        assert daemon.stop() == 0, daemon.stderr
    target = data_home / "first-second"
    result = pitr_backupd.ok("pitr", "restore", "--time", window["start"], "--to", str(target))
    assert window["base"] in result.stdout
    server = recovered(matrix_bindir(17), target)
    server.wait_promoted(pitr_cluster)
    restored = rows(server.as_cluster(pitr_cluster))
    assert restored and restored == sorted(restored)


@pytest.mark.parametrize("pitr_cluster", [17], indirect=True)
def test_a_target_soon_after_the_base_copies_only_the_segments_recovery_reads(pitr_cluster, pitr_env, pitr_backupd,
                                                                             data_home, recovered):
    make_shop(pitr_cluster)
    daemon = RunningDaemon(pitr_env)
    try:
        start = datetime.fromisoformat(wait_for_window(daemon)["start"])  # the base is consistent, to the second
        time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
        target = commit(pitr_cluster, 1)
        time.sleep(1.1)
        with pitr_cluster.connect("shop") as conn:
            for n in range(2, 14):  # twelve newer segments, each with a commit in it
                conn.execute("INSERT INTO orders (n) VALUES (%s)", (n,))
                conn.execute("SELECT pg_switch_wal()")
        last = commit(pitr_cluster, 99)
        wait_for_window(daemon, reaching=last.replace(microsecond=0))
    finally:
        assert daemon.stop() == 0, daemon.stderr
    built = data_home / "soon"
    result = pitr_backupd.ok("pitr", "restore", "--time", target.isoformat(), "--to", str(built))
    copied = [p for p in (built / "backupd_wal").iterdir() if not p.name.endswith(".history")]
    assert len(copied) <= 4, (sorted(p.name for p in copied), result.stdout)
    server = recovered(matrix_bindir(17), built)
    server.wait_promoted(pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1]


@pytest.mark.parametrize("pitr_cluster", [17], indirect=True)
def test_a_target_between_prepare_and_commit_prepared_is_named(pitr_cluster, pitr_env, pitr_backupd, data_home,
                                                               recovered):
    with pitr_cluster.connect() as admin:
        admin.execute("ALTER SYSTEM SET max_prepared_transactions = 5")
    pitr_cluster.stop("fast")
    pitr_cluster.start()
    make_shop(pitr_cluster)
    daemon = RunningDaemon(pitr_env)
    try:
        wait_for_window(daemon)
        with pitr_cluster.connect("shop") as conn:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO orders (n) VALUES (7)")
            conn.execute("PREPARE TRANSACTION 'pay order 7'")
        time.sleep(1.1)
        between = commit(pitr_cluster, 1)
        time.sleep(1.1)
        with pitr_cluster.connect("shop") as conn:
            conn.execute("COMMIT PREPARED 'pay order 7'")
        wait_for_window(daemon, reaching=commit(pitr_cluster, 2).replace(microsecond=0))
    finally:
        assert daemon.stop() == 0, daemon.stderr
    built = data_home / "between"
    result = pitr_backupd.ok("pitr", "restore", "--time", between.isoformat(), "--to", str(built))
    assert "'pay order 7'" in result.stdout and "holding their locks" in result.stdout, result.stdout
    after = pitr_backupd.ok("pitr", "restore", "--time", "latest", "--to", str(data_home / "after"))
    assert "prepared" not in after.stdout, after.stdout
    server = recovered(matrix_bindir(17), built)
    server.wait_promoted(pitr_cluster)
    with server.as_cluster(pitr_cluster).connect("shop") as conn:
        assert [g for (g,) in conn.execute("SELECT gid FROM pg_prepared_xacts")] == ["pay order 7"]
