"""The role docs/kubernetes.md gives the sidecar, on a real server: no superuser, only
REPLICATION, CREATEDB, pg_read_all_data and membership in the role that owns the database.
It backs up, verifies, restores into a new database and takes a base backup."""

from __future__ import annotations

import secrets

from psycopg import sql

from tests.conftest import Backupd
from tests.pg import Cluster


def _drop(cluster: Cluster, databases: list[str], roles: list[str]) -> None:
    with cluster.connect() as admin:
        for name in databases:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for name in roles:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_the_documented_role_backs_up_verifies_restores_and_streams(cluster, backup_dir):
    suffix = secrets.token_hex(4)
    app, owner, role, password = f"k8s_app_{suffix}", f"k8s_owner_{suffix}", f"backupd_{suffix}", secrets.token_hex(12)
    restored = f"{app}_check"
    try:
        with cluster.connect() as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(app), sql.Identifier(owner)))
            # As docs/kubernetes.md has it.
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN REPLICATION CREATEDB PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
            admin.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), sql.Identifier(role)))
        with cluster.connect(app) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, payload text)")
            conn.execute("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g")
        backupd = Backupd({"DB_HOST": cluster.host, "DB_PORT": str(cluster.port), "DB_USER": role,
                           "DB_PASSWORD": password, "DB_NAME": app, "BACKUP_DIR": str(backup_dir),
                           "LOG_FORMAT": "json", "DB_WAIT_TIMEOUT": "5s"})
        backupd.ok("backup", timeout=120)
        assert "passed" in backupd.ok("verify", timeout=120).stdout
        backupd.ok("restore", "latest", "--database", app, "--into", restored, timeout=120)
        with cluster.connect(restored) as conn:
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (500,)
        assert backupd.ok("pitr", "base", timeout=120).stdout.startswith("base-")
    finally:
        _drop(cluster, [restored, app], [role, owner])
