"""Off the machine: with encryption on, base backups and WAL reach an S3 target confirmed
by checksum, retention there keeps the window, and with BACKUP_DIR gone a restore to a
moment between two commits comes from the target alone."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, datetime

from tests.integration.daemon_helpers import RunningDaemon
from tests.pitr.helpers import age_keys, commit, make_shop, pitr_view, rows, wait_for_window


def test_restore_between_two_commits_from_s3_with_the_local_copy_deleted(pitr_cluster, pitr_env, pitr_backupd, s3,
                                                                        backup_dir, tmp_path, data_home, recovered):
    bucket = f"pitr-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    identity, recipient = age_keys(tmp_path)
    env = {**pitr_env, **s3.env(bucket), "BACKUP_ENCRYPTION_RECIPIENTS": recipient,
           "BACKUP_ENCRYPTION_IDENTITY": identity, "REPLICATION_INTERVAL": "5s"}
    make_shop(pitr_cluster)
    daemon = RunningDaemon(env)
    try:
        wait_for_window(daemon)
        commit(pitr_cluster, 1, 2)
        time.sleep(1.1)
        between = datetime.now(UTC)
        time.sleep(1.1)
        commit(pitr_cluster, 3)
        with pitr_cluster.connect() as admin:
            admin.execute("SELECT pg_switch_wal()")  # the segment completes: archived, then sent
        wait_for_window(daemon, datetime.now(UTC))
        keys = daemon.wait_until(lambda: _wal_keys(s3, bucket) or None, 60, "WAL on the target")
        assert all(key.endswith(".zst.age") for key in keys if not key.endswith(".json")), keys
        assert pitr_view(daemon)["window"]
    finally:
        assert daemon.stop() == 0, daemon.stderr
    # Everything that is not on the target yet goes now; then the machine loses BACKUP_DIR.
    result = pitr_backupd.ok("replicate", extra_env=env)
    assert "ok" in result.stdout, result.stdout
    # Each WAL file is encrypted; beside it is its record (what it proves: positions and times, no data).
    keys = _wal_keys(s3, bucket)
    assert {key.removesuffix(".json") for key in keys if key.endswith(".json")} == \
        {key.removesuffix(".zst.age") for key in keys if not key.endswith(".json")}, keys
    shutil.rmtree(backup_dir)

    target = data_home / "from-s3"
    pitr_backupd.ok("pitr", "restore", "--time", between.isoformat(), "--to", str(target), extra_env=env)
    server = recovered(pitr_cluster.bindir, target)
    server.wait_promoted(pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2]


def _wal_keys(s3, bucket: str) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return [o["Key"] for o in listing if "/wal/" in o["Key"]]
