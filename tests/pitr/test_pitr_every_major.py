"""Against a real server of every major from 14 to 18, with encryption on: the daemon
streams WAL and takes a base backup with the server's own tools, the drill recovers it,
and the data directory that ``pitr restore`` builds is started by that major's postgres
and holds every committed row."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.integration.daemon_helpers import RunningDaemon
from tests.pg import MAJORS, matrix_bindir
from tests.pitr.helpers import age_keys, commit, make_shop, wait_for_window, write_wal


@pytest.mark.parametrize("pitr_cluster", MAJORS, indirect=True, ids=lambda major: f"pg{major}")
def test_stream_base_drill_and_restore(pitr_cluster, pitr_env, pitr_backupd, backup_dir, data_home, tmp_path,
                                       recovered):
    major = int(pitr_cluster.bindir.parent.name)
    identity, recipient = age_keys(tmp_path)
    env = {**pitr_env, "BACKUP_ENCRYPTION_RECIPIENTS": recipient, "BACKUP_ENCRYPTION_IDENTITY": identity}
    make_shop(pitr_cluster)
    daemon = RunningDaemon(env)
    try:
        wait_for_window(daemon)
        commit(pitr_cluster, 1, 2, 3)
        write_wal(pitr_cluster, 20)  # completes a segment or two: archived, encrypted
        last = commit(pitr_cluster, 4)
        wait_for_window(daemon, last)
        assert daemon.get("/healthz")[0] == 200
    finally:
        assert daemon.stop() == 0, daemon.stderr

    (cluster_folder,) = (backup_dir / "_pitr").iterdir()
    (base,) = (cluster_folder / "base").glob("base-*.tar.zst.age")
    assert base.with_name(base.name.split(".")[0] + ".backup_manifest").exists()
    archived = [p for p in (cluster_folder / "wal").iterdir() if not p.name.endswith(".json")]
    assert archived and all(p.name.endswith(".zst.age") for p in archived), archived
    # Each beside its record, read by that major's pg_waldump before encryption.
    records = [json.loads(p.with_name(p.name.removesuffix(".zst.age") + ".json").read_text()) for p in archived]
    assert any(r["last_commit"] for r in records), records

    drill = pitr_backupd.ok("pitr", "verify", extra_env=env)
    assert "ok in" in drill.stdout

    target = data_home / "restored"
    pitr_backupd.ok("pitr", "restore", "--time", "latest", "--to", str(target), extra_env=env)
    server = recovered(matrix_bindir(major), target)
    server.wait_promoted(pitr_cluster)
    with server.as_cluster(pitr_cluster).connect("shop") as conn:
        assert [n for (n,) in conn.execute("SELECT n FROM orders ORDER BY n")] == [1, 2, 3, 4]
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith(str(major))
    assert datetime.now(UTC) > last
