"""Class 8 (issue 22), row counts: a table's count in the manifest is its own rows.

An inheritance parent's count used to include its children's rows: wrong figures, a false
verification failure when a child's data is left out (``--exclude-table-data``), and a
backup that failed ("could not import the requested snapshot") when a foreign table whose
server is down inherits from a local table, although pg_dump itself succeeds.
"""

from __future__ import annotations

import json

import pytest
from psycopg import sql

from tests.pg import Cluster

DB = "counts_inherit"


def recreate(cluster: Cluster) -> None:
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    with cluster.connect(DB) as conn:
        conn.execute("""
            CREATE TABLE measurement (id int, note text);
            CREATE TABLE measurement_2026 () INHERITS (measurement);
            INSERT INTO measurement SELECT g, 'parent' FROM generate_series(1, 10) g;
            INSERT INTO measurement_2026 SELECT g, 'child' FROM generate_series(1, 25) g;
        """)


@pytest.fixture
def inheritance(cluster):
    recreate(cluster)
    yield
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))


def manifest_tables(backup_dir) -> dict[str, int | None]:
    (path,) = (backup_dir / DB).glob(f"{DB}-*Z.json")
    return {t["name"]: t["rows"] for t in json.loads(path.read_text())["tables"]}


def test_a_parent_counts_only_its_own_rows_and_verifies_without_its_childs_data(backupd, backup_dir, inheritance):
    backupd.ok("backup", extra_env={"DB_NAME": DB, "BACKUP_ROW_COUNTS": "exact"})
    assert manifest_tables(backup_dir) == {"measurement": 10, "measurement_2026": 25}
    for path in (backup_dir / DB).iterdir():
        path.unlink()
    backupd.ok("backup", extra_env={"DB_NAME": DB, "BACKUP_EXTRA_OPTS": "--exclude-table-data=measurement_2026"})
    assert manifest_tables(backup_dir) == {"measurement": 10}
    result = backupd("verify", "--database", DB, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "passed" in result.stdout


def test_a_foreign_child_whose_server_is_down_leaves_the_count_unknown_not_the_backup_failed(
        cluster, backupd, backup_dir, inheritance):
    with cluster.connect(DB) as conn:
        conn.execute("""
            CREATE EXTENSION postgres_fdw;
            CREATE SERVER gone FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '1', dbname 'x');
            CREATE USER MAPPING FOR CURRENT_USER SERVER gone OPTIONS (user 'nobody', password 'x');
            CREATE FOREIGN TABLE measurement_remote () INHERITS (measurement) SERVER gone;
            CREATE TABLE sensors (id int);
            CREATE TABLE sensors_remote_copy () INHERITS (sensors);
        """)
    result = backupd("backup", extra_env={"DB_NAME": DB, "BACKUP_ROW_COUNTS": "exact"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert manifest_tables(backup_dir) == {"measurement": 10, "measurement_2026": 25, "sensors": 0,
                                           "sensors_remote_copy": 0}
    verified = backupd("verify", "--database", DB, timeout=120)
    assert verified.returncode == 0, verified.stderr
