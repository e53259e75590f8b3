"""Incremental base backups (PostgreSQL 17 and newer, ``summarize_wal = on``), against real
servers: a full base backup, then two incrementals, each against the one before; a restore
to a moment after the second combines the chain (``pg_combinebackup``) and holds exactly
the rows committed by then. A chain whose middle member is gone is not usable: the restore
falls back to the full base backup and says why. An older server takes full ones only,
and says so once."""

from __future__ import annotations

import json
import re
import shutil
import time
from datetime import UTC, datetime

import pytest

from tests.conftest import Backupd
from tests.integration.daemon_helpers import RunningDaemon
from tests.pg import matrix_bindir
from tests.pitr.helpers import age_keys, commit, make_shop, rows, wait_for_window

# Two base backups taken in one process, as the daemon's schedule takes them: their ids.
TAKE = """
import sys
from backupd.settings import load_settings
from backupd.pitr.base import run_base_backup
settings = load_settings()
for _ in range(int(sys.argv[1])):
    print(run_base_backup(settings, "scheduled", incremental=True).id)
"""


def take_incremental(pitr_backupd, count: int = 1) -> tuple[list[str], str]:
    result = pitr_backupd.run_argv([pitr_backupd.argv()[0], "-c", TAKE, str(count)], timeout=120)
    assert result.returncode == 0, result.stderr
    ids = [line for line in result.stdout.splitlines() if re.fullmatch(r"base-\d{8}T\d{6}Z", line)]
    return ids, result.stdout + result.stderr


def manifest(backup_dir, base_id: str) -> dict:
    (path,) = (backup_dir / "_pitr").glob(f"*/base/{base_id}.json")
    return json.loads(path.read_text())


def summarize_wal(cluster) -> None:
    with cluster.connect() as conn:
        conn.execute("ALTER SYSTEM SET summarize_wal = on")
        conn.execute("SELECT pg_reload_conf()")


@pytest.mark.parametrize("pitr_cluster", (17, 18), indirect=True, ids=lambda major: f"pg{major}")
def test_chain_restores_exactly_and_a_broken_one_is_passed_over(pitr_cluster, pitr_env, backup_dir, data_home,
                                                                 recovered, tmp_path):
    major = int(pitr_cluster.bindir.parent.name)
    identity, recipient = age_keys(tmp_path)  # every member encrypted
    env = {**pitr_env, "BACKUP_ENCRYPTION_RECIPIENTS": recipient, "BACKUP_ENCRYPTION_IDENTITY": identity}
    pitr_backupd = Backupd(env)
    summarize_wal(pitr_cluster)
    make_shop(pitr_cluster)
    daemon = RunningDaemon(env, PITR_INCREMENTAL_SCHEDULE="0 0 1 1 *")  # the test takes them itself
    try:
        wait_for_window(daemon)  # the full base backup taken at start
        assert daemon.json("/status")[1]["jobs"]["pitr-incremental"]["schedule"] == "0 0 1 1 *"
        commit(pitr_cluster, 1, 2)
        (first,), _ = take_incremental(pitr_backupd)
        commit(pitr_cluster, 3, 4)
        (second,), _ = take_incremental(pitr_backupd)
        commit(pitr_cluster, 5)
        target = datetime.now(UTC)
        time.sleep(1.1)
        commit(pitr_cluster, 6)
        with pitr_cluster.connect() as admin:
            admin.execute("SELECT pg_switch_wal()")  # the segment completes: archived, then replicated
        wait_for_window(daemon, datetime.now(UTC))
    finally:
        assert daemon.stop() == 0, daemon.stderr

    assert all(path.name.endswith(".tar.zst.age") for path in (backup_dir / "_pitr").glob("*/base/*.tar*"))
    full = manifest(backup_dir, first)["parent"]
    assert full is not None and manifest(backup_dir, full)["parent"] is None
    assert manifest(backup_dir, second)["parent"] == first
    status = json.loads(pitr_backupd.ok("pitr", "status", "--json").stdout)
    assert {"full": full, "incrementals": [first, second], "complete": True} in status["chains"]
    assert f"chain: full {full}, then 2 incremental: {first}, {second}\n" in pitr_backupd.ok("pitr", "status").stdout

    restored = pitr_backupd.ok("pitr", "restore", "--time", target.isoformat(), "--to", str(data_home / "a"))
    assert f"took base backup {second}" in restored.stdout, restored.stdout
    server = recovered(matrix_bindir(major), data_home / "a")
    server.wait_promoted(pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2, 3, 4, 5]
    server.stop()
    drill = pitr_backupd.ok("pitr", "verify")  # through the chain too
    assert "ok in" in drill.stdout, drill.stdout
    (data_home / "offsite").mkdir()
    offsite = {"REPLICATION_TARGETS": (data_home / "offsite").as_uri()}
    pitr_backupd.ok("replicate", extra_env=offsite)

    # The middle incremental is deleted: the second cannot be restored without it.
    for path in (backup_dir / "_pitr").glob(f"*/base/{first}.*"):
        path.unlink()
    preview = pitr_backupd.ok("pitr", "restore", "--time", "latest", "--to", str(data_home / "b"), "--dry-run")
    assert f"skipped base backup {second}: it is incremental: base backup {first}, of its chain, is gone" \
        in preview.stdout and f"took base backup {full}" in preview.stdout, preview.stdout
    assert "is not the size" not in preview.stdout and "WAL after it is incomplete" not in preview.stdout, \
        preview.stdout
    fallback = pitr_backupd.ok("pitr", "restore", "--time", "latest", "--to", str(data_home / "b"))
    assert f"skipped base backup {second}: it is incremental: base backup {first}, of its chain, is gone" \
        in fallback.stdout, fallback.stdout
    assert f"took base backup {full}" in fallback.stdout, fallback.stdout
    drill = pitr_backupd("pitr", "verify")  # the newest chain is broken: the drill says so
    assert drill.returncode == 1 and f"base backup {first}, of its chain, is gone" in drill.stderr, drill.stderr
    server = recovered(matrix_bindir(major), data_home / "b")
    server.wait_promoted(pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2, 3, 4, 5, 6]
    server.stop()

    # BACKUP_DIR is lost: the chain comes back from the replication target, every member.
    shutil.rmtree(backup_dir)
    fetched = pitr_backupd.ok("pitr", "restore", "--time", target.isoformat(), "--to", str(data_home / "c"),
                              extra_env=offsite)
    assert f"took base backup {second}" in fetched.stdout, fetched.stdout
    server = recovered(matrix_bindir(major), data_home / "c")
    server.wait_promoted(pitr_cluster)
    assert rows(server.as_cluster(pitr_cluster)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("pitr_cluster", (16,), indirect=True, ids=lambda major: f"pg{major}")
def test_an_older_server_takes_full_base_backups_and_says_so_once(pitr_cluster, pitr_backupd, backup_dir):
    make_shop(pitr_cluster)
    ids, stderr = take_incremental(pitr_backupd, 2)
    assert len(ids) == 2 and all(manifest(backup_dir, base_id)["parent"] is None for base_id in ids)
    told = [line for line in stderr.splitlines() if "cannot take incremental base backups" in line]
    assert len(told) == 1, stderr


@pytest.mark.parametrize("pitr_cluster", (17,), indirect=True, ids=lambda major: f"pg{major}")
def test_without_summarize_wal_full_ones_until_it_is_turned_on(pitr_cluster, pitr_backupd, backup_dir):
    make_shop(pitr_cluster)
    ids, output = take_incremental(pitr_backupd, 2)
    assert len(ids) == 2 and all(manifest(backup_dir, base_id)["parent"] is None for base_id in ids)
    assert len([line for line in output.splitlines() if "summarize_wal is off" in line]) == 1, output
    # Turned on after a checkpoint that follows them: the server summarizes from there on, so
    # it cannot take one against the newest (a full one then), and the next is incremental.
    commit(pitr_cluster, 1)
    with pitr_cluster.connect() as conn:
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")
    summarize_wal(pitr_cluster)
    ids, output = take_incremental(pitr_backupd, 2)
    first, second = (manifest(backup_dir, base_id)["parent"] for base_id in ids)
    assert first is None and "taking a full one" in output, output
    assert second == ids[0], output
