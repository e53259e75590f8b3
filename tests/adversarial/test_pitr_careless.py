"""Point-in-time recovery against what careless hands and accidents do, on real servers: a
server put back to an older copy of its volume, clocks that jump, archives fetched back
from a target. Each test is what an operator would do, and what they must get."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.daemon_helpers import RunningDaemon
from tests.pitr.helpers import commit, make_shop, pitr_view, rows, wait_for_window

from tests.pitr.conftest import (data_home, pitr_backupd, pitr_cluster, pitr_env,  # noqa: F401 (shared fixtures)
                                 recovered)


def status_json(backupd) -> dict:
    result = backupd("pitr", "status", "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def segments_of_rows(cluster, *values: int) -> None:
    """Each value committed in a WAL segment of its own: the server's position moves on by
    whole segments."""
    for value in values:
        commit(cluster, value)
        with cluster.connect() as conn:
            conn.execute("SELECT pg_switch_wal()")


def put_back(cluster, snapshot: Path) -> None:
    """The server's volume replaced by an older copy of it, as a restored volume snapshot."""
    cluster.stop()
    shutil.rmtree(cluster.data)
    subprocess.run(["cp", "-a", str(snapshot), str(cluster.data)], check=True)
    cluster.start()


def test_a_server_put_back_to_a_volume_snapshot_is_archived_as_it_now_is(pitr_cluster, pitr_env, pitr_backupd,
                                                                         data_home, recovered, tmp_path):
    """The server goes back in time with the same identity and timeline: the WAL it writes
    again has the names of WAL already archived, and different content. What it writes now
    must reach the archive, and a restore to a moment after the put-back must give the
    server as it was then."""
    make_shop(pitr_cluster)
    daemon = RunningDaemon(pitr_env)
    try:
        wait_for_window(daemon)
        snapshot = tmp_path / "snapshot"
        pitr_cluster.stop()
        subprocess.run(["cp", "-a", str(pitr_cluster.data), str(snapshot)], check=True)
        pitr_cluster.start()
        segments_of_rows(pitr_cluster, 101, 102, 103, 104)  # a future that the snapshot undoes
        wait_for_window(daemon, commit(pitr_cluster, 105), timeout=90)
        put_back(pitr_cluster, snapshot)
        daemon.wait_until(lambda: status_json(pitr_backupd)["gaps"], 90, "the gap to be recorded")
        segments_of_rows(pitr_cluster, 1, 2, 3, 4, 5, 6)
        sixth = datetime.now(UTC)
        time.sleep(1.1)
        last = commit(pitr_cluster, 7)
        with pitr_cluster.connect() as conn:
            conn.execute("SELECT pg_switch_wal()")
        daemon.wait_until(lambda: (w := pitr_view(daemon).get("window")) and w["end"] >= last.isoformat()[:19],
                          120, "a window over the server as it now is")
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr
    target = data_home / "restored"
    # A moment the WAL written again reaches, before the newest base backup: replayed from
    # the base taken after the put-back, through segments whose names the old history had.
    result = pitr_backupd("pitr", "restore", "--time", sixth.isoformat(), "--to", str(target))
    assert result.returncode == 0, result.stderr
    server = recovered(pitr_cluster.bindir, target)
    server.wait_promoted(pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2, 3, 4, 5, 6]
