"""The failures PITR users report, each against a real server: a receiver that stops while
the server writes, a slot the server invalidated, a server restart, a timeline switch
after a restore, two daemons on one slot, and a full disk."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.conftest import Backupd
from tests.integration.daemon_helpers import RunningDaemon
from tests.integration.helpers import descendants, small_disk
from tests.pitr.helpers import commit, make_shop, pitr_view, rows, settle, wait_for_window, write_wal


def receiver_pid(daemon: RunningDaemon) -> int:
    def find():
        for pid in descendants(daemon.proc.pid):
            try:
                if b"pg_receivewal" in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]:
                    return pid
            except OSError:
                continue
        return None
    return daemon.wait_until(find, 30, "pg_receivewal")


def health_reasons(daemon: RunningDaemon) -> tuple[int, str]:
    status, body = daemon.json("/healthz")
    return status, " ".join(body.get("reasons", []))


def restore_latest(backupd, data_home, recovered, cluster, name: str = "restored"):
    target = data_home / name
    backupd.ok("pitr", "restore", "--time", "latest", "--to", str(target))
    server = recovered(cluster.bindir, target)
    server.wait_promoted(cluster)
    return server


def test_a_stopped_receiver_turns_health_red_and_resumes_without_a_gap(pitr_cluster, pitr_env, pitr_backupd,
                                                                       data_home, recovered):
    make_shop(pitr_cluster)
    daemon = RunningDaemon(pitr_env)  # PITR_MAX_LAG=10s
    try:
        wait_for_window(daemon)
        stopped = receiver_pid(daemon)
        os.kill(stopped, signal.SIGSTOP)
        try:
            commit(pitr_cluster, 1)
            write_wal(pitr_cluster, 2)
            # The slot holds the WAL on the server; after PITR_MAX_LAG, /healthz says so.
            status, reasons = daemon.wait_until(lambda: (r := health_reasons(daemon))[0] == 503 and r, 60,
                                                "unhealthy")
            assert "has not reached BACKUP_DIR" in reasons, reasons
            assert pitr_view(daemon)["receiver"]["lag_bytes"] > 0
        finally:
            os.kill(stopped, signal.SIGCONT)
        last = commit(pitr_cluster, 2)
        wait_for_window(daemon, last)
        daemon.wait_until(lambda: health_reasons(daemon)[0] == 200, 60, "healthy again")
        metrics = daemon.get("/metrics")[1]
        assert "backupd_pitr_lag_bytes" in metrics and "backupd_pitr_window_start_timestamp_seconds" in metrics
        assert pitr_view(daemon)["gaps"] == []
    finally:
        assert daemon.stop() == 0, daemon.stderr
    server = restore_latest(pitr_backupd, data_home, recovered, pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2]


def test_an_invalidated_slot_is_a_gap_followed_by_a_new_base_backup(pitr_cluster, pitr_env, pitr_backupd, data_home,
                                                                    recovered):
    make_shop(pitr_cluster)
    daemon = RunningDaemon(pitr_env)
    try:
        first_window = wait_for_window(daemon)
        last = commit(pitr_cluster, 1)
        wait_for_window(daemon, last)
    finally:
        assert daemon.stop() == 0, daemon.stderr
    # While backupd is down the server writes on, and may drop WAL the slot still needs.
    with pitr_cluster.connect() as admin:
        admin.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        admin.execute("SELECT pg_reload_conf()")
    write_wal(pitr_cluster, 40)
    with pitr_cluster.connect() as admin:
        admin.execute("CHECKPOINT")
        assert admin.execute("SELECT wal_status FROM pg_replication_slots").fetchone()[0] == "lost"
        admin.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        admin.execute("SELECT pg_reload_conf()")
    daemon = RunningDaemon(pitr_env)
    try:
        gap = daemon.wait_until(lambda: pitr_view(daemon).get("gaps"), 60, "the gap")
        assert "invalidated" in gap[0]["reason"], gap
        # A new base backup follows at once; the window starts after the gap, never before.
        window = daemon.wait_until(lambda: (w := pitr_view(daemon).get("window")) and w["base"] != first_window["base"]
                                   and w, 90, "a window from a new base backup")
        assert window["start"] > gap[0]["time"]
        last = commit(pitr_cluster, 2)
        wait_for_window(daemon, last)
        daemon.wait_until(lambda: health_reasons(daemon)[0] == 200, 60, "healthy")
    finally:
        assert daemon.stop() == 0, daemon.stderr
    refused = pitr_backupd("pitr", "restore", "--time", first_window["end"], "--to", str(data_home / "refused"))
    assert refused.returncode == 2 and "before the recovery window" in refused.stderr, refused.stderr
    server = restore_latest(pitr_backupd, data_home, recovered, pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2]


def test_a_server_restart_mid_stream_loses_nothing(pitr_cluster, pitr_env, pitr_backupd, data_home, recovered):
    make_shop(pitr_cluster)
    daemon = RunningDaemon(pitr_env)
    try:
        wait_for_window(daemon)
        commit(pitr_cluster, 1)
        pitr_cluster.stop("immediate")
        settle(2)
        pitr_cluster.start()
        last = commit(pitr_cluster, 2)
        wait_for_window(daemon, last)
        assert pitr_view(daemon)["gaps"] == []
        assert pitr_view(daemon)["receiver"]["restarts"] >= 1
    finally:
        assert daemon.stop() == 0, daemon.stderr
    server = restore_latest(pitr_backupd, data_home, recovered, pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2]


def test_after_a_restore_the_stream_follows_the_new_timeline(pitr_cluster, pitr_env, pitr_backupd, backup_dir,
                                                             data_home, recovered):
    make_shop(pitr_cluster)
    daemon = RunningDaemon(pitr_env)
    try:
        wait_for_window(daemon)
        last = commit(pitr_cluster, 1)
        wait_for_window(daemon, last)
    finally:
        assert daemon.stop() == 0, daemon.stderr
    # The restored server replaces the old one, as in the runbook: same system, timeline 2.
    pitr_cluster.stop()
    server = restore_latest(pitr_backupd, data_home, recovered, pitr_cluster)
    promoted = server.as_cluster(pitr_cluster)
    daemon = RunningDaemon({**pitr_env, "DB_PORT": str(promoted.port)})
    try:
        wait_for_window(daemon)
        commit(promoted, 2)
        write_wal(promoted, 20)
        last = commit(promoted, 3)
        wait_for_window(daemon, last)
        view = pitr_view(daemon)
        assert any("missing" in gap["reason"] for gap in view["gaps"])  # the slot is not in a base backup
    finally:
        assert daemon.stop() == 0, daemon.stderr
    (cluster_folder,) = (backup_dir / "_pitr").iterdir()
    names = [p.name for p in (cluster_folder / "wal").iterdir()]
    assert any(n.startswith("00000002.history") for n in names), names
    assert any(n.startswith("00000002") and ".history" not in n for n in names), names
    again = restore_latest(pitr_backupd.__class__({**pitr_env, "DB_PORT": str(promoted.port)}), data_home,
                           recovered, pitr_cluster, "restored-again")
    assert rows(again.as_cluster(pitr_cluster)) == [1, 2, 3]


def test_two_daemons_one_slot_only_one_streams(pitr_cluster, pitr_env, pitr_backupd, backup_dir, tmp_path, data_home,
                                               recovered):
    make_shop(pitr_cluster)
    first = RunningDaemon(pitr_env)
    try:
        wait_for_window(first)
        second = RunningDaemon({**pitr_env, "BACKUP_DIR": str(tmp_path / "elsewhere")})
        try:
            status, reasons = second.wait_until(lambda: (r := health_reasons(second))[0] == 503 and r, 60,
                                                "the second daemon unhealthy")
            assert "WAL stream has been down" in reasons and "active" in reasons, reasons
            last = commit(pitr_cluster, 1)
            wait_for_window(first, last)
            assert health_reasons(first)[0] == 200
        finally:
            assert second.stop() == 0, second.stderr
    finally:
        assert first.stop() == 0, first.stderr
    server = restore_latest(pitr_backupd, data_home, recovered, pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1]


@pytest.fixture
def pitr_disk(tmp_path):
    with small_disk(tmp_path / "small", "96m", mode="0755") as mount:
        yield mount


def test_a_full_disk_stops_the_stream_visibly_and_it_resumes_without_a_gap(pitr_cluster, pitr_env, pitr_disk,
                                                                            data_home, recovered):
    make_shop(pitr_cluster)
    env = {**pitr_env, "BACKUP_DIR": str(pitr_disk / "backups")}
    daemon = RunningDaemon(env)
    try:
        wait_for_window(daemon)
        commit(pitr_cluster, 1)
        filler = pitr_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)  # until it is full
        write_wal(pitr_cluster, 40)
        status, reasons = daemon.wait_until(lambda: (r := health_reasons(daemon))[0] == 503 and r, 90, "unhealthy")
        assert "BACKUP_DIR" in reasons or "WAL stream" in reasons, reasons
        filler.unlink()
        last = commit(pitr_cluster, 2)
        try:
            wait_for_window(daemon, last, timeout=150)
            daemon.wait_until(lambda: health_reasons(daemon)[0] == 200, 90, "healthy again")
        except AssertionError as err:
            raise AssertionError(f"{err}: {health_reasons(daemon)}; {pitr_view(daemon)}") from None
        assert pitr_view(daemon)["gaps"] == []
    finally:
        code = daemon.stop()
        print(daemon.stderr[-6000:])
        assert code == 0
    server = restore_latest(Backupd(env), data_home, recovered, pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2]
