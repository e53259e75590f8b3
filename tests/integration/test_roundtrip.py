"""Back up awkward content in every format with every compression, restore it into a
new database, and require identical content."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.content import AWKWARD_DB, create_awkward_database, fingerprint

FORMATS = ["custom", "directory", "tar", "plain"]
COMPRESSIONS = ["zstd", "gzip", "bzip2", "xz", "none"]


@pytest.fixture(scope="module")
def awkward(cluster):
    create_awkward_database(cluster)
    return fingerprint(cluster, AWKWARD_DB)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_and_compression_restores_identical_content(cluster, backupd, awkward, fmt, compression):
    extra = {"BACKUP_FORMAT": fmt, "BACKUP_COMPRESSION": compression, "DB_NAME": AWKWARD_DB, "BACKUP_JOBS": "2"}
    backup_id = backupd.ok("backup", extra_env=extra).stdout.splitlines()[0]
    assert backup_id.startswith(AWKWARD_DB + "-")
    target = f"restored_{fmt}_{compression}"
    backupd.ok("restore", backup_id, "--into", target)
    try:
        assert fingerprint(cluster, target) == awkward
    finally:
        with cluster.connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{target}"')


def test_parallel_restore_of_a_compressed_custom_dump(cluster, backupd, awkward):
    backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB})
    backupd.ok("restore", "latest", "--database", AWKWARD_DB, "--into", "restored_jobs", "--jobs", "2")
    try:
        assert fingerprint(cluster, "restored_jobs") == awkward
    finally:
        with cluster.connect() as admin:
            admin.execute('DROP DATABASE IF EXISTS "restored_jobs"')


def test_manifest_row_counts_cover_exactly_the_tables_whose_data_is_dumped(cluster, backupd, backup_dir, awkward):
    backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB,
                                    "BACKUP_EXTRA_OPTS": "--exclude-table-data=measurements_2025"})
    (manifest_path,) = [p for p in backup_dir.rglob("*.json") if not p.name.endswith(".state.json")
                        and json.loads(p.read_text())["kind"] == "database"]
    tables = {(t["schema"], t["name"]): t["rows"] for t in json.loads(manifest_path.read_text())["tables"]}
    assert tables[("Sales & Co", 'Orders "quoted" ✓')] == 2000
    assert tables[("public", "measurements_2026")] == 187
    assert ("public", "measurements_2025") not in tables  # its data is excluded from the dump
    assert ("public", "measurements") not in tables  # a partitioned parent holds no rows itself
    assert ("public", "happy_orders") not in tables  # a view
    assert tables[("public", "empty_table")] == 0


def test_manual_restore_with_standard_tools(cluster, backupd, backup_dir, awkward):
    """The recipe of docs/storage-layout.md: zstd -dc X.dump.zst | pg_restore -d db."""
    backupd.ok("backup", extra_env={"DB_NAME": AWKWARD_DB, "BACKUP_GLOBALS": "false"})
    (dump,) = backup_dir.rglob("*.dump.zst")
    with cluster.connect() as admin:
        admin.execute('CREATE DATABASE "by_hand"')
    env = {"PGPASSWORD": cluster.password, "PATH": "/usr/bin:/bin"}
    subprocess.run(f"zstd -dc '{dump}' | pg_restore --exit-on-error -h {cluster.host} -p {cluster.port} "
                   f"-U {cluster.user} -d by_hand", shell=True, check=True, env=env)
    try:
        restored = fingerprint(cluster, "by_hand")
        assert restored["data"] == awkward["data"]
        assert restored["schema"] == awkward["schema"]
    finally:
        with cluster.connect() as admin:
            admin.execute('DROP DATABASE IF EXISTS "by_hand"')
