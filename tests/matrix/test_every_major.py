"""Against a real server of every major from 14 to 18, with the client tools of all five
installed side by side: backupd picks the server's own major with no version setting,
records it, and the backup restores, verifies and swaps over the live database."""

from __future__ import annotations

import json
from pathlib import Path

from tests.content import AWKWARD_DB, create_awkward_database, fingerprint
from tests.pg import MATRIX


def test_backup_restore_verify_and_swap_with_the_servers_own_tools(server, major_backupd, major_env):
    major, cluster = server
    create_awkward_database(cluster)
    at_backup = fingerprint(cluster, AWKWARD_DB)

    config = major_backupd.ok("config").stdout
    assert f"tools of {major} ({MATRIX.resolve() / str(major) / 'bin'})" in config, config
    major_backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB})
    backup = major_backupd.listing("--database", AWKWARD_DB)[0]
    manifest = json.loads(Path(backup["file"]).with_name(Path(backup["file"]).name.split(".")[0] + ".json")
                          .read_text())
    assert manifest["tools"]["major"] == major
    assert manifest["tools"]["bindir"] == str((MATRIX / str(major) / "bin").resolve())
    assert manifest["pg_dump_version"].startswith(f"pg_dump (PostgreSQL) {major}.")
    # From 16 on pg_dump compresses its archive itself (as fast, a little smaller, and seekable).
    inside = major >= 16
    assert manifest["compressed_by"] == ("pg_dump" if inside else "stream")
    assert manifest["file"].endswith(".dump" if inside else ".dump.zst")

    # A round trip into a new database holds exactly what was dumped.
    major_backupd.ok("restore", backup["id"], "--into", "copy_of_shop")
    copy = fingerprint(cluster, "copy_of_shop")
    assert copy["data"] == at_backup["data"] and copy["sequences"] == at_backup["sequences"]
    assert copy["large_objects"] == at_backup["large_objects"]
    # In parallel: a seekable archive is read in place, a compressed stream is staged first.
    major_backupd.ok("restore", backup["id"], "--into", "parallel_copy", "--jobs", "2")
    assert fingerprint(cluster, "parallel_copy")["data"] == at_backup["data"]

    # The restore drill passes.
    result = major_backupd.ok("verify", backup["id"])
    assert result.stdout.startswith(f"{backup['id']}: passed"), result.stdout

    # Over the live database, changed since: the swap brings back exactly what was dumped.
    with cluster.connect(AWKWARD_DB) as conn:
        conn.execute("CREATE TABLE written_after (id int)")
    major_backupd.ok("restore", backup["id"], "--yes")
    assert fingerprint(cluster, AWKWARD_DB) == at_backup


def test_a_directory_dump_with_jobs_is_compressed_by_the_workers_and_restores_in_parallel(server, major_backupd):
    major, cluster = server
    create_awkward_database(cluster)
    at_backup = fingerprint(cluster, AWKWARD_DB)
    extra = {"DB_NAME": AWKWARD_DB, "BACKUP_FORMAT": "directory", "BACKUP_JOBS": "2"}
    major_backupd.ok("backup", extra_env=extra)
    backup = major_backupd.listing("--database", AWKWARD_DB)[0]
    manifest = json.loads(Path(backup["file"]).with_name(Path(backup["file"]).name.split(".")[0] + ".json")
                          .read_text())
    # pg_dump writes zstd from 16 on: its workers compress, and the packed folder is not compressed again.
    inside = major >= 16
    assert manifest["compressed_by"] == ("pg_dump" if inside else "stream")
    assert manifest["file"].endswith(".dir.tar" if inside else ".dir.tar.zst")
    major_backupd.ok("restore", backup["id"], "--into", "directory_copy", "--jobs", "2")
    assert fingerprint(cluster, "directory_copy")["data"] == at_backup["data"]
    major_backupd.ok("verify", backup["id"])
